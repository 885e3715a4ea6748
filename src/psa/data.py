"""MNIST for PSA: the shipped files, their verification, the seed-1337 split and device tensors.

The project ships the four IDX files gzip-compressed in ``dataset/``. On first use they are
decompressed into torchvision's standard layout (``<data_dir>/MNIST/raw/<name>``), checked
against the SHA-256 below, and only then read: an IDX file is a short big-endian header and
the raw bytes, which numpy reads directly. MNIST is never downloaded: a data dir that holds
neither the shipped nor the raw files is refused in one line that says where to put them. A small
stamp file remembers the size, inode and modification time of each verified file so later runs
skip re-hashing 47 MB; any rewrite of a file changes its stamp and triggers a full check again.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import psa
from psa.atomic import write_atomically
from psa.errors import PsaError

# The uncompressed IDX files: size in bytes and SHA-256 (see the MNIST README shipped with them).
MNIST_FILES = {
    "train-images-idx3-ubyte": (
        47_040_016,
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": (
        60_008,
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": (
        7_840_016,
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": (
        10_008,
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

MEAN, STD = 0.1307, 0.3081
SPLIT_SEED = 1337
TRAIN_SIZE, VALIDATION_SIZE = 50_000, 10_000
NUM_CLASSES = 10
STAMP_NAME = ".psa-verified.json"
_IDX_UBYTE = 0x800
_CHUNK = 1 << 20


class DatasetError(PsaError):
    """MNIST is missing, corrupted or cannot be prepared; the message says what to do."""


@dataclass(frozen=True)
class MnistSplits:
    """Normalised images [N, 784] float32 and labels [N] int64, all resident on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class DatasetStats:
    """Class balance of one set; ZeroR always predicts its most frequent class."""

    name: str
    total_samples: int
    class_counts: dict[int, int]
    class_percentages: dict[int, float]
    zeror_accuracy: float
    zeror_class: int


@dataclass(frozen=True)
class MNISTAnalysis:
    full_train: DatasetStats
    full_test: DatasetStats
    split_train: DatasetStats
    split_validation: DatasetStats


def default_data_dir() -> Path:
    """``$SM_CHANNEL_TRAINING`` (SageMaker), else the checkout's dataset/, else ./dataset."""
    channel = os.environ.get("SM_CHANNEL_TRAINING")
    if channel:
        return Path(channel)
    checkout = Path(psa.__file__).resolve().parents[2] / "dataset"
    if any((checkout / f"{name}.gz").is_file() for name in MNIST_FILES):
        return checkout
    return Path("dataset")


def raw_dir(data_dir: str | Path) -> Path:
    """Where torchvision expects the uncompressed files."""
    return Path(data_dir) / "MNIST" / "raw"


def materialise(data_dir: str | Path) -> Path:
    """Make the four verified raw files exist under ``<data_dir>/MNIST/raw``; return data_dir.

    Raises DatasetError naming the file at fault and what to do about it.
    """
    data_dir = Path(data_dir)
    raw = raw_dir(data_dir)
    stamp = _read_stamp(raw)
    if all(_stamped(stamp, raw / name) for name in MNIST_FILES):
        return data_dir

    _require_files(data_dir)

    verified = {}
    for name in MNIST_FILES:
        target, shipped = raw / name, _shipped(data_dir, name)
        if not _stamped(stamp, target) and not _matches(target, name):
            if not shipped.is_file():
                remedy = (
                    f"delete it and put {shipped.name} (in the repository's dataset/) in "
                    f"{data_dir}, or pass --data-dir naming a folder that holds MNIST"
                )
                raise DatasetError(_corrupt_message(target, name, remedy))
            _decompress(shipped, target, name)
        verified[name] = _fingerprint(target)
    _write_stamp(raw, verified)
    return data_dir


