"""Which training jobs belong to the project: by name prefix on SageMaker, or from a jobs file."""

from __future__ import annotations

import json
import re
from pathlib import Path

from psa.cloud.settings import SettingsError

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def list_project_jobs(sagemaker, job_prefix: str) -> dict[str, dict]:
    """Every training job named ``<job_prefix>-…``: name -> its ListTrainingJobs summary."""
    pages = sagemaker.get_paginator("list_training_jobs").paginate(
        NameContains=f"{job_prefix}-", PaginationConfig={"PageSize": 100}
    )
    return {
        summary["TrainingJobName"]: summary
        for page in pages
        for summary in page.get("TrainingJobSummaries", [])
        if summary["TrainingJobName"].startswith(f"{job_prefix}-")
    }


def read_jobs_file(path: Path) -> list[str]:
    """Job names, one per line (``#`` comments and blank lines ignored), or a JSON list of them."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise SettingsError(f"cannot read jobs file {path}: {error.strerror}") from None
    if text.lstrip().startswith("["):
        try:
            names = [str(name) for name in json.loads(text)]
        except (json.JSONDecodeError, TypeError):
            raise SettingsError(f"jobs file {path} is not a JSON list of job names") from None
    else:
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        names = [name for name in names if name]
    for name in names:
        if not _NAME.match(name):
            raise SettingsError(f"jobs file {path}: {name!r} is not a SageMaker job name")
    if not names:
        raise SettingsError(f"jobs file {path} lists no jobs")
    return list(dict.fromkeys(names))
