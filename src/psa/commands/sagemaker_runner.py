"""sagemaker-runner: launch the grid as SageMaker training jobs (psa.cloud.runner says how a rerun
reconciles with the jobs already there)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from psa.arguments import existing_path
from psa.cli import CommandParser
from psa.cloud.aws import client
from psa.cloud.aws_setup import AwsSetup, require
from psa.cloud.jobs import attempt_of, list_project_jobs
from psa.cloud.runner import (
    MAX_ATTEMPT,
    PROG,
    Decision,
    Outcome,
    decide,
    launch,
    summarize,
    training_request,
)
from psa.cloud.sourcedir import (
    build_bundle,
    dataset_files,
    dataset_uri,
    default_dataset_dir,
    default_source_dir,
    upload_bundle,
    upload_dataset,
)
from psa.commands.sagemaker_flags import (
    add_grid_flags,
    add_setup_flags,
    aws_errors,
    jobs_of,
    setup_of,
)
from psa.errors import PsaError


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
    parser.add_argument(
        "--list-source-files",
        action="store_true",
        help="with --dry-run: print the name of every file the source archive holds, one per "
        "line, instead of the requests",
    )
    add_setup_flags(
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


def _dry_run(decisions: list[Decision], setup: AwsSetup, source_dir: Path, list_files: bool) -> int:
    placeholders = {
        "role": "arn:aws:iam::<AWS_ACCOUNT_ID>:role/<AWS_SAGEMAKER_ROLE>",
        "region": "<AWS_REGION>",
        "bucket": "<S3_BUCKET_NAME>",
    }
    missing = {name: text for name, text in placeholders.items() if not getattr(setup, name)}
    if missing:
        print(f"{PROG}: dry run with placeholders for {', '.join(missing)}", file=sys.stderr)
        setup = replace(setup, **missing)
    bundle = build_bundle(source_dir)
    source_uri = f"s3://{setup.bucket}/{bundle.key(setup.prefix)}"
    requests = [training_request(d, setup, source_uri, dataset_uri(setup)) for d in decisions]
    print("\n".join(bundle.files) if list_files else json.dumps(requests, indent=2))
    listed = "" if list_files else "; --list-source-files lists them"
    print(
        f"{PROG}: dry run: {len(requests)} job(s); sourcedir.tar.gz ({len(bundle.files)} files, "
        f"{len(bundle.data):,} bytes{listed}) "
        f"would go to {source_uri}; nothing was sent",
        file=sys.stderr,
    )
    return 0


@aws_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_source_files and not args.dry_run:
        parser.error("--list-source-files lists the archive of a dry run; add --dry-run")
    specs = jobs_of(parser, args)
    setup = setup_of(args)

    if args.dry_run:
        decisions = decide(specs, {}, setup.job_prefix)
        return _dry_run(decisions, setup, args.source_dir, args.list_source_files)

    require(setup, "role", "region", "bucket")
    setup = replace(setup, role=setup.role_arn)
    bundle = build_bundle(args.source_dir)
    dataset_files(args.dataset_dir)
    sagemaker = client("sagemaker", setup)
    decisions = decide(specs, list_project_jobs(sagemaker, setup.job_prefix), setup.job_prefix)
    for decision in decisions:
        if not decision.launch:
            print(f"skipped  {decision.name} ({decision.status})")
    to_launch = [d for d in decisions if d.launch]
    too_many = [d.name for d in to_launch if attempt_of(d.name, d.base) > MAX_ATTEMPT]
    if too_many:
        raise PsaError(f"{too_many[0]} has failed {MAX_ATTEMPT} times; look at its logs first")

    outcome = Outcome([], [], [])
    if to_launch:
        s3 = client("s3", setup)
        source_uri = upload_bundle(s3, setup, bundle)
        data_uri = upload_dataset(s3, setup, args.dataset_dir)
        requests = [training_request(d, setup, source_uri, data_uri) for d in to_launch]
        outcome = launch(sagemaker, requests)
    for line in summarize(decisions, outcome):
        print(line)
    return 1 if outcome.failed or outcome.not_launched else 0
