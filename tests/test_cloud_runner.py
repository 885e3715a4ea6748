import io
import json
import subprocess
import sys
import tarfile
import time

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.backends import get_backend

import psa
from cloud_support import (
    ACCOUNT,
    BUCKET,
    PREFIX,
    REGION,
    ROLE,
    ScriptedHttp,
    isolated_aws_env,
    json_answer,
    stand_in_dataset,
    throttled,
)
from psa.cloud import runner
from psa.cloud.aws import client
from psa.cloud.aws_setup import AwsSetup
from psa.cloud.sourcedir import build_bundle, default_source_dir
from psa.commands import sagemaker_runner as runner_command

GRID = ["--arch", "[2*8]", "--modes", "none,full", "--trials", "2", "--meta-loops", "3"]


@pytest.fixture
def aws(monkeypatch, tmp_path):
    isolated_aws_env(
        monkeypatch, tmp_path, AWS_SAGEMAKER_ROLE=ROLE, S3_BUCKET_NAME=BUCKET, S3_PREFIX=PREFIX
    )
    stand_in_dataset(monkeypatch, tmp_path)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield boto3.client("sagemaker", region_name=REGION)


def backend_job(name):
    return get_backend("sagemaker")[ACCOUNT][REGION].training_jobs[name]


def job_names(sagemaker):
    return sorted(
        s["TrainingJobName"] for s in sagemaker.list_training_jobs()["TrainingJobSummaries"]
    )


def test_a_first_run_launches_every_job_of_the_grid(aws, capsys):
    assert runner_command.main([*GRID, "--job-per", "mode"]) == 0
    names = job_names(aws)
    assert len(names) == 2
    assert {name.split("-")[2] for name in names} == {"none", "full"}
    job = aws.describe_training_job(TrainingJobName=names[0])
    hyperparameters = {key: json.loads(value) for key, value in job["HyperParameters"].items()}
    assert hyperparameters["sagemaker_program"] == "train.py"
    assert hyperparameters["arch"] == "[2*8]"
    assert hyperparameters["trials"] == "2"
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/{PREFIX}"
    assert job["CheckpointConfig"]["S3Uri"] == f"s3://{BUCKET}/{PREFIX}/checkpoints/{names[0]}"
    assert job["InputDataConfig"][0]["ChannelName"] == "training"
    out = capsys.readouterr().out
    assert "launched 2" in out and "skipped 0" in out


