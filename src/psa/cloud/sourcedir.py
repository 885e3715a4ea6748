"""The job's source directory, as the PyTorch training image expects it: sourcedir.tar.gz on S3.

The archive holds aws/sagemaker/ (train.py, requirements.txt) plus a copy of the `psa` package and
a minimal ``psa-<version>.dist-info`` beside it. The image extracts it to /opt/ml/code, pip-installs
requirements.txt (only what the image lacks) and runs ``python train.py``; /opt/ml/code is then
the script's directory, so ``import psa`` and ``importlib.metadata.version("psa")`` work without
installing the package. The archive is byte-for-byte reproducible, so its content hash names its
S3 key and an unchanged tree is uploaded once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

import psa
from psa.cloud.aws_setup import AwsSetup, SetupError

ENTRY_POINT = "train.py"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def checkout_root() -> Path:
    return Path(psa.__file__).resolve().parents[2]


def default_source_dir() -> Path:
    return checkout_root() / "aws" / "sagemaker"


def default_dataset_dir() -> Path:
    return checkout_root() / "dataset"


@dataclass(frozen=True)
class Bundle:
    data: bytes
    files: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def key(self, prefix: str) -> str:
        return f"{prefix}/source/{self.digest[:16]}/sourcedir.tar.gz"


def _package_files(package_dir: Path) -> list[tuple[str, bytes]]:
    return [
        (f"psa/{path.relative_to(package_dir).as_posix()}", path.read_bytes())
        for path in sorted(package_dir.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def _source_files(source_dir: Path) -> list[tuple[str, bytes]]:
    if not (source_dir / ENTRY_POINT).is_file():
        raise SetupError(
            f"{source_dir} has no {ENTRY_POINT}: pass --source-dir pointing at aws/sagemaker"
        )
    return [
        (path.name, path.read_bytes())
        for path in sorted(source_dir.iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]


def build_bundle(source_dir: Path, package_dir: Path | None = None) -> Bundle:
    """sourcedir.tar.gz of the entry files and the package, reproducible to the byte."""
    package_dir = package_dir or Path(psa.__file__).resolve().parent
    metadata = f"Metadata-Version: 2.1\nName: psa\nVersion: {psa.__version__}\n".encode()
    entries = [
        *_source_files(source_dir),
        *_package_files(package_dir),
        (f"psa-{psa.__version__}.dist-info/METADATA", metadata),
    ]
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.USTAR_FORMAT) as archive,
    ):
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(content))
    return Bundle(buffer.getvalue(), tuple(name for name, _ in entries))


def _exists_with_size(s3, bucket: str, key: str, size: int) -> bool:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return head["ContentLength"] == size


def upload_bundle(s3, setup: AwsSetup, bundle: Bundle) -> str:
    """Upload the bundle unless the same bytes are there; return its s3:// URI."""
    key = bundle.key(setup.prefix)
    if not _exists_with_size(s3, setup.bucket, key, len(bundle.data)):
        s3.put_object(Bucket=setup.bucket, Key=key, Body=bundle.data)
    return f"s3://{setup.bucket}/{key}"


def dataset_files(dataset_dir: Path) -> list[Path]:
    paths = [dataset_dir / name for name in MNIST_FILES]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise SetupError(
            f"{dataset_dir} lacks {', '.join(missing)}: pass --dataset-dir pointing at the "
            f"folder with the four MNIST .gz files (the repo's dataset/)"
        )
    return paths


def dataset_uri(setup: AwsSetup) -> str:
    return f"s3://{setup.bucket}/{setup.prefix}/dataset/"


def upload_dataset(s3, setup: AwsSetup, dataset_dir: Path) -> str:
    """Upload the MNIST files once (same name and size = already there); return the channel URI."""
    for path in dataset_files(dataset_dir):
        key = f"{setup.prefix}/dataset/{path.name}"
        if not _exists_with_size(s3, setup.bucket, key, path.stat().st_size):
            s3.put_object(Bucket=setup.bucket, Key=key, Body=path.read_bytes())
    return dataset_uri(setup)
