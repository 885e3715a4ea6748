"""sagemaker-results-parser: the jobs' outputs on S3 -> a results dir (psa.cloud.results)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from psa.arguments import add_shipped_flag, refuse_shipped
from psa.cli import CommandParser
from psa.cloud.aws import client
from psa.cloud.aws_setup import require
from psa.cloud.progress import Progress
from psa.cloud.results import PROG, collect, training_jobs, write_results_dir
from psa.commands.sagemaker_flags import (
    add_grid_flags,
    add_setup_flags,
    aws_errors,
    jobs_of,
    setup_of,
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Collect the SageMaker jobs' outputs from S3 into trial and summary tables.",
    )
    add_grid_flags(parser)
    parser.add_argument(
        "--naming",
        choices=("psa", "upstream"),
        default="psa",
        help="psa: jobs named by sagemaker-runner (default); upstream: psa-LxW-mode-<timestamp> "
        "jobs with only results.txt (one job per arch x mode)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("results/sagemaker"),
        help="where the results dir is written (default: results/sagemaker)",
    )
    add_shipped_flag(parser, "--output-dir")
    add_setup_flags(parser, ("region", "bucket", "prefix", "job_prefix"))
    return parser


@aws_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_shipped("--output-dir", args.output_dir, args.add_to_shipped)
    if args.naming == "upstream":
        args.job_per = "mode"
    specs = jobs_of(parser, args)
    setup = setup_of(args)
    require(setup, "region", "bucket")
    s3 = client("s3", setup)
    known_jobs = training_jobs(client("sagemaker", setup), setup.job_prefix)
    with (
        tempfile.TemporaryDirectory(prefix="psa-results-") as scratch,
        Progress(PROG, "jobs read", len(specs)) as progress,
    ):
        results = collect(
            s3, setup, specs, args.naming, Path(scratch), known_jobs, progress.advance
        )
    for result in results:
        found = len(result.records)
        problems = ", ".join(f"{mode} {token}" for mode, token in result.errors.items())
        label = result.job or result.spec.base_name(setup.job_prefix)
        print(f"{label}: {found} trial record(s)" + (f"; {problems}" if problems else ""))
    summary = write_results_dir(results, args.output_dir, args.model)
    total = sum(len(result.records) for result in results)
    print(
        f"{total} trial record(s) from {len(results)} job(s) -> {summary.parent}", file=sys.stderr
    )
    return 0
