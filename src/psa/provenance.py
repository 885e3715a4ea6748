"""What a command run was: captured once per run that writes into a results dir or a model dir.

``settings.json`` keeps what a rerun must match; a provenance keeps what was: the command line,
when it ran, on what machine and software, with which numerical settings, from which source.
The store writes it to ``provenance/<id>.json`` (and a dirty checkout's diff to
``provenance/<id>.diff``); trial records and loop-log lines carry only its ``id``. A resumed
sweep spans several runs: a trial record names the run that recorded it (finished the trial), and
each loop-log line the run that computed that loop.
"""

from __future__ import annotations

import hashlib
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
)


@dataclass
class Provenance:
    """One command run's provenance: ``fields`` (keys FIELDS) and a dirty checkout's diff."""

    fields: dict
    diff: str | None = field(default=None, repr=False)

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

    revision, diff = _git_state()
    run_id = new_id()
    fields = {
        "id": run_id,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
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
    }
    return Provenance({key: fields[key] for key in FIELDS}, diff)


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


def _git_state() -> tuple[str | None, str | None]:
    """The checkout's full commit and, when tracked files differ from it, ``git diff HEAD``."""
    root = _checkout_root()
    if root is None:
        return None, None
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary")
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, (diff or None)


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
