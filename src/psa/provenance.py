"""What a command run was: captured once per run that writes into a results dir or a model dir.

``settings.json`` keeps what a rerun must match; a provenance keeps what was: the command line
(as it reruns), when it ran, on what machine and software (every installed distribution and its
version), with which numerical settings, from which source. The store writes it to
``provenance/<id>.json`` (and a dirty checkout's diff to ``provenance/<id>.diff``); trial records
and loop-log lines carry only its ``id``. A resumed sweep spans several runs: a trial record names
the run that recorded it (finished the trial), and each loop-log line the run that computed that
loop.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import secrets
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psa

# Every key of a provenance file; a value is None where it does not apply (no CUDA, no checkout).
FIELDS = (
    "id",
    "command",
    "cwd",
    "started",
    "ended",
    "outcome",
    "host",
    "os",
    "python",
    "psa_version",
    "torch_version",
    "numpy_version",
    "cuda_version",
    "cudnn_version",
    "device",
    "device_model",
    "torch_threads",
    "float32_matmul_precision",
    "deterministic_algorithms",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "cuda_matmul_allow_tf32",
    "cudnn_allow_tf32",
    "poetry_lock_sha256",
    "git_revision",
    "git_dirty",
    "git_diff_sha256",
    "git_diff_file",
    "git_untracked",
    "packages",
)


@dataclass(frozen=True)
class GitState:
    """A checkout's commit, ``git diff HEAD`` when tracked files differ from it (staged new files
    included), and the files under src/ that no commit holds: staged new ones, which that diff
    holds, and untracked ones, which it does not."""

    revision: str | None = None
    diff: str | None = None
    staged_new: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()

    def warning(self) -> str | None:
        """One line on the files under src/ that the commit lacks, or None when there are none."""
        parts = []
        if self.staged_new:
            parts.append(f"staged, in the saved diff: {_named(self.staged_new)}")
        if self.untracked:
            parts.append(f"untracked, not in the saved diff: {_named(self.untracked)}")
        if not parts:
            return None
        return (
            f"psa: warning: files under src/ that the commit lacks ({'; '.join(parts)}); "
            "commit them so the provenance names the source that ran"
        )


@dataclass
class Provenance:
    """One command run's provenance: ``fields`` (keys FIELDS), a dirty checkout's diff, and the
    warning to print when files under src/ are not committed."""

    fields: dict
    diff: str | None = field(default=None, repr=False)
    source_warning: str | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.fields["id"]

    def end(self, outcome: str) -> None:
        """Mark the run ended now: ``finished``, ``stopped`` (a signal) or ``failed``."""
        self.fields.update(ended=_now(), outcome=outcome)


def new_id() -> str:
    """A run id that sorts by start time and does not collide between hosts: UTC to the
    microsecond and 6 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


def capture(device=None) -> Provenance:
    """The provenance of this process's run on ``device`` (a torch.device; None for a command
    that trains nothing). Reads git and poetry.lock of a source checkout, nothing else on disk
    but the CPU's name."""
    import numpy

    git = _git_state()
    revision, diff = git.revision, git.diff
    run_id = new_id()
    fields = {
        "id": run_id,
        "command": command_line(),
        "cwd": os.getcwd(),
        "started": _now(),
        "ended": None,
        "outcome": None,
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "psa_version": psa.__version__,
        "numpy_version": numpy.__version__,
        **_torch_fields(device),
        "poetry_lock_sha256": _lock_hash(),
        "git_revision": revision,
        "git_dirty": None if revision is None else diff is not None,
        "git_diff_sha256": None if diff is None else _sha256(diff.encode()),
        "git_diff_file": None if diff is None else f"{run_id}.diff",
        "git_untracked": "\n".join(git.untracked) or None,
        "packages": installed_packages(),
    }
    return Provenance({key: fields[key] for key in FIELDS}, diff, git.warning())


def command_line() -> str:
    """This process's command line as it reruns, each argument quoted for a POSIX shell: the
    console script's name and its arguments, or under ``python -m psa`` the interpreter and its
    options as they were typed (``python -m psa train …``)."""
    if Path(sys.argv[0]).name == "__main__.py":
        typed = sys.orig_argv[: len(sys.orig_argv) - len(sys.argv) + 1]
        return shlex.join([*typed, *sys.argv[1:]])
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def installed_packages() -> str:
    """Every distribution this interpreter can import, ``name==version`` one a line (as pip
    freeze writes them, sorted by name); the first one found wins, as for an import."""
    found: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name and name.lower() not in found:
            found[name.lower()] = f"{name}=={distribution.version}"
    return "\n".join(found[key] for key in sorted(found))


def _named(paths: tuple[str, ...], shown: int = 3) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


TORCH_FIELDS = FIELDS[FIELDS.index("torch_version") : FIELDS.index("poetry_lock_sha256")]


def _torch_fields(device) -> dict:
    """torch's versions, the device and the numerical settings; None each without torch."""
    try:
        import torch
    except ImportError:  # a command that needs no torch (merge-results), where it is missing
        return dict.fromkeys(TORCH_FIELDS)
    return {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _cudnn_version(torch),
        "device": None if device is None else str(device),
        "device_model": _device_model(torch, device),
        "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checkout_root() -> Path | None:
    root = Path(psa.__file__).resolve().parents[2]
    # Only a src/ layout checkout counts: an installed copy inside some repository is not one.
    return root if (root / "pyproject.toml").is_file() else None


def _lock_hash() -> str | None:
    root = _checkout_root()
    lock = root / "poetry.lock" if root else None
    return _sha256(lock.read_bytes()) if lock and lock.is_file() else None


# Files the index adds to HEAD, named relative to the checkout (not the enclosing repository).
NEW_IN_INDEX = ("diff", "--cached", "--relative", "--name-only", "--diff-filter=A", "-z")


def _git_state() -> GitState:
    """The checkout's full commit, ``git diff HEAD`` when tracked files differ from it, and the
    new files under src/ (staged, untracked); an empty state outside a checkout or without git."""
    root = _checkout_root()
    if root is None:
        return GitState()
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary")
        staged_new = _git(root, *NEW_IN_INDEX, "HEAD", "--", "src")
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return GitState()
    return GitState(commit, diff or None, _paths(staged_new), _paths(untracked))


def _paths(listed: str) -> tuple[str, ...]:
    """The paths of a NUL-separated git listing, sorted."""
    return tuple(sorted(path for path in listed.split("\0") if path))


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout


def _cudnn_version(torch) -> int | None:
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except RuntimeError:
        return None


def device_model(device) -> str | None:
    """The name of ``device``'s hardware: the GPU's model, the CPU's, or the device type."""
    import torch

    return _device_model(torch, device)


def _device_model(torch, device) -> str | None:
    if device is None:
        return None
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_model()
    return device.type


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
