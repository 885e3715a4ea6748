"""The ``train`` command end to end on real MNIST: checkpoint, resume, refusals, logs, kill and
Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from command_support import refusal
from documented import assert_printed, quoted
from psa.checkpoint import DEFAULT_NAME, load_checkpoint
from psa.commands import train
from schemas import LOOP_LOG_KEYS

VALIDATION_ZEROR = 11.02


@pytest.fixture(autouse=True)
def no_sagemaker_dir(monkeypatch):
    monkeypatch.delenv("SAGEMAKER_MODEL_DIR", raising=False)


def flags(model_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        "--arch",
        "[1*8]",
        "--model-dir",
        str(model_dir),
        "--data-dir",
        str(data_dir),
        "--device",
        "cpu",
        "--seed",
        "7",
        *extra,
    ]


def logs(model_dir: Path) -> list[Path]:
    return sorted(model_dir.glob("mnist_lkg.*.jsonl"))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, repo_dataset):
    """One real two-loop run, shared by the tests that only read what it left behind."""
    model_dir = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SAGEMAKER_MODEL_DIR", raising=False)
        train.main(flags(model_dir, repo_dataset, "--meta-loops", "2"))
    return model_dir


def copy_of(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    (target / DEFAULT_NAME).write_bytes((source / DEFAULT_NAME).read_bytes())
    return target


def test_two_loops_on_real_mnist_beat_zeror_and_record_both_loops(tmp_path, repo_dataset, capsys):
    train.main(flags(tmp_path, repo_dataset, "--meta-loops", "2"))
    out = capsys.readouterr().out
    tensors, metadata = load_checkpoint(tmp_path / DEFAULT_NAME)
    assert metadata["loops_completed"] == 2
    assert metadata["model"] == "resmlp" and metadata["arch"] == "1*8"
    assert metadata["seed"] == 7
    assert metadata["mode_history"] == [{"mode": "none", "first_loop": 1}]
    assert metadata["bounty"] > VALIDATION_ZEROR + 20
    assert metadata["bounty_loop"] in (1, 2)
    assert tensors["layer_stack.0.weight"].shape == (8, 784)

    [log] = logs(tmp_path)
    lines = read_lines(log)
    assert [line["loop"] for line in lines] == [1, 2]
    for line in lines:
        assert set(line) == LOOP_LOG_KEYS
        assert line["arch"] == "1*8" and line["model"] == "resmlp" and line["mode"] == "none"
        assert line["trial"] == 1 and line["ablation"] is None
        assert 0.0 <= line["val_accuracy"] <= 100.0
        assert line["train_seconds"] > 0
    assert lines[0]["promoted"] is True
    assert lines[-1]["lkg_accuracy"] == pytest.approx(metadata["bounty"])
    assert max(line["val_accuracy"] for line in lines) == pytest.approx(metadata["bounty"])

    final_test = [line for line in out.splitlines() if "Final Test Accuracy" in line]
    assert len(final_test) == 1
    test_accuracy = float(final_test[0].split(":")[-1].strip().rstrip("%"))
    assert test_accuracy > 11.35 + 20
    assert f"@ {metadata['bounty_loop']}/2" in out


def test_resume_continues_the_global_loop_count_and_records_a_mode_switch(
    trained, tmp_path, repo_dataset, capsys
):
    model_dir = copy_of(trained, tmp_path / "resume")
    _, before = load_checkpoint(model_dir / DEFAULT_NAME)
    capsys.readouterr()
    train.main(flags(model_dir, repo_dataset, "--meta-loops", "1", "--ablation-mode", "hidden"))
    out = capsys.readouterr().out
    _, after = load_checkpoint(model_dir / DEFAULT_NAME)
    assert after["loops_completed"] == 3
    assert after["mode_history"] == [
        {"mode": "none", "first_loop": 1},
        {"mode": "hidden", "first_loop": 3},
    ]
    assert after["bounty"] >= before["bounty"]
    assert after["seed"] == before["seed"] and after["data_seed"] == before["data_seed"]
    [log] = logs(model_dir)
    [line] = read_lines(log)
    assert line["loop"] == 3 and line["mode"] == "hidden"
    # The first loop of a session trains the LKG unablated (upstream parity).
    assert line["ablation"] is None
    assert "Resuming from 2 completed meta-loops" in out
    assert "none -> hidden" in out
    assert "(Global: 3)" in out


def test_resumed_ablative_loops_log_their_targets(trained, tmp_path, repo_dataset):
    model_dir = copy_of(trained, tmp_path / "ablate")
    train.main(flags(model_dir, repo_dataset, "--meta-loops", "2", "--ablation-mode", "output"))
    [log] = logs(model_dir)
    lines = read_lines(log)
    assert [line["loop"] for line in lines] == [3, 4]
    assert lines[0]["ablation"] is None
    assert lines[1]["ablation"]["layer"] == "layer_stack.4"  # [1*8]: projection 0, stack 3, final 4
    assert 0 <= lines[1]["ablation"]["neuron"] < 10


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--arch", "[1*16]"], ["[1*8]", "[1*16]", "clean"]),
        (["--arch", "[2*8]"], ["[1*8]", "[2*8]", "clean"]),
        (["--model", "mlp"], ["resmlp", "mlp", "clean"]),
    ],
)
def test_a_different_arch_or_model_is_refused_and_the_checkpoint_left_untouched(
    trained, tmp_path, repo_dataset, capsys, change, named
):
    model_dir = copy_of(trained, tmp_path / "refuse")
    checkpoint = model_dir / DEFAULT_NAME
    original = checkpoint.read_bytes()
    argv = flags(model_dir, repo_dataset, "--meta-loops", "1", *change)
    message = refusal(capsys, "train", argv)[1]
    assert message.startswith("train:")
    for word in named:
        assert word in message
    assert checkpoint.read_bytes() == original
    assert logs(model_dir) == []
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "foreign", "empty"])
def test_a_damaged_checkpoint_is_refused_the_same_way(
    tmp_path, repo_dataset, trained, damage, capsys
):
    model_dir = copy_of(trained, tmp_path / damage)
    checkpoint = model_dir / DEFAULT_NAME
    good = checkpoint.read_bytes()
    bad = {
        "truncated": good[: len(good) // 2],
        "foreign": b"\x80\x04\x95not a safetensors file",
        "empty": b"",
    }[damage]
    checkpoint.write_bytes(bad)
    message = refusal(capsys, "train", flags(model_dir, repo_dataset, "--meta-loops", "1"))[1]
    assert message.startswith("train:")
    assert str(checkpoint) in message and "clean" in message
    assert checkpoint.read_bytes() == bad
    assert logs(model_dir) == []


def test_the_upstream_double_dash_form_is_accepted(tmp_path, repo_dataset):
    train.main(["--", *flags(tmp_path, repo_dataset, "--meta-loops", "1")])
    _, metadata = load_checkpoint(tmp_path / DEFAULT_NAME)
    assert metadata["loops_completed"] == 1
    assert metadata["arch"] == "1*8"


def test_the_same_seed_reproduces_the_same_run(trained, tmp_path, repo_dataset):
    train.main(flags(tmp_path, repo_dataset, "--meta-loops", "2"))
    again = read_lines(logs(tmp_path)[0])
    first = read_lines(logs(trained)[0])
    assert [line["val_accuracy"] for line in again] == [line["val_accuracy"] for line in first]
    _, metadata = load_checkpoint(tmp_path / DEFAULT_NAME)
    assert metadata["bounty"] == load_checkpoint(trained / DEFAULT_NAME)[1]["bounty"]


def test_without_a_seed_one_is_drawn_printed_and_recorded(tmp_path, repo_dataset, capsys):
    argv = flags(tmp_path, repo_dataset, "--meta-loops", "1", "--batch-size", "2048")
    argv[argv.index("--seed") : argv.index("--seed") + 2] = []
    train.main(argv)
    _, metadata = load_checkpoint(tmp_path / DEFAULT_NAME)
    assert f"seed {metadata['seed']}" in capsys.readouterr().out


def test_bf16_precision_is_recorded_and_the_checkpoint_stays_fp32(tmp_path, repo_dataset):
    train.main(flags(tmp_path, repo_dataset, "--meta-loops", "1", "--precision", "bf16"))
    tensors, metadata = load_checkpoint(tmp_path / DEFAULT_NAME)
    assert metadata["hyperparameters"]["precision"] == "bf16"
    assert {tensor.dtype for tensor in tensors.values()} == {torch.float32}
    assert metadata["bounty"] > VALIDATION_ZEROR + 20


def start_training(model_dir: Path, data_dir: Path, loops: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("SAGEMAKER_MODEL_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "psa.commands.train", *flags(model_dir, data_dir)]
        + ["--meta-loops", str(loops), "--batch-size", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # As for a program in a terminal: a runner started in the background (nohup, `&`)
        # passes on an ignored SIGINT, and Python then never turns Ctrl-C into an interrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_loops(process: subprocess.Popen, checkpoint: Path, loops: int, timeout: float):
    """Wait until the checkpoint records ``loops`` completed loops (or the process ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()[1][-2000:]}")
        # Written by an atomic rename: a reader sees the old file or the new one, whole.
        if checkpoint.exists() and load_checkpoint(checkpoint)[1]["loops_completed"] >= loops:
            return
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no checkpoint with {loops} loops after {timeout}s")