def split_indices(seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into the official 60k training set: (50k train, 10k validation), as upstream."""
    order = torch.randperm(
        TRAIN_SIZE + VALIDATION_SIZE, generator=torch.Generator().manual_seed(seed)
    )
    return order[:TRAIN_SIZE], order[TRAIN_SIZE:]


def load_mnist(
    data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> MnistSplits:
    """Train/validation/test tensors, normalised with (0.1307, 0.3081), resident on ``device``."""
    train_images, train_labels, test_images, test_labels = _load_raw(data_dir)
    train_idx, val_idx = split_indices()
    # Move uint8 first (4x less to copy), then normalise the whole tensor at once.
    train_images = train_images.to(device)
    train_labels = train_labels.to(device)
    train_idx, val_idx = train_idx.to(device), val_idx.to(device)
    return MnistSplits(
        train_x=_normalise(train_images[train_idx]),
        train_y=train_labels[train_idx],
        val_x=_normalise(train_images[val_idx]),
        val_y=train_labels[val_idx],
        test_x=_normalise(test_images.to(device)),
        test_y=test_labels.to(device),
    )


def dataset_stats(name: str, labels: torch.Tensor) -> DatasetStats:
    counts = torch.bincount(labels.cpu(), minlength=NUM_CLASSES).tolist()
    total = int(labels.numel())
    zeror_class = max(range(NUM_CLASSES), key=lambda digit: (counts[digit], -digit))
    return DatasetStats(
        name=name,
        total_samples=total,
        class_counts={digit: counts[digit] for digit in range(NUM_CLASSES)},
        class_percentages={digit: 100.0 * counts[digit] / total for digit in range(NUM_CLASSES)},
        zeror_accuracy=100.0 * counts[zeror_class] / total,
        zeror_class=zeror_class,
    )


def analyze_mnist(data_dir: str | Path | None = None) -> MNISTAnalysis:
    """Class balance and ZeroR baselines of the official sets and of the seed-1337 split."""
    _, train_labels, _, test_labels = _load_raw(data_dir)
    train_idx, val_idx = split_indices()
    return MNISTAnalysis(
        full_train=dataset_stats("Full Train", train_labels),
        full_test=dataset_stats("Full Test", test_labels),
        split_train=dataset_stats("Split Train", train_labels[train_idx]),
        split_validation=dataset_stats("Split Validation", train_labels[val_idx]),
    )


def validation_zeror(data_dir: str | Path | None = None) -> float:
    """ZeroR accuracy (%) on the validation split: the floor below which a net learned nothing."""
    return analyze_mnist(data_dir).split_validation.zeror_accuracy


def _load_raw(data_dir: str | Path | None) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels): uint8 [N, 28, 28], int64 [N]."""
    raw = raw_dir(materialise(default_data_dir() if data_dir is None else data_dir))
    images = {name: read_idx(raw / f"{name}-images-idx3-ubyte") for name in ("train", "t10k")}
    labels = {name: read_idx(raw / f"{name}-labels-idx1-ubyte") for name in ("train", "t10k")}
    return (
        torch.from_numpy(images["train"]),
        torch.from_numpy(labels["train"]).long(),
        torch.from_numpy(images["t10k"]),
        torch.from_numpy(labels["t10k"]).long(),
    )


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file as an array of its shape: magic 0x0000080N, N big-endian sizes."""
    try:
        with path.open("rb") as source:
            magic = int.from_bytes(source.read(4), "big")
            dimensions = magic - _IDX_UBYTE
            if not 1 <= dimensions <= 3:
                raise ValueError(f"magic number {magic:#010x} is not an unsigned-byte IDX file's")
            shape = tuple(int.from_bytes(source.read(4), "big") for _ in range(dimensions))
            data = np.fromfile(source, dtype=np.uint8)
        return data.reshape(shape)
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"cannot read {path}: {error}; delete {path.parent} to rebuild it from the shipped "
            ".gz files"
        ) from None


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 784], as ToTensor() then Normalize(0.1307, 0.3081)."""
    flat = images.reshape(images.shape[0], -1).to(torch.float32)
    return flat.div_(255.0).sub_(MEAN).div_(STD)


def _shipped(data_dir: Path, name: str) -> Path:
    return data_dir / f"{name}.gz"


def _fingerprint(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_ino, info.st_mtime_ns]


def _stamped(stamp: dict, path: Path) -> bool:
    """Whether ``path`` is unchanged since it was last verified."""
    fingerprint = _fingerprint(path)
    return fingerprint is not None and stamp.get(path.name) == fingerprint


def _read_stamp(raw: Path) -> dict:
    try:
        stamp = json.loads((raw / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _write_stamp(raw: Path, verified: dict) -> None:
    # A read-only data dir only costs a re-hash next time.
    with contextlib.suppress(OSError):
        write_atomically(raw / STAMP_NAME, lambda out: out.write(json.dumps(verified).encode()))


def _matches(path: Path, name: str) -> bool:
    """Whether ``path`` exists with the expected size and SHA-256."""
    size, expected = MNIST_FILES[name]
    try:
        if path.stat().st_size != size:
            return False
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == expected


def _decompress(shipped: Path, target: Path, name: str) -> None:
    """Decompress ``shipped`` into ``target`` atomically, refusing content with the wrong hash."""
    size, expected = MNIST_FILES[name]
    digest = hashlib.sha256()

    def copy(out) -> None:
        with gzip.open(shipped, "rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if out.tell() != size or digest.hexdigest() != expected:
            raise DatasetError(
                _corrupt_message(shipped, name, f"restore it with `git checkout -- {shipped}`")
            )

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(target, copy)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(
            f"cannot decompress {shipped} into {target}: {error}; restore it with "
            f"`git checkout -- {shipped}` and check that {target.parent} is writable"
        ) from None


def _require_files(data_dir: Path) -> None:
    """Refuse a data dir that lacks one of the four files, shipped or raw: never a download."""
    missing = [
        _shipped(data_dir, name)
        for name in MNIST_FILES
        if not (raw_dir(data_dir) / name).is_file() and not _shipped(data_dir, name).is_file()
    ]
    if missing:
        raise DatasetError(
            f"{missing[0]} is missing (MNIST is never downloaded); put the four MNIST .gz files "
            f"of the repository's dataset/ in {data_dir}, or pass --data-dir naming a folder "
            "that holds them"
        )


def _corrupt_message(path: Path, name: str, remedy: str) -> str:
    size, expected = MNIST_FILES[name]
    return (
        f"{path} is corrupted (expected {name} of {size:,} bytes with SHA-256 {expected[:12]}…); "
        f"{remedy}"
    )
