"""The grid of SageMaker jobs: sweep's grid flags -> one job per architecture (or per arch x mode).

Job names are deterministic: ``<prefix>-<slug>-<mode|all|mix>-<hash>``, where the hash covers every
setting that changes results, so a rerun with the same flags finds its own jobs and a rerun with
other hyperparameters never mistakes them for its own. A relaunch after a failure appends
``-r<attempt>`` because SageMaker never reuses a job name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import psa
from psa.arch import Arch, argparse_arch, read_config_file
from psa.arguments import existing_path, mode_list, positive_int
from psa.config import OPTIONAL_SETTINGS, Hyperparameters, RunConfig
from psa.modes import MODES

NAME_LIMIT = 63  # SageMaker training job names: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
ATTEMPT_RESERVE = len("-r99")
HASH_LENGTH = 8

TRIALS = 10
SEED = 1234  # fixed, unlike sweep's drawn seed, so a rerun of the runner finds its own jobs


def default_configs_path() -> Path:
    """reproduction/configurations.txt of this checkout, found from the package, not the CWD."""
    in_checkout = Path(psa.__file__).resolve().parents[2] / "reproduction" / "configurations.txt"
    return in_checkout if in_checkout.is_file() else Path("reproduction/configurations.txt")


def add_grid_flags(parser: argparse.ArgumentParser) -> None:
    """The grid flags of `sweep`, plus how the grid is cut into jobs."""
    group = parser.add_argument_group("grid (the same flags as sweep)")
    group.add_argument(
        "--configs",
        type=existing_path,
        help="one L*W per line (default: reproduction/configurations.txt of this checkout)",
    )
    group.add_argument(
        "--arch", type=argparse_arch, help='one architecture instead of --configs, e.g. "[4*17]"'
    )
    group.add_argument("--modes", type=mode_list, default=MODES, help=f"default: {','.join(MODES)}")
    group.add_argument("--trials", type=positive_int, default=TRIALS, help=f"default: {TRIALS}")
    RunConfig.add_flags(
        group,
        seed_default=SEED,
        helps={"seed": "base seed (fixed, unlike sweep's, so a rerun finds its jobs)"},
    )
    cut = group.add_mutually_exclusive_group()
    cut.add_argument(
        "--job-per",
        choices=("arch", "mode"),
        default="arch",
        help="one job per architecture with all its trials batched (default), "
        "or one per architecture x mode as upstream ran",
    )
    cut.add_argument(
        "--shards",
        type=positive_int,
        default=None,
        metavar="N",
        help="instead of --job-per: N jobs, job i running sweep --shard i/N of the whole grid "
        "(its batch plan split as on a SLURM cluster)",
    )


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

    def settings_hash(self) -> str:
        """A hash of every setting; the method flags count only where they leave upstream's
        method, so jobs launched before those flags existed keep their names."""
        identity = {
            "arch": self.arch.key if self.arch is not None else None,
            "modes": list(self.modes),
            "trials": self.trials,
            **self.config.flat(),
        }
        for name in OPTIONAL_SETTINGS:
            if identity[name] == getattr(Hyperparameters(), name):
                del identity[name]
        if self.shard:  # per-architecture jobs keep the names they always had
            identity.update(shard=self.shard, archs=[arch.key for arch in self.grid])
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return digest[:HASH_LENGTH]

    def base_name(self, job_prefix: str) -> str:
        """The job name of the first attempt; long slugs are cut (the hash keeps names unique)."""
        tail = f"-{self.mode_label}-{self.settings_hash()}"
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


def plan_jobs(args: argparse.Namespace) -> list[JobSpec]:
    """The jobs of a grid, in configurations-file order. Raises ArchError on a bad configs file."""
    if args.arch is not None:
        architectures = [args.arch]
    else:
        architectures = read_config_file(args.configs or default_configs_path())
    settings = {"trials": args.trials, "config": RunConfig.from_args(args)}
    shards = getattr(args, "shards", None)
    if shards:
        grid = tuple(architectures)
        return [
            JobSpec(None, tuple(args.modes), **settings, shard=f"{i}/{shards}", grid=grid)
            for i in range(1, shards + 1)
        ]
    groups = [(mode,) for mode in args.modes] if args.job_per == "mode" else [tuple(args.modes)]
    return [
        JobSpec(arch=arch, modes=modes, **settings) for arch in architectures for modes in groups
    ]


def attempt_name(base: str, attempt: int) -> str:
    return base if attempt == 0 else f"{base}-r{attempt}"


def attempt_of(name: str, base: str) -> int | None:
    """The attempt number of `name` if it is an attempt of `base`, else None."""
    if name == base:
        return 0
    match = re.fullmatch(re.escape(base) + r"-r(\d+)", name)
    return int(match.group(1)) if match else None
