"""MNIST preparation: the shipped files, their verification, the split and the class balance."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import random_split
from torchvision.datasets import MNIST

from psa import data

REPO_DATASET = Path(data.__file__).resolve().parents[2] / "dataset"
SMALL = "t10k-labels-idx1-ubyte"


@pytest.fixture(scope="module")
def analysis() -> data.MNISTAnalysis:
    return data.analyze_mnist(REPO_DATASET)


@pytest.fixture(scope="module")
def splits() -> data.MnistSplits:
    return data.load_mnist(REPO_DATASET)


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    """A data dir holding (symlinks to) the four shipped .gz files and nothing else."""
    for name in data.MNIST_FILES:
        (tmp_path / f"{name}.gz").symlink_to(REPO_DATASET / f"{name}.gz")
    return tmp_path


@pytest.fixture
def no_download(monkeypatch):
    """Record (and fail) any torchvision download of MNIST, without touching the network."""
    calls = []

    def refuse(self):
        calls.append(self.root)
        raise OSError("network is unreachable")

    monkeypatch.setattr(MNIST, "download", refuse)
    return calls


def test_validation_split_holds_1102_ones_so_zeror_is_11_02_percent(analysis):
    validation = analysis.split_validation
    assert validation.total_samples == 10_000
    assert validation.class_counts[1] == 1102
    assert validation.zeror_class == 1
    assert validation.zeror_accuracy == pytest.approx(11.02)


def test_zeror_baselines_match_upstream_for_every_set(analysis):
    assert analysis.full_train.total_samples == 60_000
    assert analysis.full_test.total_samples == 10_000
    assert analysis.split_train.total_samples == 50_000
    for stats, expected in [
        (analysis.full_train, 11.24),
        (analysis.full_test, 11.35),
        (analysis.split_train, 11.28),
    ]:
        assert stats.zeror_class == 1
        assert round(stats.zeror_accuracy, 2) == expected


def test_split_counts_add_up_to_the_full_training_set(analysis):
    for digit in range(10):
        split = analysis.split_train.class_counts[digit]
        split += analysis.split_validation.class_counts[digit]
        assert split == analysis.full_train.class_counts[digit]
    assert sum(analysis.full_test.class_percentages.values()) == pytest.approx(100.0)


def test_validation_zeror_is_the_validation_baseline():
    assert data.validation_zeror(REPO_DATASET) == pytest.approx(11.02)


def test_split_indices_are_those_of_upstreams_random_split():
    train, validation = data.split_indices()
    upstream = random_split(range(60_000), [50_000, 10_000], torch.Generator().manual_seed(1337))
    assert train.tolist() == list(upstream[0].indices)
    assert validation.tolist() == list(upstream[1].indices)


def test_loaded_splits_have_the_documented_shapes_and_types(splits):
    for images, labels, count in [
        (splits.train_x, splits.train_y, 50_000),
        (splits.val_x, splits.val_y, 10_000),
        (splits.test_x, splits.test_y, 10_000),
    ]:
        assert images.shape == (count, 784) and images.dtype == torch.float32
        assert labels.shape == (count,) and labels.dtype == torch.int64
    assert int((splits.val_y == 1).sum()) == 1102


def test_images_are_normalised_as_totensor_then_normalize(splits):
    raw = MNIST(str(REPO_DATASET), train=False).data
    expected = (raw[:5].float() / 255.0 - 0.1307) / 0.3081
    assert torch.allclose(splits.test_x[:5], expected.reshape(5, 784))
    background = (0.0 - 0.1307) / 0.3081
    assert splits.train_x.min().item() == pytest.approx(background)
    assert abs(splits.train_x.mean().item()) < 0.01


@pytest.mark.parametrize("train", [True, False])
def test_the_idx_reader_reads_exactly_what_torchvision_reads(train):
    reference = MNIST(str(REPO_DATASET), train=train)
    prefix = "train" if train else "t10k"
    raw = data.raw_dir(REPO_DATASET)
    images = torch.from_numpy(data.read_idx(raw / f"{prefix}-images-idx3-ubyte"))
    labels = torch.from_numpy(data.read_idx(raw / f"{prefix}-labels-idx1-ubyte"))
    assert torch.equal(images, reference.data)
    assert torch.equal(labels.long(), reference.targets)


@pytest.mark.parametrize(
    "content",
    [b"\x00\x00\x08\x09rest", b"\x00\x00\x08\x01\x00\x00\x00\x09ab", b""],
    ids=["bad magic", "short data", "empty"],
)
def test_a_malformed_idx_file_is_refused_in_one_line_naming_it(tmp_path, content):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(data.DatasetError) as refused:
        data.read_idx(path)
    message = str(refused.value)
    assert message.startswith(f"cannot read {path}: ") and "\n" not in message
    assert "rebuild it from the shipped .gz files" in message


def test_loading_the_shipped_mnist_imports_no_torchvision():
    code = (
        "import sys; from psa import data; data.load_mnist(); print('torchvision' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "False"


def test_validation_images_are_the_permuted_training_images(splits):
    raw = MNIST(str(REPO_DATASET), train=True)
    _, validation = data.split_indices()
    first = validation[0].item()
    assert splits.val_y[0].item() == raw.targets[first].item()
    assert torch.allclose(
        splits.val_x[0], (raw.data[first].float().reshape(784) / 255 - 0.1307) / 0.3081
    )


def test_first_use_decompresses_and_verifies_the_shipped_files(shipped_copy):
    data.materialise(shipped_copy)
    raw = data.raw_dir(shipped_copy)
    for name, (size, _) in data.MNIST_FILES.items():
        assert (raw / name).stat().st_size == size
    assert not list(raw.glob("*.tmp"))
    assert data.analyze_mnist(shipped_copy).split_validation.class_counts[1] == 1102


def test_a_verified_file_is_not_hashed_again(shipped_copy, monkeypatch):
    data.materialise(shipped_copy)

    def must_not_hash(path, name):
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(data, "_matches", must_not_hash)
    data.materialise(shipped_copy)


def test_a_raw_file_changed_after_verification_is_rebuilt_from_the_shipped_file(shipped_copy):
    data.materialise(shipped_copy)
    target = data.raw_dir(shipped_copy) / SMALL
    damaged = bytearray(target.read_bytes())
    damaged[-1] ^= 0xFF
    target.write_bytes(bytes(damaged))
    data.materialise(shipped_copy)
    assert data._matches(target, SMALL)


def test_a_corrupted_shipped_file_is_refused_by_name_and_never_reaches_the_raw_folder(
    shipped_copy,
):
    archive = shipped_copy / f"{SMALL}.gz"
    archive.unlink()
    archive.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(10_004)))
    with pytest.raises(data.DatasetError, match=f"{SMALL}.gz is corrupted.*git checkout"):
        data.materialise(shipped_copy)
    raw = data.raw_dir(shipped_copy)
    assert not (raw / SMALL).exists()
    assert not list(raw.glob(".*.tmp"))


def test_a_truncated_shipped_archive_is_refused_by_name(shipped_copy):
    archive = shipped_copy / f"{SMALL}.gz"
    content = archive.read_bytes()
    archive.unlink()
    archive.write_bytes(content[: len(content) // 2])
    with pytest.raises(data.DatasetError, match=f"cannot decompress .*{SMALL}.gz"):
        data.materialise(shipped_copy)


def test_a_corrupted_raw_file_without_its_archive_is_refused_with_a_remedy(
    shipped_copy, no_download
):
    data.materialise(shipped_copy)
    (shipped_copy / f"{SMALL}.gz").unlink()
    target = data.raw_dir(shipped_copy) / SMALL
    target.write_bytes(bytes(data.MNIST_FILES[SMALL][0]))
    with pytest.raises(data.DatasetError, match=f"raw/{SMALL} is corrupted.*delete it"):
        data.materialise(shipped_copy)
    assert no_download == []


def test_missing_mnist_is_refused_naming_where_to_put_it_without_a_download(tmp_path, no_download):
    with pytest.raises(data.DatasetError) as refused:
        data.load_mnist(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path}/train-images-idx3-ubyte.gz is missing")
    assert f"in {tmp_path}, or pass --data-dir" in message and "\n" not in message
    assert no_download == [] and not (tmp_path / "MNIST").exists()


def test_raw_files_alone_are_enough(shipped_copy, no_download):
    data.materialise(shipped_copy)
    for name in data.MNIST_FILES:
        (shipped_copy / f"{name}.gz").unlink()
    os.remove(data.raw_dir(shipped_copy) / data.STAMP_NAME)
    data.materialise(shipped_copy)
    assert no_download == []


def test_default_data_dir_prefers_the_sagemaker_channel(monkeypatch, tmp_path):
    monkeypatch.setenv("SM_CHANNEL_TRAINING", str(tmp_path))
    assert data.default_data_dir() == tmp_path


def test_default_data_dir_is_the_checkout_dataset_folder(monkeypatch):
    monkeypatch.delenv("SM_CHANNEL_TRAINING", raising=False)
    assert data.default_data_dir() == REPO_DATASET
