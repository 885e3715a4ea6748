"""What the project's training jobs cost, from SageMaker's billing data (sagemaker-cost-estimator).

cost = BillableTimeInSeconds x InstanceCount / 3600 x the on-demand price per instance-hour.
Managed spot is already in the billable time (SageMaker bills the spot job's reduced billable
time at the on-demand rate), so the report also gives the on-demand equivalent
(TrainingTimeInSeconds at the same price) and the savings. A job with no billable time yet
(InProgress, or failed before it started) is listed as such and left out of the totals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from psa.cloud.aws import error_code
from psa.modes import MODES


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


def hours_text(seconds: int | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}"
