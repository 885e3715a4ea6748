"""What psa's result files hold, in one place: the keys every trial record and loop-log line
has, the fields that differ between a resumed and an uninterrupted run, the loop-log line and the
version stamp of a trial record, and upstream's ``Loop k/N ...`` console line (written by train,
read back from SageMaker job logs and model dirs). The files themselves are psa.store's; a run's
provenance file is psa.store.provenance's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psa
from psa.revision import git_revision

if TYPE_CHECKING:  # readers of results load neither torch nor the model
    import torch

    from psa.ablation import AblationTarget
    from psa.model import Network

# Fields of trial records and loop-log lines that differ between an interrupted-and-resumed run
# and an uninterrupted one: wall-clock seconds and the id of the command run (psa.provenance)
# that wrote them. Everything else is equal; tests compare records without these.
PER_RUN_FIELDS = frozenset({"seconds", "train_seconds", "provenance"})

# The keys without which a line is not a trial record or a loop-log line (readers refuse it).
REQUIRED_RECORD_KEYS = ("arch", "mode", "trial", "val_bounty")
REQUIRED_LOG_KEYS = ("arch", "mode", "trial", "loop", "val_accuracy", "lkg_accuracy")

_NUMBER = r"(-?\d+(?:\.\d+)?)"
# Upstream's line, tolerant of what a log collector puts around it and of spacing.
_LOOP_LINE = re.compile(
    rf"(?<![\w-])Loop\s+(\d+)\s*/\s*(\d+)\b.*?\bCurrent:\s*{_NUMBER}\s*%.*?\bLKG:\s*{_NUMBER}\s*%"
)
_TEST_LINE = re.compile(rf"Final Test Accuracy:\s*{_NUMBER}\s*%")


@dataclass(frozen=True)
class LoopLine:
    """What upstream's console line of one meta-loop says: loop ``loop`` of ``total`` in this
    session, the loop's validation accuracy and the LKG's after it (percent)."""

    loop: int
    total: int
    val_accuracy: float
    lkg_accuracy: float


def loop_line(
    index: int,
    total: int,
    global_loop: int,
    val_accuracy: float,
    lkg_accuracy: float,
    bounty_loop: int | None,
    promoted: bool,
    seconds: float,
) -> str:
    """``Loop k/N (Global: g) | Current: x% | LKG: y% | Bounty: z% @ l | verdict | s``."""
    verdict = "NEW LKG" if promoted else "no improvement"
    return (
        f"Loop {index}/{total} (Global: {global_loop}) | Current: {val_accuracy:.2f}% "
        f"| LKG: {lkg_accuracy:.2f}% | Bounty: {lkg_accuracy:.2f}% @ "
        f"{bounty_loop} | {verdict} | {seconds:.2f}s"
    )


def parse_loop_line(text: str) -> LoopLine | None:
    """The loop line in ``text`` (a line of a console or job log), or None when there is none."""
    match = _LOOP_LINE.search(text)
    if match is None:
        return None
    loop, total, current, lkg = match.groups()
    return LoopLine(int(loop), int(total), float(current), float(lkg))


def parse_test_line(text: str) -> float | None:
    """The accuracy of upstream's ``Final Test Accuracy: t%`` line in ``text``, else None."""
    match = _TEST_LINE.search(text)
    return None if match is None else float(match.group(1))


def loop_record(
    *,
    run_id: str,
    network: Network,
    mode: str,
    trial: int,
    loop: int,
    target: AblationTarget | None,
    val_accuracy: float,
    lkg_accuracy: float,
    promoted: bool,
    train_seconds: float,
    provenance: str | None,
) -> dict:
    return {
        "run_id": run_id,
        "arch": network.arch.key,
        "model": network.model,
        "mode": mode,
        "trial": trial,
        "loop": loop,
        "ablation": None if target is None else target.describe(network),
        "val_accuracy": val_accuracy,
        "lkg_accuracy": lkg_accuracy,
        "promoted": promoted,
        "train_seconds": round(train_seconds, 4),
        "provenance": provenance,
    }


def version_stamp(device: torch.device) -> dict:
    """Versions and revision that produced a record (the full story is its provenance file)."""
    import torch
    return {
        "psa_version": psa.__version__,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "device": device.type,
    }
