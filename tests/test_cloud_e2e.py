"""The SageMaker commands, run as a user runs them, against a local AWS endpoint (moto server).

The commands run in subprocesses and learn about the endpoint only from the environment
(AWS_ENDPOINT_URL, dummy credentials, the region); the test plays the part of the training job
by writing its output and log lines to the same endpoint.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from moto.backends import get_backend
from moto.server import ThreadedMotoServer

from cloud_support import (
    ACCOUNT,
    BUCKET,
    PREFIX,
    REGION,
    ROLE,
    jsonl,
    model_tar,
)
from psa.cloud.sourcedir import MNIST_FILES
from schemas import loop_record, trial_record

BIN = Path(sys.executable).parent
GRID = ["--arch", "[2*8]", "--modes", "none,full", "--trials", "2", "--meta-loops", "2"]


@pytest.fixture
def endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def run(command, *args, env, cwd):
    done = subprocess.run(
        [str(BIN / command), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_launch_collect_logs_cost_and_storage_through_a_local_endpoint(endpoint, tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SAGEMAKER_ROLE": ROLE,
        "S3_BUCKET_NAME": BUCKET,
        "S3_PREFIX": PREFIX,
        "PRICE_PER_HOUR": "0.7364",
    }
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for name in MNIST_FILES:
        (dataset / name).write_bytes(b"stand-in")
    aws = {"endpoint_url": endpoint, "region_name": REGION}
    s3 = boto3.client("s3", aws_access_key_id="testing", aws_secret_access_key="testing", **aws)
    s3.create_bucket(Bucket=BUCKET)

    launched = run("sagemaker-runner", *GRID, "--dataset-dir", str(dataset), env=env, cwd=tmp_path)
    [job] = [line.split()[1] for line in launched.splitlines() if line.startswith("launched psa-")]

    # The job's part: model.tar.gz, log lines (as psa.commands.sagemaker_job echoes them) and
    # billing.
    records = [trial_record("2*8", m, t, 90.0 + t) for m in ("none", "full") for t in (1, 2)]
    loops = [loop_record("2*8", "none", 1, k, 80.0 + k, 80.0 + k) for k in (1, 2)]
    output = {"trials.jsonl": jsonl(records), "logs/2x8/none-t1.jsonl": jsonl(loops)}
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{job}/output/model.tar.gz", Body=model_tar(output))
    logs = boto3.client("logs", aws_access_key_id="testing", aws_secret_access_key="testing", **aws)
    group, stream = "/aws/sagemaker/TrainingJobs", f"{job}/algo-1-1700000000"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    lines = [json.dumps(record) for record in [*loops, *records]]
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    backend_job = get_backend("sagemaker")[ACCOUNT][REGION].training_jobs[job]
    backend_job.training_time_in_seconds = backend_job.billable_time_in_seconds = 1800

    again = run("sagemaker-runner", *GRID, "--dataset-dir", str(dataset), env=env, cwd=tmp_path)
    assert f"skipped  {job} (Completed)" in again and "launched 0" in again

    run("sagemaker-results-parser", *GRID, "--output-dir", "collected", env=env, cwd=tmp_path)
    summary = (tmp_path / "collected" / "psa_resmlp_summary.md").read_text()
    stats = "Mean=91.50% | Std=0.50% | Min=91.00% | Max=92.00% (n=2)"
    # Both modes of the grid have their two trials; every other mode says it has none.
    assert [line for line in summary.splitlines() if line.startswith("* ")] == [
        f"* None: {stats}",
        "* Decay: NO_RESULTS",
        "* Dropout: NO_RESULTS",
        f"* Full: {stats}",
        "* Hidden: NO_RESULTS",
        "* Output: NO_RESULTS",
    ]

    run("sagemaker-get-training-logs", "--output-dir", "cw", env=env, cwd=tmp_path)
    assert (tmp_path / "cw" / job / "algo-1-1700000000.log").is_file()
    run("sagemaker-logs-parser", "--logs-dir", "cw", "--output-dir", "loops", env=env, cwd=tmp_path)
    table = (tmp_path / "loops" / "psa_resmlp_trials_convergence.md").read_text().splitlines()
    assert "| 2x8 | none | 1 | 81.00 | 82.00 | 90.50 |" in table

    costs = run("sagemaker-cost-estimator", "--output", "cost.json", env=env, cwd=tmp_path)
    assert json.loads((tmp_path / "cost.json").read_text())["metadata"]["total_cost"] == 0.3682
    assert job in costs

    storage = run("sagemaker-estimate-storage", "--detailed", env=env, cwd=tmp_path)
    assert job in storage and "source" in storage and "dataset" in storage