@pytest.mark.slow
def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path, repo_dataset):
    checkpoint = tmp_path / DEFAULT_NAME
    process = start_training(tmp_path, repo_dataset, loops=200)
    try:
        wait_for_loops(process, checkpoint, 1, timeout=180)
        time.sleep(0.7)  # somewhere inside a later loop, possibly mid-save
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    _, metadata = load_checkpoint(checkpoint)
    done = metadata["loops_completed"]
    assert done >= 1
    [log] = logs(tmp_path)
    # Each loop's line is written just before its checkpoint: at most one line ahead of it.
    assert [line["loop"] for line in read_lines(log)][:done] == list(range(1, done + 1))
    assert len(read_lines(log)) in (done, done + 1)

    train.main(flags(tmp_path, repo_dataset, "--meta-loops", "1"))
    _, resumed = load_checkpoint(checkpoint)
    assert resumed["loops_completed"] == done + 1
    # The resumed run dropped the line of the loop the checkpoint did not hold.
    assert [line["loop"] for line in read_lines(log)] == list(range(1, done + 1))
    [newest] = [path for path in logs(tmp_path) if path != log]
    assert [line["loop"] for line in read_lines(newest)] == [done + 1]


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_reports_the_bounty_and_test_accuracy(
    tmp_path, repo_dataset, stop
):
    checkpoint = tmp_path / DEFAULT_NAME
    process = start_training(tmp_path, repo_dataset, loops=200)
    try:
        # Right after a checkpoint appears is when the log line is still being written.
        wait_for_loops(process, checkpoint, 2, timeout=180)
        process.send_signal(stop)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + stop, err
    assert "Traceback" not in err
    _, metadata = load_checkpoint(checkpoint)
    done = metadata["loops_completed"]
    assert done >= 2
    [log] = logs(tmp_path)
    assert len(read_lines(log)) == done
    name = signal.Signals(stop).name
    assert err.splitlines()[-1] == (
        f"train: stopped by {name}; the LKG checkpoint holds every completed meta-loop "
        f"({done}); rerun with --meta-loops {200 - done} to reach the 200 planned (the same "
        "command runs its --meta-loops again, from the checkpoint's loops on)"
    )
    if stop == signal.SIGINT:
        assert_printed(quoted("TOOLS.md", "train: stopped by SIGINT; the LKG"), err)
    assert "Interrupted" not in out
    bounty = [line for line in out.splitlines() if line.startswith("Final Bounty")]
    assert len(bounty) == 1
    assert f"{metadata['bounty']:.2f}% @ {metadata['bounty_loop']}/{done}" in bounty[0]
    final_test = [line for line in out.splitlines() if line.startswith("Final Test Accuracy")]
    assert len(final_test) == 1
    assert float(final_test[0].split(":")[-1].strip().rstrip("%")) > 11.35 + 20


@pytest.mark.slow
def test_a_stop_before_the_first_loop_saves_nothing_says_so_and_leaves_no_log(
    tmp_path, repo_dataset
):
    process = start_training(tmp_path, repo_dataset, loops=200)
    try:
        header = []
        for line in process.stdout:  # the data are loaded: the first loop is running
            header.append(line)
            if line.startswith("Data ready"):
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    out = "".join(header) + out
    assert process.returncode == 130, err
    assert "Traceback" not in err
    if (tmp_path / DEFAULT_NAME).exists():
        pytest.skip("the first loop finished before the stop landed on this machine")
    # The stop's one line (stderr, last) says nothing was saved; no summary of a checkpoint.
    last = err.splitlines()[-1]
    assert last.startswith("train: stopped by SIGINT; ") and "nothing was saved" in last, err
    assert "LKG checkpoint holds" not in out + err
    assert "Final Bounty" not in out
    assert logs(tmp_path) == []
