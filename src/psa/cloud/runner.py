"""Launching the grid as SageMaker training jobs through boto3 CreateTrainingJob (sagemaker-runner).

A rerun reconciles with the jobs already on SageMaker: a job that is Completed, InProgress or
Stopping is left alone, a Failed or Stopped one is relaunched as the next attempt (its checkpoint
prefix is shared, so the new attempt skips the trials the old one finished), and a missing one is
launched. botocore retries throttled calls; an exhausted instance quota (ResourceLimitExceeded,
which botocore does not retry) gets a few growing waits of its own. A quota or throttling that
outlasts them stops the launches and the summary says what was not launched.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from psa.cloud.aws import QUOTA_CODE, RETRY_ATTEMPTS, error_code
from psa.cloud.aws_setup import AwsSetup
from psa.cloud.jobs import JobSpec, attempt_name, attempt_of
from psa.cloud.sourcedir import (
    ENTRY_POINT,
)

PROG = "sagemaker-runner"
LEAVE_ALONE = ("Completed", "InProgress", "Stopping")
RELAUNCH = ("Failed", "Stopped")
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
DLC_ACCOUNT = "763104351884"
DLC_TAG = "2.7.1-{device}-py312"
LAUNCH_ATTEMPTS = 6  # CreateTrainingJob calls while the instance quota is exhausted
QUOTA_WAIT_SECONDS = 2.0  # doubled after each: 2, 4, 8, 16, 32 s
THROTTLING_CODE = "ThrottlingException"
MAX_ATTEMPT = 99


def default_image_uri(region: str, instance_type: str) -> str:
    """The AWS PyTorch training image for the region (GPU build on ml.g*/ml.p* instances)."""
    family = instance_type.removeprefix("ml.")
    device = "gpu" if family.startswith(("g", "p")) else "cpu"
    tag = DLC_TAG.format(device=device)
    return f"{DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-training:{tag}"


@dataclass(frozen=True)
class Decision:
    spec: JobSpec
    base: str
    name: str  # the job to launch, or the existing job that made us skip
    launch: bool
    status: str | None  # the existing job's status, None when no attempt exists


def decide(specs: list[JobSpec], existing: dict[str, dict], job_prefix: str) -> list[Decision]:
    """For each planned job: skip it, launch it, or launch its next attempt."""
    decisions = []
    for spec in specs:
        base = spec.base_name(job_prefix)
        attempts = sorted(
            (number, name) for name in existing if (number := attempt_of(name, base)) is not None
        )
        alive = [name for _, name in attempts if existing[name]["TrainingJobStatus"] in LEAVE_ALONE]
        if alive:
            name = alive[-1]
            decisions.append(Decision(spec, base, name, False, existing[name]["TrainingJobStatus"]))
        elif attempts:
            number, last = attempts[-1]
            status = existing[last]["TrainingJobStatus"]
            decisions.append(Decision(spec, base, attempt_name(base, number + 1), True, status))
        else:
            decisions.append(Decision(spec, base, base, True, None))
    return decisions


def training_request(decision: Decision, setup: AwsSetup, source_uri: str, data_uri: str) -> dict:
    """The CreateTrainingJob request of one job."""
    spec, name = decision.spec, decision.name
    hyperparameters = {
        **spec.entry_arguments(),
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": setup.region,
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": name,
    }
    stopping = {"MaxRuntimeInSeconds": setup.max_run_seconds}
    if setup.use_spot:
        stopping["MaxWaitTimeInSeconds"] = setup.max_wait_seconds or setup.max_run_seconds
    return {
        "TrainingJobName": name,
        "RoleArn": setup.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": setup.image_uri
            or default_image_uri(setup.region, setup.instance_type),
            "TrainingInputMode": "File",
        },
        # The framework image json-decodes every value, as the SageMaker Python SDK encodes them.
        "HyperParameters": {key: json.dumps(value) for key, value in hyperparameters.items()},
        "InputDataConfig": [
            {
                "ChannelName": "training",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": data_uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": setup.s3_root},
        "ResourceConfig": {
            "InstanceType": setup.instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": setup.volume_size_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": setup.use_spot,
        "CheckpointConfig": {
            "S3Uri": f"{setup.s3_root}/checkpoints/{decision.base}",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        },
        # No debugger hook, no profiler rules: upstream's profiler wrote ~14 GB of JSON.
        "ProfilerConfig": {"DisableProfiler": True},
        "Tags": [{"Key": "project", "Value": setup.job_prefix}],
    }


@dataclass
class Outcome:
    launched: list[str]
    failed: list[tuple[str, str]]
    not_launched: list[str]
    stop_reason: str | None = None


def create_job(sagemaker, request: dict, sleep: Callable[[float], None] = time.sleep) -> None:
    """CreateTrainingJob, waiting and calling again while the instance quota is exhausted.

    A quota frees up only when a running job ends, so this is no throttle: botocore does not retry
    it, and its waits are longer than botocore's.
    """
    for attempt in range(LAUNCH_ATTEMPTS):
        try:
            sagemaker.create_training_job(**request)
            return
        except ClientError as error:
            if error_code(error) != QUOTA_CODE or attempt == LAUNCH_ATTEMPTS - 1:
                raise
            sleep(QUOTA_WAIT_SECONDS * 2**attempt)


def launch(
    sagemaker,
    requests: list[dict],
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> Outcome:
    """Create the jobs in order; a quota or throttling that outlasts the retries stops the rest."""
    outcome = Outcome([], [], [])
    attempts = {QUOTA_CODE: LAUNCH_ATTEMPTS, THROTTLING_CODE: RETRY_ATTEMPTS}
    for index, request in enumerate(requests):
        name = request["TrainingJobName"]
        try:
            create_job(sagemaker, request, sleep)
        except ClientError as error:
            code = error_code(error)
            message = error.response.get("Error", {}).get("Message", "")
            if code in attempts:
                outcome.not_launched = [r["TrainingJobName"] for r in requests[index:]]
                outcome.stop_reason = f"{code}: {message}"
                report(f"stopped at {name}: {code} after {attempts[code]} attempts: {message}")
                return outcome
            outcome.failed.append((name, f"{code}: {message}"))
            report(f"failed   {name}: {code}: {message}")
            continue
        outcome.launched.append(name)
        report(f"launched {name}")
    return outcome


def summarize(decisions: list[Decision], outcome: Outcome) -> list[str]:
    skipped = Counter(d.status for d in decisions if not d.launch)
    lines = [f"launched {len(outcome.launched)}"]
    details = ", ".join(f"{count} {status}" for status, count in sorted(skipped.items()))
    lines.append(f"skipped {sum(skipped.values())}" + (f" ({details})" if details else ""))
    lines.append(f"failed {len(outcome.failed)}")
    for name, reason in outcome.failed:
        lines.append(f"  {name}: {reason}")
    if outcome.not_launched:
        lines.append(
            f"not launched {len(outcome.not_launched)} ({outcome.stop_reason}); rerun "
            f"{PROG} with the same flags later to launch only these"
        )
    return lines
