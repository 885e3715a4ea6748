"""sagemaker-cost-estimator: what the project's training jobs cost, from SageMaker's billing data.

cost = BillableTimeInSeconds x InstanceCount / 3600 x the on-demand price per instance-hour.
Managed spot is already in the billable time (SageMaker bills the spot job's reduced billable
time at the on-demand rate), so the report also gives the on-demand equivalent
(TrainingTimeInSeconds at the same price) and the savings. A job with no billable time yet
(InProgress, or failed before it started) is listed as such and left out of the totals.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import ClientError

from psa.arguments import existing_path
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.cloud.aws import cli_errors, client, error_code
from psa.cloud.jobs import list_project_jobs, read_jobs_file
from psa.cloud.progress import Progress
from psa.cloud.settings import SettingsError, add_settings_flags, load_settings, require
from psa.modes import MODES

PROG = "sagemaker-cost-estimator"
TOP = 5


@dataclass
class JobCost:
    name: str
    status: str
    instance_type: str
    instance_count: int
    spot: bool
    arch: str
    modes: str
    training_seconds: int | None
    billable_seconds: int | None
    cost: float | None
    on_demand_cost: float | None
    note: str = ""


def _hyperparameter(hyperparameters: dict, *names: str) -> str | None:
    for name in names:
        if name in hyperparameters:
            raw = hyperparameters[name]
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                value = raw
            return str(value)
    return None


def job_cost(description: dict, prices: dict[str, float]) -> JobCost:
    """The cost of one DescribeTrainingJob response under the given prices."""
    resources = description.get("ResourceConfig", {})
    instance_type = resources.get("InstanceType", "?")
    count = int(resources.get("InstanceCount", 1))
    hyperparameters = description.get("HyperParameters", {})
    arch = (_hyperparameter(hyperparameters, "arch") or "?").strip("[]")
    modes = _hyperparameter(hyperparameters, "modes", "ablation-mode") or "?"
    if set(modes.split(",")) == set(MODES):
        modes = "all"
    billable = description.get("BillableTimeInSeconds")
    training = description.get("TrainingTimeInSeconds")
    price = prices.get(instance_type)
    cost = on_demand = None
    note = ""
    if description.get("TrainingJobStatus") == "NotFound":
        note = "no such job"
    elif billable is None:
        note = "no billing data yet"
    elif price is None:
        note = f"no price for {instance_type} (pass --price {instance_type}=USD)"
    else:
        cost = billable * count / 3600 * price
        on_demand = (training if training is not None else billable) * count / 3600 * price
    return JobCost(
        name=description["TrainingJobName"],
        status=description.get("TrainingJobStatus", "?"),
        instance_type=instance_type,
        instance_count=count,
        spot=bool(description.get("EnableManagedSpotTraining", False)),
        arch=arch,
        modes=modes,
        training_seconds=training,
        billable_seconds=billable,
        cost=cost,
        on_demand_cost=on_demand,
        note=note,
    )


def describe_cost(sagemaker, name: str, prices: dict[str, float]) -> JobCost:
    try:
        description = sagemaker.describe_training_job(TrainingJobName=name)
    except ClientError as error:
        if error_code(error) != "ValidationException":
            raise
        description = {"TrainingJobName": name, "TrainingJobStatus": "NotFound"}
    return job_cost(description, prices)


def breakdown(costs: list[JobCost], key) -> dict[str, dict]:
    groups: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "hours": 0.0, "cost": 0.0})
    for job in costs:
        group = groups[key(job)]
        group["jobs"] += 1
        if job.cost is not None:
            group["hours"] += job.billable_seconds * job.instance_count / 3600
            group["cost"] += job.cost
    return dict(sorted(groups.items()))


def report(costs: list[JobCost], prices: dict[str, float]) -> dict:
    billed = [job for job in costs if job.cost is not None]
    total = sum(job.cost for job in billed)
    on_demand = sum(job.on_demand_cost for job in billed)
    longest = max(billed, key=lambda job: job.training_seconds or 0, default=None)
    return {
        "metadata": {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "prices_per_hour": prices,
            "total_jobs": len(costs),
            "billed_jobs": len(billed),
            "total_billable_hours": sum(j.billable_seconds * j.instance_count for j in billed)
            / 3600,
            "total_cost": total,
            "on_demand_equivalent": on_demand,
            "spot_savings": on_demand - total,
            "longest_job": longest.name if longest else None,
            "longest_job_hours": (longest.training_seconds or 0) / 3600 if longest else 0.0,
        },
        "breakdown": {
            "status": breakdown(costs, lambda job: job.status),
            "arch": breakdown(costs, lambda job: job.arch),
            "modes": breakdown(costs, lambda job: job.modes),
        },
        "jobs": [asdict(job) for job in costs],
    }


def _hours(seconds: int | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}"


def print_report(costs: list[JobCost], summary: dict) -> None:
    print(f"{'job':<63} {'status':<10} {'spot':<4} {'train h':>8} {'bill h':>8} {'USD':>9}")
    for job in costs:
        usd = "-" if job.cost is None else f"{job.cost:.2f}"
        line = (
            f"{job.name:<63} {job.status:<10} {'yes' if job.spot else 'no':<4} "
            f"{_hours(job.training_seconds):>8} {_hours(job.billable_seconds):>8} {usd:>9}"
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
    add_settings_flags(parser, ("region", "job_prefix", "instance_type", "price_per_hour"))
    return parser


@cli_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(args)
    require(settings, "region")
    prices = dict(args.price)
    if settings.price_per_hour is not None:
        prices.setdefault(settings.instance_type, settings.price_per_hour)
    if not prices:
        raise SettingsError(
            "no price: set PRICE_PER_HOUR (on-demand USD per hour of INSTANCE_TYPE) in .env, "
            "or pass --price-per-hour or --price TYPE=USD"
        )
    names = list(args.job)
    if args.jobs_file is not None:
        names += read_jobs_file(args.jobs_file)
    sagemaker = client("sagemaker", settings)
    if not names:
        names = sorted(list_project_jobs(sagemaker, settings.job_prefix))
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
        print(f"no training jobs named {settings.job_prefix}-… in {settings.region}")
    if args.output is not None:
        write_text_atomically(args.output, json.dumps(summary, indent=2, default=str) + "\n")
        print(f"report written to {args.output}", file=sys.stderr)
    return 0
