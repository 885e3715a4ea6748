"""The LKG checkpoint: safetensors with PSA metadata, atomic writes, clear refusals."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psa import checkpoint
from psa.arch import Arch, parse_arch
from psa.checkpoint import CheckpointError


def metadata(**changes) -> dict:
    base = checkpoint.make_metadata(
        model="resmlp",
        arch=Arch([(4, 4)]),
        hyperparameters={
            "lr": 1e-4,
            "batch_size": 256,
            "weight_decay": 1e-4,
            "dropout": 0.1,
            "precision": "fp32",
        },
        seed=1234,
        data_seed=5678,
        mode="none",
        threads=1,
    )
    base.update(changes)
    return base


def tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "layer_stack.0.weight": torch.randn(4, 784, generator=generator),
        "layer_stack.0.bias": torch.randn(4, generator=generator),
        "layer_stack.1.blocks.0.layers.0.weight": torch.randn(4, 4, generator=generator),
    }


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "mnist_lkg.safetensors"
    checkpoint.save_checkpoint(path, tensors(), metadata())
    return path


def test_tensors_and_metadata_round_trip_exactly(tmp_path):
    path = tmp_path / "lkg.safetensors"
    written = metadata(
        loops_completed=7,
        bounty=97.12345678901234,
        bounty_loop=5,
        mode_history=[{"mode": "none", "first_loop": 1}, {"mode": "hidden", "first_loop": 4}],
    )
    checkpoint.save_checkpoint(path, tensors(), written)
    loaded_tensors, loaded_metadata = checkpoint.load_checkpoint(path)
    assert loaded_metadata == written
    assert loaded_tensors.keys() == tensors().keys()
    for name, tensor in tensors().items():
        assert torch.equal(loaded_tensors[name], tensor)


@settings(max_examples=25, deadline=None)
@given(
    bounty=st.floats(min_value=0, max_value=100),
    loops=st.integers(min_value=0, max_value=10**9),
    seed=st.integers(min_value=0, max_value=2**63 - 1),
    version=st.text(max_size=20),
)
def test_metadata_values_survive_the_file_unchanged(tmp_path_factory, bounty, loops, seed, version):
    path = tmp_path_factory.mktemp("ckpt") / "lkg.safetensors"
    written = metadata(bounty=bounty, loops_completed=loops, seed=seed, psa_version=version)
    checkpoint.save_checkpoint(path, {"w": torch.zeros(1)}, written)
    assert checkpoint.load_checkpoint(path)[1] == written


def test_the_file_is_plain_safetensors_with_one_json_metadata_string(saved):
    with safetensors.safe_open(saved, framework="pt") as opened:
        stored = opened.metadata()
    assert set(stored) == {"format", "psa"}
    assert stored["format"] == "pt"
    assert json.loads(stored["psa"])["arch"] == "4*4"


def test_non_contiguous_and_bf16_tensors_are_saved_as_copies(tmp_path):
    path = tmp_path / "lkg.safetensors"
    base = torch.arange(12.0).reshape(3, 4)
    shared = {"t": base.t(), "same": base, "half": base.to(torch.bfloat16)}
    checkpoint.save_checkpoint(path, shared, metadata())
    loaded, _ = checkpoint.load_checkpoint(path)
    assert torch.equal(loaded["t"], base.t())
    assert loaded["half"].dtype == torch.bfloat16


def test_a_failure_mid_write_leaves_the_old_checkpoint_byte_identical(saved, monkeypatch):
    before = saved.read_bytes()

    def crash(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(saved, {"other": torch.ones(3)}, metadata(loops_completed=9))
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_a_failed_rename_leaves_no_partial_file_under_any_name(saved, monkeypatch):
    before = saved.read_bytes()

    def crash(source, target):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(saved, tensors(), metadata(loops_completed=3))
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_invalid_metadata_is_refused_before_anything_is_written(saved):
    before = saved.read_bytes()
    broken = metadata()
    del broken["seed"]
    with pytest.raises(ValueError, match="seed"):
        checkpoint.save_checkpoint(saved, tensors(), broken)
    assert saved.read_bytes() == before


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda payload: payload[: len(payload) - 7], id="truncated"),
        pytest.param(lambda payload: payload[:5], id="cut-inside-header"),
        pytest.param(lambda payload: b"", id="empty"),
        pytest.param(lambda payload: os.urandom(len(payload)), id="random-bytes"),
        pytest.param(lambda payload: payload[:9] + b"#" + payload[10:], id="broken-header"),
    ],
)
def test_a_damaged_file_is_refused_with_one_line_naming_it(saved, damage):
    saved.write_bytes(damage(saved.read_bytes()))
    with pytest.raises(CheckpointError) as refused:
        checkpoint.load_checkpoint(saved)
    message = str(refused.value)
    assert str(saved) in message and "clean" in message
    assert "\n" not in message


def test_a_safetensors_file_without_psa_metadata_is_refused_as_foreign(tmp_path):
    path = tmp_path / "mnist_lkg.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="no PSA metadata"):
        checkpoint.load_checkpoint(path)


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param({**metadata(), "schema": 2}, id="future-schema"),
        pytest.param({k: v for k, v in metadata().items() if k != "loops_completed"}, id="missing"),
        pytest.param({**metadata(), "loops_completed": "7"}, id="wrong-type"),
        pytest.param({**metadata(), "model": "cnn"}, id="unknown-model"),
        pytest.param({**metadata(), "arch": "4x4"}, id="bad-arch"),
        pytest.param({**metadata(), "mode_history": [{"mode": "sideways"}]}, id="bad-history"),
        pytest.param([1, 2], id="not-an-object"),
    ],
)
def test_metadata_outside_the_schema_is_refused(tmp_path, stored):
    path = tmp_path / "mnist_lkg.safetensors"
    safetensors.torch.save_file(
        {"w": torch.zeros(2)}, path, metadata={"format": "pt", "psa": json.dumps(stored)}
    )
    with pytest.raises(CheckpointError, match="bad metadata"):
        checkpoint.load_checkpoint(path)


def test_an_upstream_pickle_checkpoint_is_refused_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "mnist_lkg.safetensors"
    torch.save({"model_state": tensors(), "global_meta_loops": 3}, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("the checkpoint was unpickled")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        checkpoint.load_checkpoint(path)


def test_a_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.load_checkpoint(tmp_path / "absent.safetensors")


def test_the_same_model_and_arch_resume_even_if_spelled_differently(saved):
    _, stored = checkpoint.load_checkpoint(saved)
    checkpoint.check_compatible(stored, "resmlp", parse_arch("[ 2*4,2*4 ]"), saved)


def test_another_arch_is_refused_naming_both_architectures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PSA_RUN_PREFIX", "scripts/poetry run")
    path = Path("models") / "mnist_lkg.safetensors"
    with pytest.raises(CheckpointError) as refused:
        checkpoint.check_compatible(metadata(), "resmlp", Arch([(8, 8)]), path)
    assert str(refused.value) == (
        "models/mnist_lkg.safetensors holds a resmlp [4*4] but --arch asks for resmlp [8*8]; "
        "use --model-dir for a new run or `scripts/poetry run clean` to start fresh"
    )


def test_another_model_kind_is_refused_and_the_clean_hint_names_the_model_dir(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("PSA_RUN_PREFIX", raising=False)
    path = tmp_path / "runs" / "lkg.safetensors"
    with pytest.raises(CheckpointError) as refused:
        checkpoint.check_compatible(metadata(), "mlp", Arch([(4, 4)]), path)
    message = str(refused.value)
    assert "holds a resmlp [4*4] but --model asks for mlp [4*4]" in message
    assert f"`clean --model-dir {path.parent} lkg.safetensors`" in message


def test_make_metadata_starts_a_run_with_nothing_trained():
    fresh = metadata()
    assert fresh["loops_completed"] == 0
    assert fresh["bounty"] is None and fresh["bounty_loop"] is None
    assert fresh["mode_history"] == [{"mode": "none", "first_loop": 1}]
    assert fresh["torch_version"] == torch.__version__
