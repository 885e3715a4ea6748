"""Helpers shared by the tests of psa.cloud: an isolated AWS environment and fake job outputs."""

from __future__ import annotations

import io
import json
import tarfile

from botocore.awsrequest import AWSResponse

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "psa-test-bucket"
PREFIX = "psa-experiment"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/psa-test"

# Settings and credentials the tests control; anything else from the developer's shell is dropped.
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_SAGEMAKER_ROLE",
    "AWS_ACCOUNT_ID",
    "S3_BUCKET_NAME",
    "S3_PREFIX",
    "JOB_NAME_PREFIX",
    "INSTANCE_TYPE",
    "USE_SPOT_INSTANCES",
    "MAX_RUN_SECONDS",
    "MAX_WAIT_SECONDS",
    "VOLUME_SIZE_GB",
    "TRAINING_IMAGE_URI",
    "PRICE_PER_HOUR",
    "S3_PRICE_PER_GB_MONTH",
)


def isolated_aws_env(monkeypatch, tmp_path, credentials: bool = True, **settings: str) -> None:
    """Dummy credentials (or none), no config files, no instance metadata; cwd = tmp_path."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    if credentials:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)


def stand_in_dataset(monkeypatch, tmp_path) -> None:
    """MNIST file names with tiny contents, where the runner looks for the dataset to upload."""
    from psa.cloud.sourcedir import MNIST_FILES
    from psa.commands import sagemaker_runner as runner

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for name in MNIST_FILES:
        (dataset / name).write_bytes(b"tiny stand-in")
    monkeypatch.setattr(runner, "default_dataset_dir", lambda: dataset)


def model_tar(files: dict[str, bytes | str]) -> bytes:
    """A model.tar.gz as SageMaker packs /opt/ml/model (members relative, no leading ./)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


class _Body(io.BytesIO):
    """A raw HTTP body as botocore reads it: whole (``stream``) or streamed (``read``)."""

    def stream(self, **_):
        yield self.getvalue()


class ScriptedHttp:
    """Answers a client's HTTP requests in turn from (status, headers, body) answers.

    It stands in for the network only: botocore still signs, retries (its retry configuration and
    waits), parses and raises exactly as it would against AWS. ``sent`` counts the requests.
    """

    def __init__(self, client, answers):
        self.answers = list(answers)
        self.sent: list[str] = []
        client.meta.events.register_first("before-send", self)

    def __call__(self, request, **_):
        if len(self.sent) == len(self.answers):
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        self.sent.append(request.url)
        return http_response(request.url, *self.answers[len(self.sent) - 1])


def http_response(url: str, status: int, headers: dict, body: bytes) -> AWSResponse:
    """What botocore gets back from the network; a before-send handler may return it."""
    return AWSResponse(url, status, headers, _Body(body))


def json_answer(status: int, content: dict) -> tuple[int, dict, bytes]:
    """An answer of a JSON-protocol service (SageMaker, CloudWatch Logs)."""
    return status, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(content).encode()


def throttled() -> tuple[int, dict, bytes]:
    return json_answer(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
