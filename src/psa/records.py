"""The schema of the per-loop log lines of train, sweep and SageMaker jobs, and the version stamp
of trial records; the files themselves are psa.store's."""

from __future__ import annotations

import torch

import psa
from psa.ablation import AblationTarget
from psa.model import Network
from psa.revision import git_revision

# Fields of trial records and loop-log lines that differ between an interrupted-and-resumed run
# and an uninterrupted one: wall-clock seconds and the id of the command run (psa.provenance)
# that wrote them. Everything else is equal; tests compare records without these.
PER_RUN_FIELDS = frozenset({"seconds", "train_seconds", "provenance"})


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
    return {
        "psa_version": psa.__version__,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "device": device.type,
    }
