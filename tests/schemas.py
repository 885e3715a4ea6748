"""The record schemas that train, sweep and SageMaker jobs share, and builders of small records."""

import pandas as pd

LOOP_LOG_KEYS = {
    "run_id",
    "arch",
    "model",
    "mode",
    "trial",
    "loop",
    "ablation",
    "val_accuracy",
    "lkg_accuracy",
    "promoted",
    "train_seconds",
}


def trial_record(arch: str, mode: str, trial: int, bounty: float, **extra) -> dict:
    record = {
        "arch": arch,
        "model": "resmlp",
        "mode": mode,
        "trial": trial,
        "paired": True,
        "meta_loops": 3,
        "loops_run": 3,
        "val_bounty": bounty,
        "bounty_loop": 2,
        "test_accuracy": bounty - 0.5,
    }
    record.update(extra)
    return record


def loop_record(arch: str, mode: str, trial: int, loop: int, current: float, lkg: float) -> dict:
    return {
        "run_id": "run",
        "arch": arch,
        "model": "resmlp",
        "mode": mode,
        "trial": trial,
        "loop": loop,
        "ablation": None,
        "val_accuracy": current,
        "lkg_accuracy": lkg,
        "promoted": current >= lkg,
        "train_seconds": 0.1,
    }


def long_form(cells: dict, paired: bool):
    """cells: {arch: {mode: [accuracy per trial]}} -> the reporting readers' long form."""
    rows = [
        (arch, trial, mode, value, "ok")
        for arch, modes in cells.items()
        for mode, values in modes.items()
        for trial, value in enumerate(values, start=1)
    ]
    long = pd.DataFrame(rows, columns=["arch", "trial", "mode", "accuracy", "status"])
    long.attrs.update(paired=paired, archs=list(cells))
    return long
