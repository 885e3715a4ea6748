"""Absolute pins: a tiny sweep (two architectures, all six modes, two meta-loops, a fixed seed, the
a learning rate and weight decay large enough to act within two loops on the first rows of real
MNIST) whose per-loop validation accuracies,
records and LKG tensor hashes are committed in tests/golden/tiny_run.json; and the promise of
psa.seeds that a sweep trial is ``train --seed <its run seed>``, bit for bit.

Every other end-to-end check compares the code with itself; this one fails when a change moves
any number the method produces. The pins are of fp32 on the CPU; set PSA_UPDATE_GOLDEN=1 to
rewrite them after a deliberate change of the method (say so in the commit), never in CI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from psa.checkpoint import DEFAULT_NAME, load_checkpoint
from psa.commands import sweep as sweep_command
from psa.commands import train as train_command
from psa.model import trial_state_dict
from psa.modes import MODES
from psa.seeds import trial_run_seed
from psa.store import ResultsStore, run_logs
from psa.sweep import runner as sweep_runner

GOLDEN = Path(__file__).parent / "golden" / "tiny_run.json"
UPDATE = os.environ.get("PSA_UPDATE_GOLDEN") == "1"
ARCHS = ("[1*8]", "[2*4]")
LOOPS, SEED = 2, 2026
METHOD = ("--lr", "2e-3", "--weight-decay", "0.05", "--dropout", "0.2")
# Fields of a loop line or record that are the method's (not wall clock, run ids or provenance).
LOOP_FIELDS = ("loop", "ablation", "val_accuracy", "lkg_accuracy", "promoted")
RECORD_FIELDS = ("seeds", "loops_run", "val_bounty", "bounty_loop", "test_accuracy")


def tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + b"\0")
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_sweep(monkeypatch, data, results: Path, *flags: str) -> dict:
    """Run sweep in this process on ``data``; the LKG tensors it last saved, per trial."""
    monkeypatch.setattr(sweep_runner, "load_mnist", lambda *args, **kwargs: data)
    saved: dict = {}
    save = ResultsStore.save_batch

    def recording(store, state, tensors):
        for k, trial in enumerate(state.trials):  # each trial's LKG under its upstream names
            saved[trial] = trial_state_dict(state.layout, tensors["lkg"], k)
        return save(store, state, tensors)

    monkeypatch.setattr(ResultsStore, "save_batch", recording)
    sweep_command.main(
        [
            *("--seed", str(SEED), "--meta-loops", str(LOOPS), "--device", "cpu"),
            *("--results-dir", str(results)),
            *METHOD,
            *flags,
        ]
    )
    monkeypatch.setattr(ResultsStore, "save_batch", save)
    return saved


def outcomes(results: Path, saved: dict) -> dict:
    store = ResultsStore(results)
    found = {}
    for record in store.records():
        [trial] = [t for t in saved if (t.arch.key, t.mode, t.index) == (
            record["arch"], record["mode"], record["trial"])]  # fmt: skip
        lines = [json.loads(line) for line in store.log_path(trial).read_text().splitlines()]
        found[f"{trial.arch.key}/{trial.mode}/t{trial.index}"] = {
            "loops": [{field: line[field] for field in LOOP_FIELDS} for line in lines],
            "record": {field: record[field] for field in RECORD_FIELDS},
            "lkg_sha256": tensor_hash(saved[trial]),
        }
    return dict(sorted(found.items()))


@pytest.fixture(scope="module")
def module_monkeypatch():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, module_monkeypatch, mnist_small) -> dict:
    results = tmp_path_factory.mktemp("golden") / "results"
    archs = [flag for arch in ARCHS for flag in ("--arch", arch)]
    saved = run_sweep(
        module_monkeypatch, mnist_small, results, *archs, "--trials", "1", "--max-batch", "6"
    )
    return outcomes(results, saved)


def test_a_tiny_sweep_reproduces_its_committed_accuracies_and_lkg_tensors(tiny_run):
    assert len(tiny_run) == len(ARCHS) * len(MODES)
    if UPDATE:
        GOLDEN.write_text(json.dumps(tiny_run, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert tiny_run.keys() == golden.keys()
    for key, pinned in golden.items():
        assert tiny_run[key] == pinned, key


def test_the_pinned_run_is_a_real_one(tiny_run):
    """The pins are of networks that learned and of modes that did different things."""
    for key, outcome in tiny_run.items():
        assert outcome["record"]["val_bounty"] > 25, key  # chance is 10 %
        assert [line["loop"] for line in outcome["loops"]] == [1, 2]
    hashes = {outcome["lkg_sha256"] for outcome in tiny_run.values()}
    assert len(hashes) == len(tiny_run)  # every mode did something of its own


def test_a_sweep_trial_equals_train_with_its_run_seed_bit_for_bit(
    tmp_path, monkeypatch, mnist_small, capsys
):
    """psa.seeds: a sweep trial is ``train --seed <its run seed> --ablation-mode <its mode>``.
    Trial 2 (a run seed derived from the base seed), alone in its batch."""
    monkeypatch.delenv("SAGEMAKER_MODEL_DIR", raising=False)
    arch, mode, index = "[2*4]", "hidden", 2
    results = tmp_path / "results"
    saved = run_sweep(
        monkeypatch, mnist_small, results,
        *("--arch", arch, "--modes", mode, "--trials", str(index), "--max-batch", "1"),
    )  # fmt: skip
    [trial] = [t for t in saved if t.index == index]
    store = ResultsStore(results)
    [record] = [r for r in store.records() if r["trial"] == index]
    sweep_lines = [json.loads(line) for line in store.log_path(trial).read_text().splitlines()]

    monkeypatch.setattr(train_command, "load_mnist", lambda *args, **kwargs: mnist_small)
    model_dir = tmp_path / "model"
    run_seed = trial_run_seed(SEED, index)
    assert record["seeds"]["run"] == run_seed
    capsys.readouterr()
    train_command.main(
        [
            *("--arch", arch, "--ablation-mode", mode, "--seed", str(run_seed)),
            *("--meta-loops", str(LOOPS), "--device", "cpu", "--model-dir", str(model_dir)),
            *METHOD,
        ]
    )
    out = capsys.readouterr().out
    tensors, metadata = load_checkpoint(model_dir / DEFAULT_NAME)
    assert tensors.keys() == saved[trial].keys()
    for name, tensor in tensors.items():
        assert torch.equal(tensor, saved[trial][name]), name
    [log] = run_logs(model_dir, model_dir / DEFAULT_NAME)
    train_lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [{f: line[f] for f in LOOP_FIELDS} for line in train_lines] == [
        {f: line[f] for f in LOOP_FIELDS} for line in sweep_lines
    ]
    assert (metadata["bounty"], metadata["bounty_loop"]) == (
        record["val_bounty"],
        record["bounty_loop"],
    )
    assert f"Final Test Accuracy: {record['test_accuracy']:.2f}%" in out
