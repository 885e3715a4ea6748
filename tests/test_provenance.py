"""Provenance: captured once per command run into provenance/<id>.json, complete (every field of
psa.provenance.FIELDS), named by every trial record and loop-log line the run wrote, kept by a
merge; a dirty checkout's diff saved beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from psa import provenance
from psa.commands import merge_results, train
from psa.commands import sweep as sweep_command
from psa.store import ResultsStore
from psa.store.provenance import read_provenance
from psa.store.schema import PER_RUN_FIELDS
from psa.sweep import runner as sweep_runner

# Fields every run on this machine has a value for (the others are None off a GPU or a checkout).
ALWAYS = {
    "id",
    "command",
    "cwd",
    "started",
    "ended",
    "outcome",
    "host",
    "os",
    "python",
    "psa_version",
    "torch_version",
    "numpy_version",
    "device",
    "device_model",
    "torch_threads",
    "float32_matmul_precision",
    "deterministic_algorithms",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "cuda_matmul_allow_tf32",
    "cudnn_allow_tf32",
    "packages",
}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_data(monkeypatch, mnist_small):
    monkeypatch.setattr(sweep_runner, "load_mnist", lambda *args, **kwargs: mnist_small)
    monkeypatch.setattr(train, "load_mnist", lambda *args, **kwargs: mnist_small)


def assert_complete(run: dict) -> None:
    assert tuple(run) == provenance.FIELDS  # a field gone missing fails here
    assert all(run[key] is not None for key in ALWAYS), {k: run[k] for k in ALWAYS}
    assert run["outcome"] == "finished" and run["ended"] >= run["started"]
    assert run["device"] == "cpu"


def test_a_new_sweep_records_name_one_complete_provenance(tmp_path, repo_dataset, small_data):
    results = tmp_path / "results"
    argv = ["--arch", "[1*8]", "--modes", "none,full", "--trials", "1", "--meta-loops", "2"]
    argv += ["--seed", "1", "--results-dir", str(results), "--data-dir", str(repo_dataset)]
    sweep_command.main([*argv, "--device", "cpu"])
    [(run_id, run)] = read_provenance(results).items()
    assert_complete(run)
    records = ResultsStore(results).records()
    assert len(records) == 2 and {r["provenance"] for r in records} == {run_id}
    lines = [json.loads(x) for p in ResultsStore(results).log_files() for x in p.open()]
    assert len(lines) == 4 and {line["provenance"] for line in lines} == {run_id}
    if run["git_dirty"]:
        diff = (results / "provenance" / run["git_diff_file"]).read_bytes()
        assert hashlib.sha256(diff).hexdigest() == run["git_diff_sha256"]

    # merge-results keeps the runs its records name and records its own run.
    merged = tmp_path / "merged"
    merge_results.main(["--results-dir", str(merged), str(results)])
    runs = read_provenance(merged)
    assert run_id in runs and len(runs) == 2
    assert runs[run_id] == run
    assert {r["provenance"] for r in ResultsStore(merged).records()} == {run_id}


def test_a_new_train_run_logs_name_one_complete_provenance(tmp_path, repo_dataset, small_data):
    model_dir = tmp_path / "model"
    argv = ["--arch", "[1*8]", "--seed", "2", "--batch-size", "64", "--meta-loops", "2"]
    train.main([*argv, "--model-dir", str(model_dir), "--data-dir", str(repo_dataset)])
    [(run_id, run)] = read_provenance(model_dir).items()
    assert_complete(run)
    [log] = model_dir.glob("mnist_lkg.*.jsonl")
    assert log.name == f"mnist_lkg.{run_id}.jsonl"
    assert {json.loads(line)["provenance"] for line in log.open()} == {run_id}


def test_a_dirty_checkout_saves_its_diff_and_its_hash(tmp_path, monkeypatch):
    dirty = provenance.GitState("0" * 40, "diff --git a/x b/x\n")
    monkeypatch.setattr(provenance, "_git_state", lambda: dirty)
    run = provenance.capture()
    assert run.fields["git_dirty"] is True and run.fields["git_diff_file"] == f"{run.id}.diff"
    from psa.store.provenance import write_provenance

    write_provenance(tmp_path, run)
    assert (tmp_path / "provenance" / f"{run.id}.diff").read_text() == "diff --git a/x b/x\n"
    stored = json.loads((tmp_path / "provenance" / f"{run.id}.json").read_text())
    assert stored["git_diff_sha256"] == hashlib.sha256(b"diff --git a/x b/x\n").hexdigest()


def test_run_ids_sort_by_start_and_differ():
    ids = [provenance.new_id() for _ in range(50)]
    stamps = [run_id.split("-")[0] for run_id in ids]
    assert len(set(ids)) == 50 and stamps == sorted(stamps)


def test_the_per_run_fields_are_the_timing_and_the_run_reference():
    assert {"seconds", "train_seconds", "provenance"} == PER_RUN_FIELDS


def test_a_stopped_run_is_marked_stopped(tmp_path):
    from psa.store.provenance import recording

    run = provenance.capture()
    with pytest.raises(KeyboardInterrupt), recording(Path(tmp_path), run):
        raise KeyboardInterrupt
    stored = json.loads((tmp_path / "provenance" / f"{run.id}.json").read_text())
    assert stored["outcome"] == "stopped" and stored["ended"]


def test_provenance_records_every_installed_distribution_and_its_version():
    import numpy
    import torch

    import psa

    listed = provenance.capture().fields["packages"].splitlines()
    packages = dict(line.split("==", 1) for line in listed)
    assert packages["torch"] == torch.__version__.split("+")[0]  # without the CUDA build label
    assert packages["numpy"] == numpy.__version__
    assert packages["persistent-stochastic-ablation"] == psa.__version__
    assert list(packages) == sorted(packages, key=str.lower) and len(packages) == len(listed)


def test_a_run_under_python_m_psa_records_the_command_as_typed(monkeypatch):
    args = ["train", "--arch", "[4*17]", "--model-dir", "my models"]
    monkeypatch.setattr(sys, "argv", ["/checkout/src/psa/__main__.py", *args])
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-X", "utf8", "-m", "psa", *args])
    expected = "python3 -X utf8 -m psa train --arch '[4*17]' --model-dir 'my models'"
    assert provenance.capture().fields["command"] == expected


def test_a_console_script_run_records_its_name_and_quoted_arguments(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/train", "--arch", "[4*17]", "--seed", "1"])
    assert provenance.capture().fields["command"] == "train --arch '[4*17]' --seed 1"


@pytest.mark.slow
def test_the_recorded_command_of_python_m_psa_train_reruns_as_written(tmp_path, repo_dataset):
    models = tmp_path / "my models"
    argv = [sys.executable, "-m", "psa", "train", "--arch", "[1*4]", "--meta-loops", "1"]
    argv += ["--seed", "3", "--device", "cpu", "--model-dir", str(models)]
    argv += ["--data-dir", str(repo_dataset)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    [run] = read_provenance(models).values()
    assert run["command"] == shlex.join(argv)
    again = shlex.split(run["command"])
    rerun = subprocess.run(again, cwd=run["cwd"], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_provenance(models)) == 2


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A committed src/ layout checkout that provenance takes for psa's."""
    root = tmp_path / "checkout"
    (root / "src" / "psa").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "src" / "psa" / "__init__.py").write_text("")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    monkeypatch.setattr(provenance, "_checkout_root", lambda: root)
    return root


