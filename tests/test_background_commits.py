"""A sweep that writes each loop's state on a thread while the next loop trains (its default on
CUDA, forced here on the CPU) ends with what a sweep writing in line does, prints a loop only once
its state has landed, and a stop waits for the write in flight."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from safetensors import safe_open

from psa.commands import sweep as sweep_command
from psa.engine import Engine
from psa.store import ResultsStore
from psa.store.results import BATCH_METADATA_KEY
from psa.store.results import ResultsStore as StoreClass
from psa.sweep import runner as sweep_runner
from psa.sweep.runner import BatchRunner

ARCHS, MODES, TRIALS, LOOPS, SEED = ("[1*8]", "[2*4]"), "none,dropout,full", 2, 4, 11


def sweep_argv(results: Path, data_dir: Path) -> list[str]:
    return [
        *[flag for arch in ARCHS for flag in ("--arch", arch)],
        *("--modes", MODES, "--trials", str(TRIALS), "--meta-loops", str(LOOPS)),
        *("--seed", str(SEED), "--results-dir", str(results), "--data-dir", str(data_dir)),
        *("--device", "cpu"),
    ]


@pytest.fixture
def small_data(monkeypatch, mnist_small):
    monkeypatch.setattr(sweep_runner, "load_mnist", lambda *args, **kwargs: mnist_small)


def background(monkeypatch, on: bool) -> None:
    monkeypatch.setattr(BatchRunner, "_background_commits", lambda self, engine: on)


def outputs(results: Path) -> dict[str, object]:
    """Records without their per-run fields, and every loop log line without its timing."""
    drop = {"seconds", "train_seconds", "provenance"}
    records = [
        {k: v for k, v in json.loads(line).items() if k not in drop}
        for line in (results / "trials.jsonl").read_text().splitlines()
    ]
    logs = {
        path.relative_to(results).as_posix(): [
            {k: v for k, v in json.loads(line).items() if k not in drop}
            for line in path.read_text().splitlines()
        ]
        for path in ResultsStore(results).log_files()
    }
    return {"records": records, "logs": logs}


def test_writing_in_the_background_ends_as_writing_in_line(
    tmp_path, repo_dataset, small_data, monkeypatch
):
    writers = set()
    save = StoreClass.save_batch

    def noting_the_thread(self, *args, **kwargs):
        writers.add(threading.current_thread() is threading.main_thread())
        return save(self, *args, **kwargs)

    monkeypatch.setattr(StoreClass, "save_batch", noting_the_thread)
    background(monkeypatch, False)
    sweep_command.main(sweep_argv(tmp_path / "in-line", repo_dataset))
    assert writers == {True}
    writers.clear()
    background(monkeypatch, True)
    sweep_command.main(sweep_argv(tmp_path / "background", repo_dataset))
    assert writers == {False}  # every write ran on the commit thread
    assert outputs(tmp_path / "background") == outputs(tmp_path / "in-line")


def test_a_loop_is_printed_once_its_state_has_landed_and_a_stop_waits_for_the_write(
    tmp_path, repo_dataset, small_data, monkeypatch, capsys
):
    results = tmp_path / "results"
    background(monkeypatch, True)
    landed = []
    save, run_loop = StoreClass.save_batch, Engine.run_loop

    def slow_save(self, state, tensors):
        threading.Event().wait(0.2)  # still writing while the next loop trains
        save(self, state, tensors)
        landed.append(state.loops_completed)

    printed = []  # (loop, the loops whose state had landed when it was printed)
    loop_done = sweep_runner.LoopDone

    def noting_what_landed(started, loop, *rest):
        printed.append((loop, list(landed)))
        return loop_done(started, loop, *rest)

    def stop_in_loop_three(self, *args, **kwargs):
        if self.loops_completed == 2:
            raise KeyboardInterrupt
        return run_loop(self, *args, **kwargs)

    monkeypatch.setattr(StoreClass, "save_batch", slow_save)
    monkeypatch.setattr(Engine, "run_loop", stop_in_loop_three)
    monkeypatch.setattr(sweep_runner, "LoopDone", noting_what_landed)
    with pytest.raises(SystemExit) as stopped:
        sweep_command.main(sweep_argv(results, repo_dataset))
    assert stopped.value.code == 130
    out = capsys.readouterr().out
    loop_lines = [line for line in out.splitlines() if " loop " in line and "best LKG" in line]
    assert len(loop_lines) == 2  # loops 1 and 2 of the first batch, each after its write
    assert landed == [1, 2]  # the stop waited for loop 2's write
    assert printed == [(1, [1]), (2, [1, 2])]  # each loop printed once its state had landed
    for number, line in zip((1, 2), loop_lines):
        assert f"loop {number}/{LOOPS}" in line
    [saved] = (results / "batches").glob("*.safetensors")
    with safe_open(saved, framework="pt") as handle:
        assert json.loads(handle.metadata()[BATCH_METADATA_KEY])["loops_completed"] == 2

    monkeypatch.setattr(Engine, "run_loop", run_loop)
    monkeypatch.setattr(StoreClass, "save_batch", save)
    sweep_command.main(sweep_argv(results, repo_dataset))
    assert "resuming at loop 3/4" in capsys.readouterr().out
    background(monkeypatch, False)
    sweep_command.main(sweep_argv(tmp_path / "uninterrupted", repo_dataset))
    assert outputs(results) == outputs(tmp_path / "uninterrupted")
