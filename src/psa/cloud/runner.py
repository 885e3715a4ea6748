"""sagemaker-runner: launch the grid as SageMaker training jobs through boto3 CreateTrainingJob.

A rerun reconciles with the jobs already on SageMaker: a job that is Completed, InProgress or
Stopping is left alone, a Failed or Stopped one is relaunched as the next attempt (its checkpoint
prefix is shared, so the new attempt skips the trials the old one finished), and a missing one is
launched. botocore retries throttled calls; an exhausted instance quota (ResourceLimitExceeded,
which botocore does not retry) gets a few growing waits of its own. A quota or throttling that
outlasts them stops the launches and the summary says what was not launched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from botocore.exceptions import ClientError

from psa.arch import ArchError
from psa.arguments import existing_path
from psa.cli import CommandParser
from psa.cloud.aws import QUOTA_CODE, RETRY_ATTEMPTS, cli_errors, client, error_code
from psa.cloud.grid import JobSpec, add_grid_flags, attempt_name, attempt_of, plan_jobs
from psa.cloud.jobs import list_project_jobs
from psa.cloud.settings import Settings, add_settings_flags, load_settings, require
from psa.cloud.sourcedir import (
    ENTRY_POINT,
    build_bundle,
    dataset_files,
    dataset_uri,
    default_dataset_dir,
    default_source_dir,
    upload_bundle,
    upload_dataset,
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


def training_request(
    decision: Decision, settings: Settings, source_uri: str, data_uri: str
) -> dict:
    """The CreateTrainingJob request of one job."""
    spec, name = decision.spec, decision.name
    hyperparameters = {
        **spec.entry_arguments(),
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": settings.region,
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": name,
    }
    stopping = {"MaxRuntimeInSeconds": settings.max_run_seconds}
    if settings.use_spot:
        stopping["MaxWaitTimeInSeconds"] = settings.max_wait_seconds or settings.max_run_seconds
    return {
        "TrainingJobName": name,
        "RoleArn": settings.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": settings.image_uri
            or default_image_uri(settings.region, settings.instance_type),
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
        "OutputDataConfig": {"S3OutputPath": settings.s3_root},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": settings.volume_size_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": settings.use_spot,
        "CheckpointConfig": {
            "S3Uri": f"{settings.s3_root}/checkpoints/{decision.base}",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        },
        # No debugger hook, no profiler rules: upstream's profiler wrote ~14 GB of JSON.
        "ProfilerConfig": {"DisableProfiler": True},
        "Tags": [{"Key": "project", "Value": settings.job_prefix}],
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


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Launch the PSA grid as SageMaker training jobs (boto3 CreateTrainingJob).",
    )
    add_grid_flags(parser)
    parser.add_argument(
        "--source-dir",
        type=existing_path,
        default=default_source_dir(),
        help="the job's entry files (default: aws/sagemaker of this checkout)",
    )
    parser.add_argument(
        "--dataset-dir",
        type=existing_path,
        default=default_dataset_dir(),
        help="folder with the four MNIST .gz files, uploaded once as the 'training' channel "
        "(default: dataset/ of this checkout)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the CreateTrainingJob requests as JSON; contact nothing, upload nothing",
    )
    add_settings_flags(
        parser,
        (
            "role",
            "account_id",
            "region",
            "bucket",
            "prefix",
            "job_prefix",
            "instance_type",
            "use_spot",
            "max_run_seconds",
            "max_wait_seconds",
            "volume_size_gb",
            "image_uri",
        ),
    )
    return parser


def _dry_run(decisions: list[Decision], settings: Settings, source_dir: Path) -> int:
    placeholders = {
        "role": "arn:aws:iam::<AWS_ACCOUNT_ID>:role/<AWS_SAGEMAKER_ROLE>",
        "region": "<AWS_REGION>",
        "bucket": "<S3_BUCKET_NAME>",
    }
    missing = {name: text for name, text in placeholders.items() if not getattr(settings, name)}
    if missing:
        print(f"{PROG}: dry run with placeholders for {', '.join(missing)}", file=sys.stderr)
        settings = replace(settings, **missing)
    bundle = build_bundle(source_dir)
    source_uri = f"s3://{settings.bucket}/{bundle.key(settings.prefix)}"
    requests = [training_request(d, settings, source_uri, dataset_uri(settings)) for d in decisions]
    print(json.dumps(requests, indent=2))
    print(
        f"{PROG}: dry run: {len(requests)} job(s); sourcedir.tar.gz ({len(bundle.files)} files, "
        f"{len(bundle.data):,} bytes) "
        f"would go to {source_uri}; nothing was sent",
        file=sys.stderr,
    )
    return 0


@cli_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        specs = plan_jobs(args)
    except ArchError as error:
        parser.error(str(error))
    settings = load_settings(args)

    if args.dry_run:
        return _dry_run(decide(specs, {}, settings.job_prefix), settings, args.source_dir)

    require(settings, "role", "region", "bucket")
    settings = replace(settings, role=settings.role_arn)
    bundle = build_bundle(args.source_dir)
    dataset_files(args.dataset_dir)
    sagemaker = client("sagemaker", settings)
    decisions = decide(
        specs, list_project_jobs(sagemaker, settings.job_prefix), settings.job_prefix
    )
    for decision in decisions:
        if not decision.launch:
            print(f"skipped  {decision.name} ({decision.status})")
    to_launch = [d for d in decisions if d.launch]
    too_many = [d.name for d in to_launch if attempt_of(d.name, d.base) > MAX_ATTEMPT]
    if too_many:
        sys.exit(f"{PROG}: {too_many[0]} has failed {MAX_ATTEMPT} times; look at its logs first")

    outcome = Outcome([], [], [])
    if to_launch:
        s3 = client("s3", settings)
        source_uri = upload_bundle(s3, settings, bundle)
        data_uri = upload_dataset(s3, settings, args.dataset_dir)
        requests = [training_request(d, settings, source_uri, data_uri) for d in to_launch]
        outcome = launch(sagemaker, requests)
    for line in summarize(decisions, outcome):
        print(line)
    return 1 if outcome.failed or outcome.not_launched else 0
