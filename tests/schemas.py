"""The record schemas that train, sweep and SageMaker jobs share, and builders of small records."""

from dataclasses import asdict

import pandas as pd

from psa.config import Hyperparameters

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
    "provenance",
}


# Every field of a sweep's trial record (psa.sweep.runner.BatchRunner._records); test_sweep checks a
# real record has exactly these.
TRIAL_RECORD_KEYS = {
    "arch",
    "model",
    "mode",
    "trial",
    "seeds",
    "paired",
    "hyperparameters",
    "meta_loops",
    "loops_run",
    "val_bounty",
    "bounty_loop",
    "test_accuracy",
    "seconds",
    "trials_in_batch",
    "psa_version",
    "git_revision",
    "torch_version",
    "device",
    "provenance",
}


def trial_record(arch: str, mode: str, trial: int, bounty: float, **extra) -> dict:
    """A whole trial record as sweep writes it (fields in ``extra`` replace or add)."""
    record = {
        "arch": arch,
        "model": "resmlp",
        "mode": mode,
        "trial": trial,
        "seeds": {"run": 1000 + trial, "init": 1, "data": 2, "ablation": 3, "base": 1234},
        "paired": True,
        "hyperparameters": asdict(Hyperparameters()),
        "meta_loops": 3,
        "loops_run": 3,
        "val_bounty": bounty,
        "bounty_loop": 2,
        "test_accuracy": bounty - 0.5,
        "seconds": 1.5,
        "trials_in_batch": 1,
        "psa_version": "0.0.0",
        "git_revision": None,
        "torch_version": "2.0.0",
        "device": "cpu",
        "provenance": None,
    }
    record.update(extra)
    return record


def loop_record(
    arch: str,
    mode: str,
    trial: int,
    loop: int,
    current: float,
    lkg: float,
    previous: float = -1.0,
) -> dict:
    """A loop log line; ``lkg`` is the LKG accuracy after the loop, ``previous`` the one before
    (-1: none yet). Promoted, as in the engine, on a strict improvement over ``previous``."""
    promoted = current > previous
    assert lkg == (current if promoted else previous), "an LKG the engine could not report"
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
        "promoted": promoted,
        "train_seconds": 0.1,
        "provenance": None,
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
