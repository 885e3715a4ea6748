"""The project's SageMaker training jobs: one per architecture (or per arch x mode, or per shard of
the grid), their names, and finding them on SageMaker or in a jobs file.

Job names are deterministic: ``<prefix>-<slug>-<mode|all|mix>-<hash>``, where the hash covers every
setting that changes results, so a rerun with the same flags finds its own jobs and a rerun with
other hyperparameters never mistakes them for its own. A relaunch after a failure appends
``-r<attempt>`` because SageMaker never reuses a job name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from psa.arch import Arch
from psa.cloud.aws_setup import SetupError
from psa.config import DEFAULT_THREADS, OPTIONAL_SETTINGS, Hyperparameters, RunConfig
from psa.modes import MODES

NAME_LIMIT = 63  # SageMaker training job names: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
ATTEMPT_RESERVE = len("-r99")
HASH_LENGTH = 8

TRIALS = 10
SEED = 1234  # fixed, unlike sweep's drawn seed, so a rerun of the runner finds its own jobs


@dataclass(frozen=True)
class JobSpec:
    """One training job: an architecture, its modes, and every setting that changes results."""

    arch: Arch | None
    modes: tuple[str, ...]
    trials: int
    config: RunConfig
    shard: str | None = None  # "I/N": sweep --shard I/N over ``grid``; ``arch`` is then None
    grid: tuple[Arch, ...] = ()

    @property
    def archs(self) -> list[Arch]:
        """The architectures this job runs."""
        return list(self.grid) if self.shard else [self.arch]

    @property
    def label(self) -> str:
        """What a report calls the job: its architecture's key, or its shard."""
        return f"shard {self.shard}" if self.shard else self.arch.key

    @property
    def mode_label(self) -> str:
        if len(self.modes) == 1:
            return self.modes[0]
        return "all" if self.modes == MODES else "mix"

    def identity_hash(self) -> str:
        """A hash of every setting; the method flags count only where they leave upstream's
        method, so jobs launched before those flags existed keep their names."""
        identity = {
            "arch": self.arch.key if self.arch is not None else None,
            "modes": list(self.modes),
            "trials": self.trials,
            **self.config.flat(),
        }
        upstream = {**asdict(Hyperparameters()), "threads": DEFAULT_THREADS}
        for name in OPTIONAL_SETTINGS:
            if identity.get(name, upstream[name]) == upstream[name]:
                identity.pop(name, None)
        if self.shard:  # per-architecture jobs keep the names they always had
            identity.update(shard=self.shard, archs=[arch.key for arch in self.grid])
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return digest[:HASH_LENGTH]

    def base_name(self, job_prefix: str) -> str:
        """The job name of the first attempt; long slugs are cut (the hash keeps names unique)."""
        tail = f"-{self.mode_label}-{self.identity_hash()}"
        room = NAME_LIMIT - ATTEMPT_RESERVE - len(job_prefix) - 1 - len(tail)
        label = "shard" + self.shard.replace("/", "of") if self.shard else self.arch.slug
        slug = label[:room].rstrip("-")
        return f"{job_prefix}-{slug}{tail}"

    def entry_arguments(self) -> dict[str, str]:
        """The in-job entry's flags (without dashes) and their values."""
        if self.shard:
            where = {"archs": ";".join(arch.key for arch in self.grid), "shard": self.shard}
        else:
            where = {"arch": self.arch.flag}
        return {
            **where,
            "modes": ",".join(self.modes),
            "trials": str(self.trials),
            **self.config.flag_values(),
        }


def plan_jobs(
    archs: list[Arch],
    modes: tuple[str, ...],
    trials: int,
    config: RunConfig,
    job_per: str = "arch",
    shards: int | None = None,
) -> list[JobSpec]:
    """The jobs of a grid in ``archs`` order: one per architecture (``job_per="arch"``), per
    architecture x mode (``"mode"``), or ``shards`` jobs each running a shard of the grid."""
    if shards:
        grid = tuple(archs)
        return [
            JobSpec(None, tuple(modes), trials, config, shard=f"{i}/{shards}", grid=grid)
            for i in range(1, shards + 1)
        ]
    groups = [(mode,) for mode in modes] if job_per == "mode" else [tuple(modes)]
    return [JobSpec(arch, group, trials, config) for arch in archs for group in groups]


def attempt_name(base: str, attempt: int) -> str:
    return base if attempt == 0 else f"{base}-r{attempt}"


def attempt_of(name: str, base: str) -> int | None:
    """The attempt number of `name` if it is an attempt of `base`, else None."""
    if name == base:
        return 0
    match = re.fullmatch(re.escape(base) + r"-r(\d+)", name)
    return int(match.group(1)) if match else None


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
        raise SetupError(f"cannot read jobs file {path}: {error.strerror}") from None
    if text.lstrip().startswith("["):
        try:
            names = [str(name) for name in json.loads(text)]
        except (json.JSONDecodeError, TypeError):
            raise SetupError(f"jobs file {path} is not a JSON list of job names") from None
    else:
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        names = [name for name in names if name]
    for name in names:
        if not _NAME.match(name):
            raise SetupError(f"jobs file {path}: {name!r} is not a SageMaker job name")
    if not names:
        raise SetupError(f"jobs file {path} lists no jobs")
    return list(dict.fromkeys(names))
