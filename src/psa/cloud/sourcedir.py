"""The job's source directory, as the PyTorch training image expects it: sourcedir.tar.gz on S3.

The archive holds aws/sagemaker/ (train.py, requirements.txt) plus a copy of the `psa` package and
a minimal ``psa-<version>.dist-info`` beside it. The image extracts it to /opt/ml/code, pip-installs
requirements.txt (only what the image lacks) and runs ``python train.py``; /opt/ml/code is then
the script's directory, so ``import psa`` and ``importlib.metadata.version("psa")`` work without
installing the package. The archive is byte-for-byte reproducible, so its content hash names its
S3 key and an unchanged tree is uploaded once.

It holds only what the job needs: in a git checkout the files git tracks (an untracked ``.env``
or ``*.tmp`` stays home), elsewhere (an installed package) the module and data files by suffix,
never a dotfile; and never a file reached by a symlink leading out of its folder.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

import psa
from psa.cloud.aws_setup import AwsSetup, SetupError

ENTRY_POINT = "train.py"
# What an installed package's folder contributes: its modules and data files, by suffix.
PACKED_SUFFIXES = (".py", ".pyi", ".typed", ".json", ".txt")
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


def tracked_files(folder: Path) -> list[str] | None:
    """The files git tracks under ``folder`` (paths relative to it), or None outside a git
    checkout or without git. ``git ls-files`` reads the index only: no network."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(folder), "ls-files", "-z", "--", "."],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None
    return [name for name in os.fsdecode(listed.stdout).split("\0") if name]


def files_by_suffix(folder: Path) -> list[str]:
    """The module and data files under ``folder`` (paths relative to it), by suffix; no dot
    folder, __pycache__ or folder reached by a symlink is entered."""
    names = []
    for parent, folders, files in os.walk(folder):  # symlinked folders are not entered
        folders[:] = [
            name for name in folders if not name.startswith(".") and name != "__pycache__"
        ]
        base = Path(parent).relative_to(folder)
        names += [
            (base / name).as_posix() for name in files if Path(name).suffix in PACKED_SUFFIXES
        ]
    return names


def packed_files(folder: Path, marker: str) -> list[tuple[str, Path]]:
    """(name relative to ``folder``, path) of the files of ``folder`` the archive holds, sorted:
    those git tracks when ``folder`` is part of a checkout that tracks its ``marker`` file, or
    else those files_by_suffix finds; never a dotfile, and a symlink only to a file inside
    ``folder``."""
    root = folder.resolve()
    tracked = tracked_files(root)
    names = tracked if tracked is not None and marker in tracked else files_by_suffix(root)
    return [
        (name, root / name)
        for name in sorted(names)
        if not any(part.startswith(".") for part in Path(name).parts)
        and _file_inside(root / name, root)
    ]


def _file_inside(path: Path, root: Path) -> bool:
    try:
        return path.is_file() and path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _package_files(package_dir: Path) -> list[tuple[str, bytes]]:
    return [
        (f"psa/{name}", path.read_bytes())
        for name, path in packed_files(package_dir, "__init__.py")
    ]


def _source_files(source_dir: Path) -> list[tuple[str, bytes]]:
    if not (source_dir / ENTRY_POINT).is_file():
        raise SetupError(
            f"{source_dir} has no {ENTRY_POINT}: pass --source-dir pointing at aws/sagemaker"
        )
    return [
        (name, path.read_bytes())
        for name, path in packed_files(source_dir, ENTRY_POINT)
        if "/" not in name  # the entry files only, as the image runs them from its top
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
