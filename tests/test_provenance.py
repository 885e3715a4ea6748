"""Provenance: captured once per command run into provenance/<id>.json, complete (every field of
psa.provenance.FIELDS), named by every trial record and loop-log line the run wrote, kept by a
merge; a dirty checkout's diff saved beside it."""

from __future__ import annotations

import hashlib
import json
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
}


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
    monkeypatch.setattr(provenance, "_git_state", lambda: ("0" * 40, "diff --git a/x b/x\n"))
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
