"""Run records: per-loop JSON-lines logs and per-trial records, one schema for train, sweep
and SageMaker jobs; plus the provenance stamped on them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

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
        "arch": arch.key,
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


class JsonLines:
    """An append-only JSON-lines file, flushed after every record so a kill loses nothing."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def provenance(device: torch.device) -> dict:
    """Versions and revision that produced a record."""
    return {
        "psa_version": psa.__version__,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "device": device.type,
    }


def fsync_append(path: Path, record: dict) -> None:
    """Append one JSON line and fsync it: for records that must survive a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())
