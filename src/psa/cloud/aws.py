"""boto3 clients, bounded backoff, and one-line errors for the SageMaker commands.

Clients honour the standard AWS environment (credentials, AWS_PROFILE, AWS_ENDPOINT_URL), so the
same commands run against AWS or a local endpoint.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from psa.cloud.settings import Settings, SettingsError, require

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
QUOTA_CODE = "ResourceLimitExceeded"
CREDENTIALS_HINT = (
    "configure credentials with `aws configure`, AWS_PROFILE, or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


def client(service: str, settings: Settings):
    """A boto3 client in the configured region; botocore's own retries stay short."""
    require(settings, "region")
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session().client(service, region_name=settings.region, config=config)


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def with_backoff(
    call: Callable[[], T],
    *,
    codes: frozenset[str] = THROTTLING_CODES,
    attempts: int = 5,
    base_delay: float = 2.0,
    max_delay: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call, retrying the given error codes with exponential backoff; re-raise after `attempts`."""
    for attempt in range(attempts):
        try:
            return call()
        except ClientError as error:
            if error_code(error) not in codes or attempt == attempts - 1:
                raise
            sleep(min(max_delay, base_delay * 2**attempt))
    raise AssertionError("unreachable")


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


def cli_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Turn settings and AWS errors raised by a command into `prog: message` and exit status 1."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapped(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except SettingsError as error:
                sys.exit(f"{prog}: {error}")
            except (BotoCoreError, ClientError) as error:
                sys.exit(f"{prog}: {describe_error(error)}")

        return wrapped

    return decorate
