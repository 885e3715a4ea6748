"""The schema of the per-loop log lines of train, sweep and SageMaker jobs, and the provenance
stamped on trial records; the files themselves are psa.store's."""

from __future__ import annotations

import torch

import psa
from psa.ablation import AblationTarget
from psa.model import Architecture
from psa.revision import git_revision


def loop_record(
    *,
    run_id: str,
    arch: Architecture,
    mode: str,
    trial: int,
    loop: int,
    target: AblationTarget | None,
    val_accuracy: float,
    lkg_accuracy: float,
    promoted: bool,
    train_seconds: float,
) -> dict:
    return {
        "run_id": run_id,
        "arch": arch.arch.key,
        "model": arch.model,
        "mode": mode,
        "trial": trial,
        "loop": loop,
        "ablation": None if target is None else target.describe(arch),
        "val_accuracy": val_accuracy,
        "lkg_accuracy": lkg_accuracy,
        "promoted": promoted,
        "train_seconds": round(train_seconds, 4),
    }


def provenance(device: torch.device) -> dict:
    """Versions and revision that produced a record."""
    return {
        "psa_version": psa.__version__,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "device": device.type,
    }
