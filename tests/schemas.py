"""The record schemas every writer of per-loop logs shares (train, sweep, SageMaker jobs)."""

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
