"""sagemaker-cost-estimator: what the project's training jobs cost (psa.cloud.cost)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from psa.arguments import existing_path
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.cloud.aws import client
from psa.cloud.aws_setup import SetupError, require
from psa.cloud.cost import JobCost, describe_cost, hours_text, report
from psa.cloud.jobs import list_project_jobs, read_jobs_file
from psa.cloud.progress import Progress
from psa.commands.sagemaker_flags import add_setup_flags, aws_errors, setup_of

PROG = "sagemaker-cost-estimator"
TOP = 5


def print_report(costs: list[JobCost], summary: dict) -> None:
    print(f"{'job':<63} {'status':<10} {'spot':<4} {'train h':>8} {'bill h':>8} {'USD':>9}")
    for job in costs:
        usd = "-" if job.cost is None else f"{job.cost:.2f}"
        line = (
            f"{job.name:<63} {job.status:<10} {'yes' if job.spot else 'no':<4} "
            f"{hours_text(job.training_seconds):>8} {hours_text(job.billable_seconds):>8} {usd:>9}"
        )
        print(line + (f"  {job.note}" if job.note else ""))
    meta = summary["metadata"]
    print()
    for name, groups in summary["breakdown"].items():
        print(
            f"by {name}: "
            + "; ".join(f"{key} {g['jobs']} job(s) ${g['cost']:.2f}" for key, g in groups.items())
        )
    top = sorted((job for job in costs if job.cost is not None), key=lambda job: -job.cost)[:TOP]
    if top:
        print(f"top {len(top)}: " + "; ".join(f"{job.name} ${job.cost:.2f}" for job in top))
    unbilled = meta["total_jobs"] - meta["billed_jobs"]
    print(
        f"total: {meta['billed_jobs']} billed job(s), {meta['total_billable_hours']:.2f} "
        f"billable h, ${meta['total_cost']:.2f} (on-demand equivalent "
        f"${meta['on_demand_equivalent']:.2f}, spot savings ${meta['spot_savings']:.2f})"
        + (f"; {unbilled} job(s) without billing data or price" if unbilled else "")
    )
    if meta["longest_job"]:
        print(f"longest: {meta['longest_job']} {meta['longest_job_hours']:.2f} h")


def _price(text: str) -> tuple[str, float]:
    instance_type, _, usd = text.partition("=")
    try:
        value = float(usd)
    except ValueError:
        value = -1.0
    if not instance_type.startswith("ml.") or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE=USD, e.g. ml.m5.xlarge=0.23")
    return instance_type, value


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Cost of the project's SageMaker jobs (BillableTimeInSeconds x price).",
    )
    parser.add_argument("--job", action="append", default=[], help="a job name (repeatable)")
    parser.add_argument(
        "--jobs-file",
        type=existing_path,
        help="job names, one per line (default: all jobs named <JOB_NAME_PREFIX>-… on SageMaker)",
    )
    parser.add_argument(
        "--price",
        type=_price,
        action="append",
        default=[],
        help="USD per hour of another instance type, e.g. ml.m5.xlarge=0.23 (repeatable)",
    )
    parser.add_argument("--output", type=Path, help="also write the report as JSON here")
    add_setup_flags(parser, ("region", "job_prefix", "instance_type", "price_per_hour"))
    return parser


@aws_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup = setup_of(args)
    require(setup, "region")
    prices = dict(args.price)
    if setup.price_per_hour is not None:
        prices.setdefault(setup.instance_type, setup.price_per_hour)
    if not prices:
        raise SetupError(
            "no price: set PRICE_PER_HOUR (on-demand USD per hour of INSTANCE_TYPE) in .env, "
            "or pass --price-per-hour or --price TYPE=USD"
        )
    names = list(args.job)
    if args.jobs_file is not None:
        names += read_jobs_file(args.jobs_file)
    sagemaker = client("sagemaker", setup)
    if not names:
        names = sorted(list_project_jobs(sagemaker, setup.job_prefix))
    names = list(dict.fromkeys(names))
    costs = []
    with Progress(PROG, "jobs described", len(names)) as progress:
        for name in names:
            costs.append(describe_cost(sagemaker, name, prices))
            progress.advance(name)
    summary = report(costs, prices)
    if costs:
        print_report(costs, summary)
    else:
        print(f"no training jobs named {setup.job_prefix}-… in {setup.region}")
    if args.output is not None:
        write_text_atomically(args.output, json.dumps(summary, indent=2, default=str) + "\n")
        print(f"report written to {args.output}", file=sys.stderr)
    return 0
