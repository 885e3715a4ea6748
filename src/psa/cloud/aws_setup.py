"""The AWS setup of the SageMaker commands (role, region, bucket, job prefix, instance, prices):
defaults, then a .env file, then the environment, then command-line flags.

The .env file is ``--env-file`` if given, else ``.env`` in the current directory (the repo root,
where the commands are documented to run). Real environment variables override it, as
python-dotenv does by default, and flags override both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from psa.errors import PsaError

ENV_EXAMPLE = "aws/sagemaker/.env.example"


class SetupError(PsaError, ValueError):
    """A missing or malformed AWS setting; the message says which and how to set it."""


@dataclass(frozen=True)
class AwsSetup:
    role: str | None = None
    account_id: str | None = None
    region: str | None = None
    bucket: str | None = None
    prefix: str = "psa-experiment"
    job_prefix: str = "psa"
    instance_type: str = "ml.g4dn.xlarge"
    use_spot: bool = False
    max_run_seconds: int = 172_800
    max_wait_seconds: int | None = None
    volume_size_gb: int = 30
    image_uri: str | None = None
    price_per_hour: float | None = None
    s3_price_per_gb_month: float = 0.023

    @property
    def role_arn(self) -> str | None:
        """The execution role as an ARN; a bare role name needs AWS_ACCOUNT_ID."""
        if self.role is None or self.role.startswith("arn:"):
            return self.role
        if not self.account_id:
            raise SetupError(
                f"AWS_SAGEMAKER_ROLE {self.role!r} is a role name, not an ARN: set AWS_ACCOUNT_ID "
                f"as well, or give the full arn:aws:iam::<account>:role/<name>"
            )
        return f"arn:aws:iam::{self.account_id}:role/{self.role}"

    @property
    def s3_root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class Field:
    name: str  # AwsSetup attribute
    variable: str  # .env / environment name
    flag: str  # command-line flag
    kind: type
    help: str


FIELDS = (
    Field("role", "AWS_SAGEMAKER_ROLE", "--role", str, "SageMaker execution role ARN or name"),
    Field("account_id", "AWS_ACCOUNT_ID", "--account-id", str, "AWS account id"),
    Field("region", "AWS_REGION", "--region", str, "AWS region"),
    Field("bucket", "S3_BUCKET_NAME", "--bucket", str, "S3 bucket for code, data and outputs"),
    Field("prefix", "S3_PREFIX", "--prefix", str, "key prefix inside the bucket"),
    Field("job_prefix", "JOB_NAME_PREFIX", "--job-prefix", str, "first word of every job name"),
    Field("instance_type", "INSTANCE_TYPE", "--instance-type", str, "training instance type"),
    Field("use_spot", "USE_SPOT_INSTANCES", "--spot", bool, "managed spot training"),
    Field("max_run_seconds", "MAX_RUN_SECONDS", "--max-run-seconds", int, "job run-time cap"),
    Field("max_wait_seconds", "MAX_WAIT_SECONDS", "--max-wait-seconds", int, "spot wait+run cap"),
    Field("volume_size_gb", "VOLUME_SIZE_GB", "--volume-size-gb", int, "instance volume size"),
    Field("image_uri", "TRAINING_IMAGE_URI", "--image-uri", str, "training image URI"),
    Field("price_per_hour", "PRICE_PER_HOUR", "--price-per-hour", float, "USD per instance-hour"),
    Field(
        "s3_price_per_gb_month",
        "S3_PRICE_PER_GB_MONTH",
        "--s3-price-per-gb-month",
        float,
        "USD per GB-month of S3 storage",
    ),
)
BY_NAME = {field.name: field for field in FIELDS}
_VARIABLES = (*(field.variable for field in FIELDS), "AWS_DEFAULT_REGION")
DEFAULTS = AwsSetup()
_JOB_PREFIX = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,9}$")


def load_setup(
    flags: Mapping[str, object],
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> AwsSetup:
    """Resolve the setup of one command run from the values of its flags (a field name -> its
    value, None where not given); raise SetupError on a malformed value."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str | None] = {}
    if env_file is not None:
        if not Path(env_file).is_file():
            raise SetupError(f"settings file {env_file} does not exist")
        raw.update(dotenv_values(env_file))
    elif Path(".env").is_file():
        raw.update(dotenv_values(".env"))
    raw.update({name: environ[name] for name in _VARIABLES if name in environ})

    values = {}
    for field in FIELDS:
        flag_value = flags.get(field.name)
        if flag_value is not None:
            values[field.name] = flag_value
            continue
        text = raw.get(field.variable)
        if field.name == "region" and not text:
            text = raw.get("AWS_DEFAULT_REGION")
        if text is None or not text.strip():
            continue
        values[field.name] = _convert(field, text.strip())
    setup = AwsSetup(**values)
    _validate(setup)
    return setup


def _convert(field: Field, text: str) -> str | int | float | bool:
    if field.kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise SetupError(f"{field.variable} must be true or false, not {text!r}")
    try:
        value = field.kind(text)
    except ValueError:
        noun = "a whole number" if field.kind is int else "a number"
        raise SetupError(f"{field.variable} must be {noun}, not {text!r}") from None
    return value


def _validate(setup: AwsSetup) -> None:
    if not _JOB_PREFIX.match(setup.job_prefix):
        raise SetupError(
            f"JOB_NAME_PREFIX {setup.job_prefix!r} must be 1-10 letters, digits or hyphens, "
            f"starting with a letter or digit"
        )
    for name in ("max_run_seconds", "volume_size_gb"):
        if getattr(setup, name) <= 0:
            raise SetupError(f"{BY_NAME[name].variable} must be positive")
    wait = setup.max_wait_seconds
    if wait is not None and wait < setup.max_run_seconds:
        raise SetupError(
            f"MAX_WAIT_SECONDS ({wait}) must be at least MAX_RUN_SECONDS "
            f"({setup.max_run_seconds}): SageMaker counts the spot wait inside it"
        )
    for name in ("price_per_hour", "s3_price_per_gb_month"):
        value = getattr(setup, name)
        if value is not None and value < 0:
            raise SetupError(f"{BY_NAME[name].variable} must not be negative")
    if setup.prefix != setup.prefix.strip("/") or not setup.prefix:
        raise SetupError(
            f"S3_PREFIX {setup.prefix!r} must be non-empty without leading or trailing '/'"
        )


def require(setup: AwsSetup, *names: str) -> None:
    """Raise one SetupError naming every missing setting of this command."""
    missing = [BY_NAME[name] for name in names if getattr(setup, name) in (None, "")]
    if missing:
        listed = ", ".join(f"{f.variable} (or {f.flag})" for f in missing)
        raise SetupError(
            f"missing settings: {listed}; put them in .env (see {ENV_EXAMPLE}) or pass the flags"
        )
