"""The memory estimate: one for sweep's trials per batch and for refusing, before anything is
allocated, training state that cannot fit in the device's free memory."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from psa import memory
from psa.arch import Arch
from psa.commands import sweep, train
from psa.errors import PsaError
from psa.model import build_network
from psa.sweep import runner as sweep_runner

GIB = 2**30


@pytest.fixture
def machine_with(monkeypatch):
    """Pretend the device has ``free`` bytes free, and fail if MNIST is loaded."""

    def configure(free: int) -> None:
        monkeypatch.setattr(memory, "free_bytes", lambda device: free)

    def no_data(*args, **kwargs):
        raise AssertionError("the data were loaded before the memory check")

    monkeypatch.setattr(train, "load_mnist", no_data)
    monkeypatch.setattr(sweep_runner, "load_mnist", no_data)
    return configure


def test_one_trial_is_five_copies_of_the_parameters_and_a_batchs_activations():
    network = build_network("resmlp", Arch([(1, 30000)]))
    parameters = Arch([(1, 30000)]).resmlp_parameters
    activations = 256 * (30000 * 3 + 10)
    assert memory.trial_bytes(network, 256) == 4 * (5 * parameters + 4 * activations)


def test_train_refuses_an_arch_whose_training_state_exceeds_free_memory(
    machine_with, tmp_path, capsys
):
    machine_with(24 * GIB)
    models = tmp_path / "models"
    with pytest.raises(PsaError) as refused:
        train.main(["--arch", "[1*30000]", "--device", "cpu", "--model-dir", str(models)])
    message = f"train: {refused.value}"
    needed = memory.trial_bytes(build_network("resmlp", Arch([(1, 30000)])), 256)
    assert 33 * GIB < needed < 37 * GIB  # about 36 GB: 1.8 billion parameters, five copies
    assert message.startswith(
        f"train: resmlp [1*30000] at batch size 256 needs about {needed / GIB:.1f} GiB"
    )
    assert "but cpu has 24.0 GiB free; choose a smaller --arch" in message
    assert "\n" not in message
    assert not models.exists()


def test_what_fits_or_where_free_memory_is_unknown_is_not_refused(machine_with):
    network = build_network("resmlp", Arch([(1, 30000)]))
    needed = memory.trial_bytes(network, 256)
    for free in (needed, None):
        machine_with(free)
        memory.check_fits(network, 256, 1, torch.device("cpu"))
    machine_with(needed - 1)
    with pytest.raises(memory.MemoryLimitError):
        memory.check_fits(network, 256, 1, torch.device("cpu"))


def test_sweep_refuses_before_creating_its_results_dir(machine_with, tmp_path):
    machine_with(24 * GIB)
    results = tmp_path / "results"
    argv = ["--arch", "[1*30000]", "--trials", "1", "--modes", "none", "--device", "cpu"]
    for extra in ([], ["--dry-run"]):
        with pytest.raises(PsaError) as refused:
            sweep.main([*argv, "--results-dir", str(results), *extra])
        message = f"sweep: {refused.value}"
        assert message.startswith("sweep: resmlp [1*30000] at batch size 256 needs about")
        assert "for one trial" in message and "24.0 GiB free" in message
        assert not results.exists()


def test_sweep_refuses_a_max_batch_whose_trials_together_exceed_free_memory(
    machine_with, tmp_path
):
    network = build_network("resmlp", Arch([(4, 64)]))
    machine_with(10 * memory.trial_bytes(network, 256))
    results = tmp_path / "results"
    argv = ["--arch", "[4*64]", "--trials", "2", "--device", "cpu", "--max-batch", "12"]
    argv.append("--train-decay")  # all 12 trials train (decay is not copied from none)
    with pytest.raises(PsaError) as refused:
        sweep.main([*argv, "--results-dir", str(results), "--dry-run"])
    assert "needs about" in str(refused.value) and "for 12 trials" in str(refused.value)


@given(
    st.lists(st.tuples(st.integers(1, 8), st.integers(1, 600)), min_size=1, max_size=3),
    st.integers(1, 512),
    st.integers(1, 64 * GIB),
)
def test_the_trials_sweep_batches_fit_the_budget_that_chose_them(segments, batch_size, budget):
    network = build_network("resmlp", Arch(segments))
    k = memory.batch_limit(network, batch_size, budget, torch.device("cuda"))
    assert k == 1 or k * memory.trial_bytes(network, batch_size) <= budget
    assert (k + 1) * memory.trial_bytes(network, batch_size) > budget
