"""Shared fixtures: the real MNIST splits, loaded once per session, and a small slice of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psa import data

REPO_DATASET = Path(data.__file__).resolve().parents[2] / "dataset"
SUBSET_TRAIN, SUBSET_VAL, SUBSET_TEST = 2_000, 1_000, 1_000


@pytest.fixture(scope="session", autouse=True)
def single_thread_torch():
    """The test networks are tiny and the machine is shared: intra-op threads only add contention
    (a 2-core box under load ran a tiny meta-loop 100x slower with two threads than with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def plain_command_names(monkeypatch):
    """Messages name commands as they were run (scripts/poetry exports PSA_RUN_PREFIX); tests
    expect the plain names whatever runs them, and set the variable where they test it."""
    monkeypatch.delenv("PSA_RUN_PREFIX", raising=False)


@pytest.fixture(scope="session")
def repo_dataset() -> Path:
    """The shipped dataset/ folder of this checkout."""
    return REPO_DATASET


@pytest.fixture(scope="session")
def mnist() -> data.MnistSplits:
    """The full real split (50k train, 10k validation, 10k test) on the CPU."""
    return data.load_mnist(REPO_DATASET)


@pytest.fixture(scope="session")
def mnist_small(mnist: data.MnistSplits) -> data.MnistSplits:
    """The first rows of each real split: enough for a meta-loop in well under a second."""
    return data.MnistSplits(
        train_x=mnist.train_x[:SUBSET_TRAIN],
        train_y=mnist.train_y[:SUBSET_TRAIN],
        val_x=mnist.val_x[:SUBSET_VAL],
        val_y=mnist.val_y[:SUBSET_VAL],
        test_x=mnist.test_x[:SUBSET_TEST],
        test_y=mnist.test_y[:SUBSET_TEST],
    )
