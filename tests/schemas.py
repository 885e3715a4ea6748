"""The record schemas that train, sweep and SageMaker jobs share, and builders of small records."""

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
