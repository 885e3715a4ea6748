import json

import boto3
import pytest
from moto import mock_aws
from moto.backends import get_backend

from cloud_support import ACCOUNT, BUCKET, PREFIX, REGION, ROLE, isolated_aws_env
from command_support import refusal
from psa.commands import sagemaker_cost as cost
from psa.commands import sagemaker_storage as storage


def create_job(sagemaker, name, hyperparameters, instance_type="ml.g4dn.xlarge", spot=False):
    sagemaker.create_training_job(
        TrainingJobName=name,
        RoleArn=ROLE,
        HyperParameters={key: json.dumps(value) for key, value in hyperparameters.items()},
        AlgorithmSpecification={"TrainingImage": "image", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/{PREFIX}"},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 86400},
        EnableManagedSpotTraining=spot,
    )


def bill(name, training, billable, status="Completed"):
    job = get_backend("sagemaker")[ACCOUNT][REGION].training_jobs[name]
    job.training_time_in_seconds = training
    job.billable_time_in_seconds = billable
    job.training_job_status = status


@pytest.fixture
def sagemaker(monkeypatch, tmp_path):
    isolated_aws_env(monkeypatch, tmp_path, PRICE_PER_HOUR="0.7364")
    with mock_aws():
        yield boto3.client("sagemaker", region_name=REGION)


def test_cost_is_billable_hours_times_price_and_spot_savings_are_shown(sagemaker, tmp_path):
    create_job(
        sagemaker,
        "psa-4x17-all-aaaa",
        {"arch": "[4*17]", "modes": "none,decay,dropout,full,hidden,output"},
    )
    create_job(sagemaker, "psa-2x8-full-bbbb", {"arch": "[2*8]", "modes": "full"}, spot=True)
    create_job(sagemaker, "psa-1x4-all-cccc", {"arch": "[1*4]"})
    create_job(sagemaker, "someone-elses-job", {})
    bill("psa-4x17-all-aaaa", 7200, 7200)
    bill("psa-2x8-full-bbbb", 3600, 900)  # spot: billed a quarter of the training time
    bill("psa-1x4-all-cccc", None, None, status="InProgress")

    assert cost.main(["--output", "report.json"]) == 0

    report = json.loads((tmp_path / "report.json").read_text())
    jobs = {job["name"]: job for job in report["jobs"]}
    assert set(jobs) == {"psa-4x17-all-aaaa", "psa-2x8-full-bbbb", "psa-1x4-all-cccc"}
    assert jobs["psa-4x17-all-aaaa"]["cost"] == pytest.approx(2 * 0.7364)
    assert jobs["psa-2x8-full-bbbb"]["cost"] == pytest.approx(0.25 * 0.7364)
    assert jobs["psa-2x8-full-bbbb"]["on_demand_cost"] == pytest.approx(0.7364)
    assert jobs["psa-1x4-all-cccc"]["cost"] is None
    assert jobs["psa-1x4-all-cccc"]["note"] == "no billing data yet"
    meta = report["metadata"]
    assert meta["total_cost"] == pytest.approx(2.25 * 0.7364)
    assert meta["spot_savings"] == pytest.approx(0.75 * 0.7364)
    assert meta["billed_jobs"] == 2 and meta["total_jobs"] == 3
    assert meta["longest_job"] == "psa-4x17-all-aaaa"
    assert set(report["breakdown"]["modes"]) == {"all", "full", "?"}
    assert report["breakdown"]["arch"]["2*8"]["cost"] == pytest.approx(0.25 * 0.7364)


def test_no_jobs_yet_still_writes_an_empty_report(sagemaker, tmp_path, capsys):
    create_job(sagemaker, "someone-elses-job", {})
    assert cost.main(["--output", "report.json"]) == 0
    assert "no training jobs named psa-" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["jobs"] == []
    assert report["metadata"]["total_jobs"] == 0 and report["metadata"]["total_cost"] == 0


def test_a_jobs_file_selects_jobs_and_unknown_ones_are_listed(sagemaker, tmp_path, capsys):
    create_job(sagemaker, "psa-a", {"arch": "[4*4]", "ablation-mode": "hidden"}, "ml.m5.large")
    bill("psa-a", 3600, 3600)
    (tmp_path / "jobs.txt").write_text("# upstream jobs\npsa-a\npsa-gone\n")
    assert cost.main(["--jobs-file", "jobs.txt", "--price", "ml.m5.large=0.115"]) == 0
    captured = capsys.readouterr()
    assert "no such job" in captured.out
    assert "$0.12" in captured.out  # 1 h x 0.115
    assert "hidden 1 job(s)" in captured.out
    assert "sagemaker-cost-estimator: 2/2 jobs described" in captured.err.splitlines()
    assert "jobs described" not in captured.out


def test_an_instance_type_without_a_price_is_not_guessed(sagemaker, capsys):
    create_job(sagemaker, "psa-a", {"arch": "[4*4]"}, "ml.p3.2xlarge")
    bill("psa-a", 3600, 3600)
    cost.main([])
    assert "no price for ml.p3.2xlarge (pass --price ml.p3.2xlarge=USD)" in capsys.readouterr().out


def test_no_price_at_all_is_a_settings_error(monkeypatch, tmp_path, capsys):
    isolated_aws_env(monkeypatch, tmp_path)
    assert "PRICE_PER_HOUR" in refusal(capsys, "sagemaker-cost-estimator", [])[1]


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    isolated_aws_env(monkeypatch, tmp_path, S3_BUCKET_NAME=BUCKET, S3_PREFIX=PREFIX)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield s3


def test_storage_of_an_empty_prefix_is_zero_not_a_crash(bucket, capsys):
    assert storage.main(["--output", "storage.json"]) == 0
    assert "no objects under" in capsys.readouterr().out


def test_storage_is_tallied_by_folder_and_type(bucket, tmp_path, capsys):
    objects = {
        "psa-4x17-all-aaaa/output/model.tar.gz": 1000,
        "psa-4x17-all-aaaa/output/failure": 10,
        "checkpoints/psa-4x17-all-aaaa/sweep/trials.jsonl": 200,
        "source/abc/sourcedir.tar.gz": 300,
    }
    for key, size in objects.items():
        bucket.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=b"x" * size)
    bucket.put_object(Bucket=BUCKET, Key="elsewhere/big.bin", Body=b"x" * 5000)

    assert storage.main(["--detailed", "--output", "storage.json"]) == 0

    report = json.loads((tmp_path / "storage.json").read_text())
    assert report["bytes"] == 1510 and report["objects"] == 4
    assert report["folders"]["psa-4x17-all-aaaa"]["bytes"] == 1010
    assert report["types"][".tar.gz"] == {"objects": 2, "bytes": 1300}
    assert report["types"]["other"]["bytes"] == 10
    assert report["monthly_cost"] == pytest.approx(1510 / 1024**3 * 0.023)
    assert "checkpoints" in capsys.readouterr().out
