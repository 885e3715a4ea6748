"""The flags the SageMaker commands share: the grid (as sweep's), the AWS setup that overrides
.env and the environment, and AWS errors as one line."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from psa.arch import ArchError, argparse_arch, read_config_file
from psa.arguments import MAX_SHARDS, MAX_TRIALS, existing_path, mode_list, shard_count, trial_count
from psa.cloud.aws import describe_error
from psa.cloud.aws_setup import BY_NAME, DEFAULTS, AwsSetup, load_setup
from psa.cloud.jobs import SEED, TRIALS, JobSpec, plan_jobs
from psa.config import RunConfig
from psa.errors import PsaError
from psa.modes import MODES
from psa.reproduction import PAPER_GRID, PAPER_GRID_NAME


def add_grid_flags(parser: argparse.ArgumentParser) -> None:
    """The grid flags of `sweep`, plus how the grid is cut into jobs."""
    group = parser.add_argument_group("grid (the same flags as sweep)")
    group.add_argument(
        "--configs",
        type=existing_path,
        help=f"one L*W per line (default: the paper's grid, {PAPER_GRID_NAME})",
    )
    group.add_argument(
        "--arch", type=argparse_arch, help='one architecture instead of --configs, e.g. "[4*17]"'
    )
    group.add_argument("--modes", type=mode_list, default=MODES, help=f"default: {','.join(MODES)}")
    group.add_argument(
        "--trials",
        type=trial_count,
        default=TRIALS,
        help=f"trials per mode, at most {MAX_TRIALS} (default: {TRIALS})",
    )
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
        type=shard_count,
        default=None,
        metavar="N",
        help=f"instead of --job-per: N jobs (at most {MAX_SHARDS}), job i running sweep "
        "--shard i/N of the whole grid (its batch plan split as on a SLURM cluster)",
    )


def jobs_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[JobSpec]:
    """The jobs the grid flags name, in configurations-file order; a bad configs file is a usage
    error."""
    try:
        archs = (
            [args.arch] if args.arch is not None else read_config_file(args.configs or PAPER_GRID)
        )
    except ArchError as error:
        parser.error(str(error))
    return plan_jobs(
        archs,
        tuple(args.modes),
        args.trials,
        RunConfig.from_args(args),
        job_per=args.job_per,
        shards=getattr(args, "shards", None),
    )


def add_setup_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add ``--env-file`` and the override flags of the named AWS settings to a command's parser."""
    group = parser.add_argument_group("settings (override .env and the environment)")
    group.add_argument(
        "--env-file",
        type=existing_path,
        help="settings file (default: .env in the current directory)",
    )
    for name in names:
        field = BY_NAME[name]
        default = getattr(DEFAULTS, name)
        if field.kind is bool and default is not None:
            default = "on" if default else "off"
        shown = f" (default: {default})" if default is not None else ""
        text = f"{field.help}; {field.variable}{shown}"
        if field.kind is bool:
            group.add_argument(
                field.flag, dest=name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            group.add_argument(field.flag, dest=name, type=field.kind, help=text)


def setup_of(args: argparse.Namespace, environ: dict[str, str] | None = None) -> AwsSetup:
    """The AWS setup of this command run: its flags over the environment over .env."""
    flags = {name: getattr(args, name, None) for name in BY_NAME}
    return load_setup(flags, getattr(args, "env_file", None), environ)


def aws_errors(main: Callable[..., int]) -> Callable[..., int]:
    """A command whose AWS calls fail ends with the failure as one line (psa.cli prints it)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except (BotoCoreError, ClientError, Boto3Error) as error:
            raise PsaError(describe_error(error)) from None

    return wrapped
