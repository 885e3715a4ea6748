import time

import pytest

from cloud_support import REGION, ScriptedHttp, isolated_aws_env, json_answer, throttled
from command_support import refusal
from psa.cloud import aws
from psa.cloud.aws_setup import AwsSetup
from psa.commands import sagemaker_cost as cost

COMPLETED = json_answer(200, {"TrainingJobName": "psa-x", "TrainingJobStatus": "Completed"})


@pytest.fixture
def waits(monkeypatch, tmp_path):
    """botocore's waits between attempts, recorded instead of slept."""
    isolated_aws_env(monkeypatch, tmp_path)
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def test_a_throttled_call_is_retried_by_botocore_with_growing_waits(waits):
    sagemaker = aws.client("sagemaker", AwsSetup(region=REGION))
    http = ScriptedHttp(sagemaker, [throttled(), throttled(), COMPLETED])
    described = sagemaker.describe_training_job(TrainingJobName="psa-x")
    assert described["TrainingJobStatus"] == "Completed"
    assert len(http.sent) == 3
    # botocore's standard mode: a random share of 1 s, then of 2 s.
    assert len(waits) == 2
    assert 0 <= waits[0] <= 1 and 0 <= waits[1] <= 2


def test_a_throttle_that_outlasts_every_retry_ends_the_command_in_one_line(
    waits, monkeypatch, capsys
):
    scripted = []

    def throttled_client(service, settings):
        made = aws.client(service, settings)
        scripted.append(ScriptedHttp(made, [throttled()] * aws.RETRY_ATTEMPTS))
        return made

    monkeypatch.setattr(cost, "client", throttled_client)
    argv = ["--job", "psa-x", "--price-per-hour", "1", "--region", REGION]
    assert refusal(capsys, "sagemaker-cost-estimator", argv)[1] == (
        "sagemaker-cost-estimator: AWS refused DescribeTrainingJob: "
        "ThrottlingException: Rate exceeded"
    )
    assert len(scripted[0].sent) == aws.RETRY_ATTEMPTS
    assert len(waits) == aws.RETRY_ATTEMPTS - 1
