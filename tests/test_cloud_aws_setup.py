import argparse

import pytest

from cloud_support import BUCKET, isolated_aws_env
from command_support import refusal
from psa.cloud.aws_setup import SetupError, require
from psa.commands.sagemaker_flags import add_setup_flags, setup_of

ALL = (
    "role",
    "account_id",
    "region",
    "bucket",
    "prefix",
    "instance_type",
    "use_spot",
    "max_run_seconds",
    "max_wait_seconds",
    "price_per_hour",
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    isolated_aws_env(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    return tmp_path


def parse(argv):
    parser = argparse.ArgumentParser()
    add_setup_flags(parser, ALL)
    return parser.parse_args(argv)


def test_dotenv_in_the_working_directory_is_read(clean_env):
    (clean_env / ".env").write_text(
        "S3_BUCKET_NAME=from-dotenv\nUSE_SPOT_INSTANCES=true\nMAX_RUN_SECONDS=3600\n"
    )
    setup = setup_of(parse([]))
    assert setup.bucket == "from-dotenv"
    assert setup.use_spot is True
    assert setup.max_run_seconds == 3600


def test_environment_overrides_dotenv_and_flags_override_both(clean_env, monkeypatch):
    (clean_env / ".env").write_text("S3_BUCKET_NAME=a\nS3_PREFIX=p1\nINSTANCE_TYPE=ml.m5.large\n")
    monkeypatch.setenv("S3_BUCKET_NAME", "b")
    monkeypatch.setenv("S3_PREFIX", "p2")
    setup = setup_of(parse(["--prefix", "p3", "--no-spot"]))
    assert (setup.bucket, setup.prefix, setup.instance_type) == ("b", "p3", "ml.m5.large")
    assert setup.use_spot is False


def test_region_falls_back_to_aws_default_region(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert setup_of(parse([])).region == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert setup_of(parse([])).region == "us-west-2"


def test_an_explicit_env_file_must_exist(clean_env, capsys):
    with pytest.raises(SystemExit) as refused:  # a usage error, before any setting is read
        parse(["--env-file", "missing.env"])
    assert refused.value.code == 2
    assert "--env-file: missing.env does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("USE_SPOT_INSTANCES=maybe", "USE_SPOT_INSTANCES must be true or false"),
        ("MAX_RUN_SECONDS=two days", "MAX_RUN_SECONDS must be a whole number"),
        ("PRICE_PER_HOUR=cheap", "PRICE_PER_HOUR must be a number"),
        ("MAX_RUN_SECONDS=0", "MAX_RUN_SECONDS must be positive"),
        ("JOB_NAME_PREFIX=psa_jobs", "JOB_NAME_PREFIX"),
        ("S3_PREFIX=/psa/", "S3_PREFIX"),
        ("MAX_RUN_SECONDS=100\nMAX_WAIT_SECONDS=50", "MAX_WAIT_SECONDS \\(50\\) must be at least"),
    ],
)
def test_malformed_values_are_named(clean_env, line, message):
    (clean_env / ".env").write_text(line + "\n")
    with pytest.raises(SetupError, match=message):
        setup_of(parse([]))


def test_require_names_every_missing_setting_at_once(clean_env):
    setup = setup_of(parse(["--bucket", BUCKET]))
    with pytest.raises(SetupError) as caught:
        require(setup, "role", "region", "bucket")
    message = str(caught.value)
    assert "AWS_SAGEMAKER_ROLE (or --role)" in message
    assert "AWS_REGION (or --region)" in message
    assert "S3_BUCKET_NAME" not in message
    assert "aws/sagemaker/.env.example" in message


def test_a_role_name_becomes_an_arn_with_the_account(clean_env):
    setup = setup_of(parse(["--role", "Runner", "--account-id", "111122223333"]))
    assert setup.role_arn == "arn:aws:iam::111122223333:role/Runner"
    arn = "arn:aws:iam::1:role/x"
    assert setup_of(parse(["--role", arn])).role_arn == arn
    with pytest.raises(SetupError, match="AWS_ACCOUNT_ID"):
        setup_of(parse(["--role", "Runner"])).role_arn  # noqa: B018


def test_a_command_without_settings_exits_with_one_line(clean_env, capsys):
    message = refusal(capsys, "sagemaker-estimate-storage", [])[1]
    assert message.startswith("sagemaker-estimate-storage: missing settings: ")
    assert "AWS_REGION" in message and "S3_BUCKET_NAME" in message


def test_missing_credentials_exit_with_one_line(monkeypatch, tmp_path, capsys):
    isolated_aws_env(monkeypatch, tmp_path, credentials=False)
    message = refusal(capsys, "sagemaker-estimate-storage", ["--bucket", BUCKET])[1]
    assert message.startswith("sagemaker-estimate-storage: no usable AWS credentials")
    assert "aws configure" in message
