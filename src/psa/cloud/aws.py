"""boto3 clients that retry through botocore, and AWS errors described in one line.

Clients honour the standard AWS environment (credentials, AWS_PROFILE, AWS_ENDPOINT_URL), so the
same commands run against AWS or a local endpoint. Throttling and transient failures are retried
by botocore itself (its "standard" retry mode: exponential backoff with jitter, capped at 20 s per
wait, RETRY_ATTEMPTS calls in all); the commands add no retry loops of their own.
"""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from psa.cloud.aws_setup import AwsSetup, require

RETRY_MODE = "standard"
RETRY_ATTEMPTS = 10  # the first call and up to nine retries
QUOTA_CODE = "ResourceLimitExceeded"
CREDENTIALS_HINT = (
    "configure credentials with `aws configure`, AWS_PROFILE, or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


def client_config() -> Config:
    return Config(retries={"mode": RETRY_MODE, "total_max_attempts": RETRY_ATTEMPTS})


def client(service: str, setup: AwsSetup):
    """A boto3 client in the configured region that retries throttled and failed calls."""
    require(setup, "region")
    return boto3.session.Session().client(service, region_name=setup.region, config=client_config())


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def describe_error(error: Exception) -> str:
    """One line saying what went wrong and, where it helps, what to do."""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return f"no usable AWS credentials: {CREDENTIALS_HINT}"
    if isinstance(error, ProfileNotFound):
        return f"{error}; check AWS_PROFILE"
    if isinstance(error, EndpointConnectionError):
        endpoint = error.kwargs.get("endpoint_url")
        return f"cannot reach {endpoint}: check the network, the region and AWS_ENDPOINT_URL"
    if isinstance(error, ClientError):
        operation = getattr(error, "operation_name", "the request")
        message = error.response.get("Error", {}).get("Message", "")
        code = error_code(error)
        if code in ("InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken"):
            return f"AWS rejected the credentials ({code}): {CREDENTIALS_HINT}"
        return f"AWS refused {operation}: {code}: {message}".rstrip(": ")
    return str(error)