def test_the_source_archive_and_dataset_are_uploaded_once(aws):
    runner_command.main(GRID)
    s3 = boto3.client("s3", region_name=REGION)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(key.split("/")[1] for key in keys) == ["dataset"] * 4 + ["source"]
    [source_key] = [key for key in keys if key.endswith("sourcedir.tar.gz")]
    job = aws.describe_training_job(TrainingJobName=job_names(aws)[0])
    submitted = json.loads(job["HyperParameters"]["sagemaker_submit_directory"])
    assert submitted == f"s3://{BUCKET}/{source_key}"
    archive = s3.get_object(Bucket=BUCKET, Key=source_key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = set(tar.getnames())
    job = {"train.py", "requirements.txt", "psa/__init__.py", "psa/commands/sagemaker_job.py"}
    assert job <= names
    assert not any(name.startswith(".env") or "__pycache__" in name for name in names)


def test_a_rerun_launches_only_what_is_missing_or_failed(aws, capsys):
    runner_command.main([*GRID, "--job-per", "mode"])
    first = job_names(aws)
    backend_job(first[0]).training_job_status = "Failed"
    backend_job(first[1]).training_job_status = "InProgress"
    capsys.readouterr()

    assert runner_command.main([*GRID, "--job-per", "mode", "--modes", "none,decay,full"]) == 0

    out = capsys.readouterr().out
    names = job_names(aws)
    assert f"{first[0]}-r1" in names
    assert len(names) == 4  # two old, the retry, and the new decay job
    assert "launched 2" in out
    assert f"skipped  {first[1]} (InProgress)" in out
    assert runner_command.main([*GRID, "--job-per", "mode"]) == 0
    assert len(job_names(aws)) == 4


def test_a_retry_shares_the_checkpoints_of_the_failed_attempt(aws):
    runner_command.main(GRID)
    [name] = job_names(aws)
    backend_job(name).training_job_status = "Stopped"
    runner_command.main(GRID)
    retry = aws.describe_training_job(TrainingJobName=f"{name}-r1")
    assert retry["CheckpointConfig"]["S3Uri"].endswith(f"/checkpoints/{name}")


def test_spot_jobs_wait_and_checkpoint(aws):
    runner_command.main(
        [*GRID, "--spot", "--max-run-seconds", "3600", "--max-wait-seconds", "7200"]
    )
    job = aws.describe_training_job(TrainingJobName=job_names(aws)[0])
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"


def test_dry_run_prints_valid_requests_and_contacts_nothing(monkeypatch, tmp_path, capsys):
    isolated_aws_env(monkeypatch, tmp_path, credentials=False)

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run created an AWS client")

    monkeypatch.setattr(runner_command, "client", no_network)
    assert runner_command.main([*GRID, "--job-per", "mode", "--spot", "--dry-run"]) == 0
    captured = capsys.readouterr()
    requests = json.loads(captured.out)
    assert [r["TrainingJobName"].split("-")[2] for r in requests] == ["none", "full"]
    assert all(r["ProfilerConfig"] == {"DisableProfiler": True} for r in requests)
    assert "DebugHookConfig" not in requests[0] and "ProfilerRuleConfigurations" not in requests[0]
    assert requests[0]["StoppingCondition"]["MaxWaitTimeInSeconds"] >= 172800
    assert "nothing was sent" in captured.err
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:  # the request must satisfy the CreateTrainingJob model
        stub.add_response("create_training_job", {"TrainingJobArn": "arn"}, requests[0])
        sagemaker.create_training_job(**requests[0])


def requests_for(count):
    return [
        {
            "TrainingJobName": f"psa-job-{i}",
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://b/p"},
            "AlgorithmSpecification": {"TrainingImage": "image", "TrainingInputMode": "File"},
            "ResourceConfig": {
                "InstanceType": "ml.m5.large",
                "InstanceCount": 1,
                "VolumeSizeInGB": 1,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        }
        for i in range(count)
    ]


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    isolated_aws_env(monkeypatch, tmp_path)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sagemaker) as stub:
        yield sagemaker, stub
        stub.assert_no_pending_responses()


def test_throttled_launches_are_retried_by_botocore_not_by_the_runner(monkeypatch, tmp_path):
    isolated_aws_env(monkeypatch, tmp_path)
    botocore_waits = []
    monkeypatch.setattr(time, "sleep", botocore_waits.append)
    sagemaker = client("sagemaker", AwsSetup(region=REGION))
    created = json_answer(200, {"TrainingJobArn": "arn:aws:sagemaker:::training-job/psa-job"})
    http = ScriptedHttp(sagemaker, [throttled(), throttled(), created, created])
    runner_waits = []
    outcome = runner.launch(
        sagemaker, requests_for(2), sleep=runner_waits.append, report=lambda _: None
    )
    assert outcome.launched == ["psa-job-0", "psa-job-1"]
    assert len(http.sent) == 4
    assert len(botocore_waits) == 2
    assert runner_waits == []


def test_throttling_that_outlasts_botocores_retries_stops_launching(stubbed):
    sagemaker, stub = stubbed
    stub.add_client_error("create_training_job", "ThrottlingException", "Rate exceeded")
    delays = []
    outcome = runner.launch(sagemaker, requests_for(2), sleep=delays.append, report=lambda _: None)
    assert outcome.launched == []
    assert outcome.not_launched == ["psa-job-0", "psa-job-1"]
    assert outcome.stop_reason == "ThrottlingException: Rate exceeded"
    assert delays == []


def test_an_exhausted_quota_stops_launching_and_says_what_was_left(stubbed):
    sagemaker, stub = stubbed
    stub.add_response("create_training_job", {"TrainingJobArn": "arn:0"})
    for _ in range(runner.LAUNCH_ATTEMPTS):
        stub.add_client_error(
            "create_training_job",
            "ResourceLimitExceeded",
            "The account-level service limit is 2 Instances",
            http_status_code=400,
        )
    delays = []
    outcome = runner.launch(sagemaker, requests_for(3), sleep=delays.append, report=lambda _: None)
    assert outcome.launched == ["psa-job-0"]
    assert outcome.not_launched == ["psa-job-1", "psa-job-2"]
    assert len(delays) == runner.LAUNCH_ATTEMPTS - 1
    assert max(delays) <= 60
    decisions = []
    summary = "\n".join(runner.summarize(decisions, outcome))
    assert "not launched 2 (ResourceLimitExceeded: The account-level service limit" in summary


def test_a_rejected_request_fails_that_job_only(stubbed):
    sagemaker, stub = stubbed
    stub.add_client_error("create_training_job", "ValidationException", "bad role")
    stub.add_response("create_training_job", {"TrainingJobArn": "arn:1"})
    outcome = runner.launch(sagemaker, requests_for(2), sleep=lambda _: None, report=lambda _: None)
    assert outcome.failed == [("psa-job-0", "ValidationException: bad role")]
    assert outcome.launched == ["psa-job-1"]


def test_the_runner_exits_nonzero_when_jobs_were_not_launched(aws, monkeypatch, capsys):
    def refuse(sagemaker, requests, **kwargs):
        return runner.Outcome([], [], [r["TrainingJobName"] for r in requests], "Quota: none")

    monkeypatch.setattr(runner_command, "launch", refuse)
    assert runner_command.main(GRID) == 1
    assert "not launched 1 (Quota: none)" in capsys.readouterr().out


def test_the_source_archive_is_reproducible_and_tracks_changes(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.py").write_text("print('hi')\n")
    first, second = build_bundle(source), build_bundle(source)
    assert first.data == second.data
    (source / "requirements.txt").write_text("rich\n")
    assert build_bundle(source).digest != first.digest


def test_the_archive_runs_train_py_with_its_own_copy_of_psa(tmp_path):
    with tarfile.open(fileobj=io.BytesIO(build_bundle(default_source_dir()).data)) as tar:
        tar.extractall(tmp_path, filter="data")
    check = (
        "import runpy, sys; sys.argv = ['train.py', '--help'];"
        "runpy.run_path('train.py', run_name='not-main');"
        "import psa, importlib.metadata as m; print(psa.__file__); print(m.version('psa'))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", check], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    location, version = done.stdout.split()
    assert location.startswith(str(tmp_path))
    assert version == psa.__version__
