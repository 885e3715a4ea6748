"""Argument types and flags shared by the command lines of train, sweep, bench, the reporting
commands and the cloud runner, so each flag parses and reports errors the same way everywhere."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from psa.errors import UsageError
from psa.modes import MODES
from psa.store.results import SHIPPED_MARKER
from psa.sweep.request import Shard, parse_shard

# Bounds on counts that size what a command lists or allocates before its first step, far above
# any grid a researcher runs (the paper's: 98 architectures x 6 modes x 10 trials x 100
# meta-loops), so that a slip of the keyboard is a usage error instead of exhausted memory.
MAX_TRIALS = 1_000  # trials per mode: every trial of the grid is listed before any runs
MAX_TRIALS_TOGETHER = len(MODES) * MAX_TRIALS  # bench's K: the most a sweep's batch can hold
MAX_SHARDS = 1_000  # shards or SageMaker jobs: each is planned in advance (a dry run previews each)
MAX_TIMED_STEPS = 196  # check-device: an epoch's steps at batch 256, its images made in memory
MAX_DPI = 1_200  # a figure's pixels are allocated at once: 2,400 dpi needs gigabytes

# The device names psa.device resolves (whether this machine has one is checked there).
DEVICE_NAME = re.compile(r"auto|(cpu|cuda|mps)(:[0-9]+)?")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def bounded_int(most: int, what: str) -> Callable[[str], int]:
    """A whole number from 1 to ``most``; above it, a usage error that names the bound, ``what``
    it bounds and why."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(
                f"{value} is more than {most}, the most {what}; give at most {most}"
            )
        return value

    parse.__name__ = "bounded_int"  # argparse names the type in some messages
    return parse


trial_count = bounded_int(
    MAX_TRIALS,
    "trials per mode psa runs (every trial is listed before the first one runs, and the paper "
    "runs 10)",
)
shard_count = bounded_int(
    MAX_SHARDS,
    "shards psa splits a grid into (each is planned in advance, and SLURM's default array "
    "limit is 1,001 tasks)",
)


def existing_path(text: str) -> Path:
    """An input the command reads: one that does not exist is a usage error (exit status 2)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def device_name(text: str) -> str:
    """``--device``: a malformed name (``gpu``) is a usage error, refused before anything loads."""
    if not DEVICE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps"
        )
    return text


def mode_list(text: str) -> tuple[str, ...]:
    """``"none,full"`` -> the named modes in canonical order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mode(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(MODES)}"
        )
    return tuple(mode for mode in MODES if mode in names)


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """``--device``: any torch device string; psa.device refuses one this machine lacks.
    ``--matmul-precision``: float32 matmuls on CUDA, full fp32 unless asked."""
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        metavar="DEVICE",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
    )
    parser.add_argument(
        "--matmul-precision",
        choices=("highest", "high", "medium"),  # psa.device.MATMUL_PRECISIONS, without torch
        default="highest",
        help="float32 matmuls on CUDA: highest is full fp32 (TF32 off); high or medium allow "
        "TF32, faster and less exact; recorded in every run's provenance",
    )


def add_cuda_graph_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-cuda-graph``: launch every kernel of a training step from Python on CUDA."""
    parser.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="on CUDA, launch a training step's kernels one by one instead of replaying them "
        "from a CUDA graph captured each loop (the numbers are the same; slower)",
    )


def argparse_shard(text: str) -> Shard:
    """``--shard I/N``, N bounded as ``--shards`` is."""
    try:
        shard = parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    shard_count(str(shard.count))
    return shard




def add_shipped_flag(parser: argparse.ArgumentParser, flag: str) -> None:
    """``--add-to-shipped``: the one way to let ``flag`` write into the shipped results set."""
    parser.add_argument(
        "--add-to-shipped",
        action="store_true",
        help=f"let {flag} write into the results set shipped with psa (results/, marked by "
        f"{SHIPPED_MARKER}), as when remaking its tables and figures",
    )


def refuse_shipped(
    flag: str,
    path: Path | None,
    add_to_shipped: bool,
    *,
    file: bool = False,
    default: Path | None = None,
) -> None:
    """Every command that writes results, tables or figures writes into the results set shipped
    with psa (a folder holding SHIPPED.md) only with ``--add-to-shipped``; otherwise this
    raises a UsageError (exit 2) before anything is written. ``path`` is the folder ``flag``
    names, or with ``file`` a file written into it; ``default`` is ``flag``'s own default."""
    if path is None or add_to_shipped:
        return
    folder = path.parent if file else path
    if not (folder / SHIPPED_MARKER).is_file():
        return
    where = f"{flag} {path} is in" if file else f"{flag} {path} is"
    own = f"a {'file' if file else 'folder'} of your own" + (
        f" (the default is {default})" if default else ""
    )
    raise UsageError(
        f"{where} the results set shipped with psa ({SHIPPED_MARKER} in {folder}), which is "
        f"written into only with --add-to-shipped; give {flag} {own}, or --add-to-shipped to "
        "write into it"
    )
