"""A resumed ``train`` keeps the settings its checkpoint was trained with: given again with
another value they are refused and nothing changes; left out, the checkpoint's are used (not
the flags' defaults). A checkpoint whose tensors or seeds do not fit its own metadata is refused
in one line. A stopped run says how to reach the loops it planned."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import safetensors.torch

from command_support import refusal
from psa.checkpoint import DEFAULT_NAME, METADATA_KEY, load_checkpoint
from psa.commands import train


@pytest.fixture(autouse=True)
def no_sagemaker_dir(monkeypatch):
    monkeypatch.delenv("SAGEMAKER_MODEL_DIR", raising=False)


def flags(model_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        *("--arch", "[1*8]", "--model-dir", str(model_dir), "--data-dir", str(data_dir)),
        *("--device", "cpu", *extra),
    ]


FIRST_RUN = ("--seed", "7", "--lr", "0.001", "--batch-size", "128", "--dropout", "0.2")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, repo_dataset):
    """One loop of a run with settings other than the defaults."""
    model_dir = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SAGEMAKER_MODEL_DIR", raising=False)
        train.main(flags(model_dir, repo_dataset, "--meta-loops", "1", *FIRST_RUN))
    return model_dir


def copy_of(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    (target / DEFAULT_NAME).write_bytes((source / DEFAULT_NAME).read_bytes())
    return target


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--seed", "8"), "seed 7"),
        (("--lr", "0.0001"), "lr 0.001"),
        (("--batch-size", "256"), "batch_size 128"),
        (("--weight-decay", "0.01"), "weight_decay 0.0001"),
        (("--dropout", "0.1"), "dropout 0.2"),
        (("--precision", "bf16"), "precision 'fp32'"),
        (("--data-seed", "3"), "data_seed"),
        # A matmul's bits may depend on the thread count: it is a setting like the others.
        (("--threads", "2"), "threads 1"),
    ],
)
def test_a_resume_with_a_changed_setting_is_refused_and_changes_nothing(
    trained, tmp_path, repo_dataset, capsys, change, named
):
    model_dir = copy_of(trained, tmp_path / "m")
    before = (model_dir / DEFAULT_NAME).read_bytes()
    status, line = refusal(capsys, train.main, flags(model_dir, repo_dataset, *change))
    assert status == 1
    assert f"was trained with {named}" in line and f"drop {change[0]} {change[1]}" in line
    assert "--model-dir" in line
    assert (model_dir / DEFAULT_NAME).read_bytes() == before
    assert sorted(path.name for path in model_dir.iterdir()) == [DEFAULT_NAME]


def test_a_resume_keeps_the_checkpoints_settings_where_no_flag_is_given(
    trained, tmp_path, repo_dataset, capsys
):
    model_dir = copy_of(trained, tmp_path / "m")
    _, before = load_checkpoint(model_dir / DEFAULT_NAME)
    # The same values given again are no change.
    train.main(flags(model_dir, repo_dataset, "--meta-loops", "1", "--seed", "7", "--lr", "0.001"))
    _, after = load_checkpoint(model_dir / DEFAULT_NAME)
    assert after["loops_completed"] == 2
    assert after["hyperparameters"] == before["hyperparameters"]
    assert after["hyperparameters"]["batch_size"] == 128
    assert (after["seed"], after["data_seed"]) == (before["seed"], before["data_seed"])
    [log] = sorted(model_dir.glob("mnist_lkg.*.jsonl"))
    assert json.loads(log.read_text().splitlines()[0])["loop"] == 2


def rewrite(checkpoint: Path, tensors: dict | None = None, **metadata_changes) -> None:
    loaded, metadata = load_checkpoint(checkpoint)
    metadata.update(metadata_changes)
    payload = safetensors.torch.save(
        loaded if tensors is None else tensors,
        metadata={"format": "pt", METADATA_KEY: json.dumps(metadata)},
    )
    checkpoint.write_bytes(payload)


def altered_tensors(tensors: dict, how: str) -> dict:
    altered = dict(tensors)
    if how == "missing":
        del altered["layer_stack.0.bias"]
    elif how == "misshaped":
        altered["layer_stack.0.weight"] = altered["layer_stack.0.weight"][:4]
    elif how == "extra":
        altered["stray.weight"] = altered["layer_stack.0.bias"].clone()
    return altered


@pytest.mark.parametrize("how", ["missing", "misshaped", "extra"])
def test_a_checkpoint_whose_tensors_do_not_fit_its_arch_is_refused_in_one_line(
    trained, tmp_path, repo_dataset, capsys, how
):
    model_dir = copy_of(trained, tmp_path / "m")
    checkpoint = model_dir / DEFAULT_NAME
    tensors, _ = load_checkpoint(checkpoint)
    rewrite(checkpoint, altered_tensors(tensors, how))
    before = checkpoint.read_bytes()
    status, line = refusal(capsys, train.main, flags(model_dir, repo_dataset))
    assert status == 1
    assert "tensors do not fit it" in line and "move it away" in line
    assert checkpoint.read_bytes() == before


def test_a_checkpoint_with_a_negative_seed_is_refused_in_one_line(
    trained, tmp_path, repo_dataset, capsys
):
    model_dir = copy_of(trained, tmp_path / "m")
    rewrite(model_dir / DEFAULT_NAME, seed=-1)
    status, line = refusal(capsys, train.main, flags(model_dir, repo_dataset))
    assert status == 1 and "seed -1 is outside" in line


def test_a_stopped_run_says_how_to_reach_the_loops_it_planned(
    trained, tmp_path, repo_dataset, capsys, monkeypatch
):
    """Stopped after its first loop of three, a resumed run (at loop 2 of the checkpoint) says
    to rerun with --meta-loops 2: the same command would run three more."""
    model_dir = copy_of(trained, tmp_path / "m")
    loops = []
    real_save = train.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        loops.append(1)
        if len(loops) == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    with pytest.raises(SystemExit) as stopped:
        train.main(flags(model_dir, repo_dataset, "--meta-loops", "3"))
    assert stopped.value.code == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds every completed meta-loop (2)" in last
    assert "rerun with --meta-loops 2 to reach the 4 planned" in last


def test_the_thread_count_is_recorded_and_a_resume_without_the_flag_keeps_it(
    tmp_path, repo_dataset, capsys
):
    model_dir = tmp_path / "m"
    train.main(flags(model_dir, repo_dataset, "--meta-loops", "1", "--threads", "2"))
    assert "(2 threads)" in capsys.readouterr().out
    train.main(flags(model_dir, repo_dataset, "--meta-loops", "1"))
    assert "(2 threads)" in capsys.readouterr().out
    _, metadata = load_checkpoint(model_dir / DEFAULT_NAME)
    assert metadata["threads"] == 2 and metadata["loops_completed"] == 2