def test_new_files_under_src_get_one_warning_line_saying_which_the_saved_diff_holds(
    checkout, tmp_path, capsys
):
    from psa.store.provenance import recording

    (checkout / "src" / "psa" / "staged.py").write_text("staged = 1\n")
    git(checkout, "add", "src/psa/staged.py")
    (checkout / "src" / "psa" / "scratch.py").write_text("scratch = 2\n")
    (checkout / "notes.md").write_text("not under src/\n")
    run = provenance.capture()
    assert "b/src/psa/staged.py" in run.diff and "scratch.py" not in run.diff
    assert run.fields["git_untracked"] == "src/psa/scratch.py"
    with recording(tmp_path / "out", run):
        pass
    assert capsys.readouterr().err == (
        "psa: warning: files under src/ that the commit lacks (staged, in the saved diff: "
        "src/psa/staged.py; untracked, not in the saved diff: src/psa/scratch.py); commit them "
        "so the provenance names the source that ran\n"
    )


def test_a_committed_source_gets_no_warning(checkout, tmp_path, capsys):
    from psa.store.provenance import recording

    (checkout / "notes.md").write_text("untracked, but not under src/\n")
    run = provenance.capture()
    with recording(tmp_path / "out", run):
        pass
    assert capsys.readouterr().err == "" and run.fields["git_untracked"] is None
    assert run.fields["git_dirty"] is False
