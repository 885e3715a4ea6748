"""decay trials where they compute exactly what none does (AdamW's decay factor 1 - lr*wd is 1.0
in float32, as at the paper's lr 1e-4 and weight decay 1e-4): not trained, their records and
loop logs copied from their none twin and saying so; --train-decay trains them; the batch plan,
--dry-run and its time projection show it. Where the factor is not 1, nothing is copied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psa.commands import sweep as sweep_command
from psa.config import Hyperparameters
from psa.store import ResultsStore
from psa.sweep import runner as sweep_runner
from psa.sweep.plan import decay_is_none

TWIN_FIELDS = ("twin_of", "twin_reason")
# What differs between two runs of the same trial: wall clock, the session, the batch it ran in.
RUN_FIELDS = ("seconds", "train_seconds", "provenance", "run_id", "trials_in_batch")


def sweep(monkeypatch, data, results: Path, *flags: str) -> None:
    """Run a small sweep of none and decay on ``data``; what it printed."""
    monkeypatch.setattr(sweep_runner, "load_mnist", lambda *args, **kwargs: data)
    sweep_command.main(
        [
            *("--arch", "[1*8]", "--modes", "none,decay", "--trials", "2", "--meta-loops", "2"),
            *("--seed", "5", "--device", "cpu", "--results-dir", str(results), *flags),
        ]
    )


def decay_outcome(results: Path) -> dict:
    """Each decay trial's record and loop log, without the fields of a run's own."""
    store = ResultsStore(results)
    found = {}
    for record in store.records():
        if record["mode"] != "decay":
            continue
        path = store.named_log_path(f"logs/1x8/decay-t{record['trial']}.jsonl")
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        found[record["trial"]] = {
            "record": {k: v for k, v in record.items() if k not in RUN_FIELDS},
            "log": [{k: v for k, v in line.items() if k not in RUN_FIELDS} for line in lines],
        }
    return found


def without_twin_fields(outcome: dict) -> dict:
    return {
        trial: {
            "record": {k: v for k, v in o["record"].items() if k not in TWIN_FIELDS},
            "log": [{k: v for k, v in line.items() if k not in TWIN_FIELDS} for line in o["log"]],
        }
        for trial, o in outcome.items()
    }


def test_decay_is_none_exactly_where_its_factor_is_one_in_float32():
    assert decay_is_none(Hyperparameters())  # the paper's lr 1e-4, weight decay 1e-4
    assert decay_is_none(Hyperparameters(weight_decay=0.0))
    assert not decay_is_none(Hyperparameters(lr=2e-3, weight_decay=0.05))
    assert not decay_is_none(Hyperparameters(lr=1e-3, weight_decay=1e-4))  # 1 - 1e-7 < 1


def test_at_the_papers_settings_a_copied_decay_is_the_trained_one(
    tmp_path, monkeypatch, mnist_small, capsys
):
    copied, trained = tmp_path / "copied", tmp_path / "trained"
    sweep(monkeypatch, mnist_small, copied)
    out = capsys.readouterr().out
    assert "Sweep: 1 batch, 2 trials (+2 decay copied from none) x 2 meta-loops" in out
    assert "K=2" in out and "K=4" not in out
    sweep(monkeypatch, mnist_small, trained, "--train-decay")
    assert "Sweep: 1 batch, 4 trials x 2 meta-loops" in capsys.readouterr().out
    was_copied, was_trained = decay_outcome(copied), decay_outcome(trained)
    assert sorted(was_copied) == sorted(was_trained) == [1, 2]
    for outcome in was_copied.values():  # the copies say whose they are and why
        assert outcome["record"]["twin_of"] == "none"
        assert "1.0 in float32" in outcome["record"]["twin_reason"]
        assert all(line["twin_of"] == "none" for line in outcome["log"])
        assert [line["loop"] for line in outcome["log"]] == [1, 2]
    for outcome in was_trained.values():
        assert not set(TWIN_FIELDS) & set(outcome["record"])
    assert without_twin_fields(was_copied) == was_trained
    # The copy keeps decay's own seeds (its ablation seed is decay's, though unused).
    none = [r for r in ResultsStore(copied).records() if r["mode"] == "none"]
    assert all(r["seeds"]["ablation"] != was_copied[r["trial"]]["record"]["seeds"]["ablation"]
               for r in none)  # fmt: skip


def test_where_the_factor_is_not_one_nothing_is_copied_and_decay_differs(
    tmp_path, monkeypatch, mnist_small, capsys
):
    results = tmp_path / "results"
    sweep(monkeypatch, mnist_small, results, "--lr", "2e-3", "--weight-decay", "20")
    assert "decay copied" not in capsys.readouterr().out
    records = {(r["mode"], r["trial"]): r for r in ResultsStore(results).records()}
    assert len(records) == 4 and not any("twin_of" in r for r in records.values())
    decay = decay_outcome(results)
    for trial in (1, 2):
        log = ResultsStore(results).named_log_path(f"logs/1x8/none-t{trial}.jsonl")
        none = [json.loads(line)["val_accuracy"] for line in log.read_text().splitlines()]
        assert [line["val_accuracy"] for line in decay[trial]["log"]] != none


def test_the_dry_run_shows_the_copied_decay_trials_and_projects_without_them(
    tmp_path, monkeypatch, mnist_small, capsys
):
    results = tmp_path / "results"
    sweep(monkeypatch, mnist_small, results, "--trials", "10", "--dry-run")
    copied = capsys.readouterr().out
    sweep(monkeypatch, mnist_small, results, "--trials", "10", "--dry-run", "--train-decay")
    trained = capsys.readouterr().out
    assert "10 decay trials not trained: AdamW's decay factor 1 - lr*wd" in copied
    assert "decay copied from none" in copied and "decay copied" not in trained
    assert "10 trials to run" in copied and "20 trials to run" in trained
    assert not results.exists()


@pytest.mark.parametrize("shards", [2])
def test_shards_copy_each_twin_with_its_none_trial(
    tmp_path, monkeypatch, mnist_small, capsys, shards
):
    results = tmp_path / "results"
    for index in range(1, shards + 1):
        sweep(monkeypatch, mnist_small, results, "--max-batch", "1", "--shard", f"{index}/{shards}")
    records = ResultsStore(results).records()
    assert sorted((r["mode"], r["trial"]) for r in records) == [
        ("decay", 1), ("decay", 2), ("none", 1), ("none", 2)
    ]  # fmt: skip
    capsys.readouterr()
    sweep_command.main(["--status", "--results-dir", str(results)])
    assert "2 batches of 4 trials; 4 trials recorded" in capsys.readouterr().out
