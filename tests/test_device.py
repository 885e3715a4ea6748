"""Device choice: CUDA > MPS > CPU by default, explicit names honoured, absent devices refused."""

from __future__ import annotations

import pytest
import torch

from psa.device import DeviceError, resolve_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has the given accelerators."""

    def configure(cuda: bool = False, mps: bool = False, gpus: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return configure


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
@pytest.mark.parametrize("name", [None, "auto"])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected, name):
    machine(cuda=cuda, mps=mps)
    assert resolve_device(name) == torch.device(expected)


def test_an_explicit_cpu_is_used_even_when_a_gpu_exists(machine):
    machine(cuda=True, mps=True)
    assert resolve_device("cpu") == torch.device("cpu")


def test_an_available_cuda_device_index_is_honoured(machine):
    machine(cuda=True, gpus=2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_a_missing_cuda_is_a_clear_error(machine):
    machine(cuda=False, mps=False)
    with pytest.raises(DeviceError, match="--device cuda was requested but .*--device cpu"):
        resolve_device("cuda")


def test_a_cuda_index_beyond_the_gpus_is_a_clear_error(machine):
    machine(cuda=True, gpus=1)
    with pytest.raises(DeviceError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


def test_a_missing_mps_is_a_clear_error(machine):
    machine(cuda=True, mps=False)
    with pytest.raises(DeviceError, match="Apple MPS is not available"):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["gpu", "tpu0", ""])
def test_an_unknown_device_name_is_a_clear_error(machine, name):
    machine()
    with pytest.raises(DeviceError, match="use one of auto, cpu, cuda, mps"):
        resolve_device(name)


@pytest.mark.parametrize("command", ["train", "sweep", "bench"])
@pytest.mark.parametrize(
    ("name", "gpus", "expected"),
    [
        ("cuda:1", 0, "--device cuda:1 was requested but "),
        ("cuda:1", 1, "--device cuda:1 was requested but only 1 CUDA device exists (cuda:0)"),
        ("mps", 0, "--device mps was requested but Apple MPS is not available"),
    ],
)
def test_every_command_parses_a_device_string_and_refuses_a_missing_one_in_one_line(
    machine, command, name, gpus, expected, tmp_path, capsys
):
    """The flag takes any well-formed device name; the machine, not the parser, refuses one it
    lacks (exit 1). A malformed name is a usage error (test_command_conventions)."""
    from psa.cli import run

    machine(cuda=gpus > 0, gpus=gpus)
    where = {
        "train": ["--model-dir", str(tmp_path / "m"), "--arch", "[1*8]"],
        "sweep": ["--results-dir", str(tmp_path / "r"), "--arch", "[1*8]", "--trials", "1"],
        "bench": ["--output", str(tmp_path / "b.json"), "--archs", "1*8"],
    }[command]
    assert run(command, ["--device", name, *where]) == 1
    [message] = capsys.readouterr().err.splitlines()
    assert message.startswith(f"{command}: ") and expected in message
    assert "invalid choice" not in message
    assert not any(tmp_path.iterdir())
