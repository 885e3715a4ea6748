"""Chaos: sweep and train stopped by SIGINT, SIGTERM and SIGKILL at random instants and inside
every critical section (tests/chaos_entry.py makes a function signal its own process), then
resumed. After every stop what is on disk must agree with itself, the exit status must name the
signal, train's printed summary must be its checkpoint's, and the finished sweep must equal an
uninterrupted one bit for bit (all but wall-clock seconds). Two sweeps started at once on one
results dir must split the work and leave the same result."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psa.arch import Arch, parse_arch, parse_key
from psa.checkpoint import DEFAULT_NAME, load_checkpoint
from psa.engine import Engine, Hyperparameters, TrialSpec
from psa.model import build_architecture
from psa.records import PER_RUN_FIELDS
from psa.seeds import run_seeds
from psa.store import ResultsStore, Trial, run_logs

ENTRY = Path(__file__).with_name("chaos_entry.py")
ARCHS = ("[1*8]", "[2*4]")
SHAPES = tuple(parse_arch(arch) for arch in ARCHS)
MODES, TRIALS, LOOPS, SEED, MAX_BATCH = ("none", "dropout", "hidden"), 2, 4, 5, 3
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
TRAIN_LOOPS, TRAIN_SEED, TRAIN_BATCH = 5, 7, 64
TIMING = PER_RUN_FIELDS  # wall clock and run id: the only fields a resume may change

# (function, call number, signal, when): every place where a stop could split what sweep writes.
SWEEP_INJECTIONS = [
    ("psa.engine:Engine._promote", 2, "INT", "before"),  # the engine's promote-and-count
    ("psa.store.jsonlines:LineLog.append", 2, "TERM", "after"),  # between two trials' lines
    ("psa.store.results:ResultsStore.save_chunk", 1, "KILL", "before"),  # lines, no state
    ("psa.store.jsonlines:LineLog._write", 1, "KILL", "torn"),  # inside an append
    ("psa.store.results:ResultsStore.save_chunk", 2, "KILL", "after"),  # right at a boundary
    ("psa.atomic:write_atomically", 1, "KILL", "before"),
    ("psa.store.results:ResultsStore.write_records", 1, "KILL", "after"),  # records, state
    ("psa.store.results:ResultsStore.delete_chunk", 1, "INT", "after"),
    ("psa.store.claims:Claim.release", 1, "KILL", "before"),  # a claim of a dead process
    ("psa.store.results:ResultsStore.merge_records", 1, "TERM", "before"),
    ("psa.markdown:write_tables", 1, "KILL", "before"),
]
TRAIN_INJECTIONS = [
    ("psa.engine:Engine._promote", 2, "INT", "before"),  # promoted in memory, not on disk
    ("psa.store.jsonlines:LineLog.append", 1, "TERM", "before"),
    ("psa.checkpoint:save_checkpoint", 1, "KILL", "before"),  # a log line, no checkpoint
    ("psa.store.jsonlines:LineLog._write", 1, "KILL", "torn"),
    ("psa.atomic:write_atomically", 2, "KILL", "after"),
]


def launch(command: str, argv: list[str], fired: Path, chaos: str | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.update(PSA_CHAOS_SUBSET="1", PSA_CHAOS_FIRED=str(fired))
    env.update(PSA_CHAOS_STARTED=str(fired.with_name("started")))
    fired.with_name("started").unlink(missing_ok=True)
    env.pop("SAGEMAKER_MODEL_DIR", None)
    env.pop("PSA_CHAOS", None)
    if chaos:
        env["PSA_CHAOS"] = chaos
    return subprocess.Popen(
        [sys.executable, str(ENTRY), command, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_started(fired: Path) -> None:
    """Until the entry layer handles signals (a stop before that is the interpreter's)."""
    deadline = time.monotonic() + 120
    while not fired.with_name("started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    return process.returncode, out, err


def sweep_argv(results: Path, data_dir: Path) -> list[str]:
    return [
        *[flag for arch in ARCHS for flag in ("--arch", arch)],
        *("--modes", ",".join(MODES), "--trials", str(TRIALS), "--meta-loops", str(LOOPS)),
        *("--seed", str(SEED), "--max-batch", str(MAX_BATCH), "--device", "cpu"),
        *("--results-dir", str(results), "--data-dir", str(data_dir)),
    ]


def every_trial() -> list[Trial]:
    return [Trial(a, m, t) for a in SHAPES for m in MODES for t in range(1, TRIALS + 1)]


def read_log(path: Path) -> tuple[list[dict], bool]:
    """The complete lines of a loop log, and whether its last line is a torn append."""
    if not path.exists():
        return [], False
    text = path.read_text()
    lines = text.split("\n")
    last = lines.pop()
    return [json.loads(line) for line in lines if line.strip()], bool(last.strip())


def without_timing(line: dict) -> dict:
    return {key: value for key, value in line.items() if key not in TIMING}


def snapshot(results: Path) -> tuple[dict, dict]:
    """Records and loop logs of a finished sweep, keyed by trial, wall-clock fields left out."""
    store = ResultsStore(results)
    records = {(r["arch"], r["mode"], r["trial"]): without_timing(r) for r in store.records()}
    logs = {
        trial: [without_timing(line) for line in read_log(store.log_path(trial))[0]]
        for trial in every_trial()
    }
    return records, logs


def assert_consistent(results: Path) -> None:
    """What must hold at any instant: (a) each trial's log holds loops 1..m once each, m its
    saved loops or one more (the loop in flight; the next run drops it), (b) a recorded trial
    has its whole log and is recorded once, (e) progress saved at the last loop boundary."""
    store = ResultsStore(results)
    unit_lines = [
        json.loads(line)
        for path in store.unit_record_files()
        for line in path.read_text().splitlines()
    ]
    units = [(r["arch"], r["mode"], r["trial"]) for r in unit_lines]
    assert len(units) == len(set(units)), "a trial recorded twice"
    recorded = {Trial(parse_key(a), m, t) for a, m, t in units} | store.recorded_trials("resmlp")
    saved = {t: s.loops_completed for a in SHAPES for s in store.saved_chunks(a) for t in s.trials}
    for trial in every_trial():
        lines, _torn = read_log(store.log_path(trial))
        loops = [line["loop"] for line in lines]
        assert loops == list(range(1, len(loops) + 1)), f"{trial}: loops {loops}"
        if trial in recorded:
            assert loops == list(range(1, LOOPS + 1)), f"{trial} recorded with loops {loops}"
        else:
            done = saved.get(trial, 0)
            assert len(loops) in (done, done + 1), f"{trial}: loops {loops}, saved {done}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, repo_dataset):
    """The uninterrupted sweep, run the same way (through the entry, on the same data)."""
    tmp = tmp_path_factory.mktemp("chaos-reference")
    status, out, err = finish(launch("sweep", sweep_argv(tmp / "r", repo_dataset), tmp / "f"))
    assert status == 0, err
    return snapshot(tmp / "r")


def assert_finished_like(results: Path, reference) -> None:
    assert snapshot(results) == reference
    store = ResultsStore(results)
    assert store.saved_chunks(SHAPES[0]) == store.saved_chunks(SHAPES[1]) == []
    assert not list((results / "claims").glob("**/*.claim"))
    lines = store.trials_path.read_text().splitlines()
    assert len(lines) == len(every_trial())  # merged, each trial once
    assert store.table_path("resmlp").exists() and store.summary_path("resmlp").exists()


def run_injected(results, repo_dataset, tmp_path, injection) -> tuple[int, str, str]:
    function, nth, name, when = injection
    fired = tmp_path / "fired"
    fired.unlink(missing_ok=True)
    chaos = f"{function}:{nth}:{name}:{when}"
    process = launch("sweep", sweep_argv(results, repo_dataset), fired, chaos)
    status, out, err = finish(process)
    assert fired.exists(), f"{injection} never fired: {err[-800:]}"
    number = signal.SIGKILL if when == "torn" else SIGNALS[name]
    assert status == EXIT[number], (injection, err[-800:])
    assert "Traceback" not in err
    return status, out, err


@pytest.mark.slow
def test_sweep_survives_a_stop_inside_every_critical_section(reference, tmp_path, repo_dataset):
    results = tmp_path / "results"
    warned = False
    for injection in SWEEP_INJECTIONS:
        _, _, err = run_injected(results, repo_dataset, tmp_path, injection)
        warned |= "incomplete last line" in err
        assert_consistent(results)
        if injection[1:3] == (2, "KILL") and injection[0].endswith("save_chunk"):
            # (e) the state saved at that boundary survives a kill -9 at once.
            [state, *_] = ResultsStore(results).saved_chunks(SHAPES[0])
            logged = read_log(ResultsStore(results).log_path(state.trials[0]))[0]
            assert state.loops_completed == len(logged) >= 2
    status, out, err = finish(launch("sweep", sweep_argv(results, repo_dataset), tmp_path / "f"))
    assert status == 0, err
    assert warned, "the torn append was not reported"  # (d)
    assert_finished_like(results, reference)  # (c)


@pytest.mark.slow
def test_sweep_survives_stops_at_random_instants(reference, tmp_path, repo_dataset):
    rng = random.Random(2026)
    results = tmp_path / "results"
    stops = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * 2
    for number, stop in enumerate(stops):
        process = launch("sweep", sweep_argv(results, repo_dataset), tmp_path / "f")
        wait_started(tmp_path / "f")
        if number % 2:  # somewhere in the command's start-up or its run
            time.sleep(rng.uniform(0.0, 5.0))
        else:  # somewhere after the first loop line of this run
            deadline = time.monotonic() + 120
            while not list(results.glob("logs/*/*.jsonl")) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(stop)
        status, out, err = finish(process)
        assert status in (EXIT[stop], 0), err[-800:]
        assert "Traceback" not in err
        assert_consistent(results)
        if status == 0:  # it finished first: start the chain again on a fresh dir
            assert_finished_like(results, reference)
            results = tmp_path / f"results-{number}"
    status, out, err = finish(launch("sweep", sweep_argv(results, repo_dataset), tmp_path / "f"))
    assert status == 0, err
    assert_finished_like(results, reference)


@pytest.mark.slow
def test_two_sweeps_at_once_on_one_dir_split_the_work(reference, tmp_path, repo_dataset):
    results = tmp_path / "results"
    argv = sweep_argv(results, repo_dataset)
    processes = [launch("sweep", argv, tmp_path / "f") for _ in range(2)]
    outcomes = [finish(process) for process in processes]
    assert [status for status, _, _ in outcomes] == [0, 0], [err for _, _, err in outcomes]
    assert_consistent(results)
    ran = [len(re.findall(r"loop 1/", out)) for _, out, _ in outcomes]
    # Every batch ran in exactly one of them: its first loop was printed once in all.
    assert sum(ran) == len(every_trial()) // MAX_BATCH
    assert_finished_like(results, reference)


def train_argv(model_dir: Path, data_dir: Path) -> list[str]:
    return [
        *("--arch", "[1*8]", "--ablation-mode", "hidden", "--meta-loops", str(TRAIN_LOOPS)),
        *("--seed", str(TRAIN_SEED), "--batch-size", str(TRAIN_BATCH), "--device", "cpu"),
        *("--model-dir", str(model_dir), "--data-dir", str(data_dir)),
    ]


def accuracy_on_test_split(checkpoint: Path, data) -> float:
    tensors, _ = load_checkpoint(checkpoint)
    arch = build_architecture("resmlp", Arch([(1, 8)]))
    seeds = run_seeds(TRAIN_SEED, "hidden")
    engine = Engine(arch, [TrialSpec("hidden", seeds)], Hyperparameters(batch_size=64), data)
    engine.load_lkg(0, tensors)
    return engine.test_accuracy()[0]


def assert_train_consistent(model_dir: Path) -> int:
    """The run logs hold each loop the checkpoint holds once, and at most the one loop after
    it (written just before a checkpoint that a kill prevented); returns the loops saved."""
    checkpoint = model_dir / DEFAULT_NAME
    done = load_checkpoint(checkpoint)[1]["loops_completed"] if checkpoint.exists() else 0
    loops = sorted(
        line["loop"] for path in run_logs(model_dir, checkpoint) for line in read_log(path)[0]
    )
    assert loops in (list(range(1, done + 1)), list(range(1, done + 2))), (loops, done)
    assert all(path.stat().st_size for path in run_logs(model_dir, checkpoint))  # none empty
    return done


def assert_summary_is_the_checkpoints(out: str, model_dir: Path, data) -> None:
    checkpoint = model_dir / DEFAULT_NAME
    if not checkpoint.exists():
        assert "nothing was saved" in out and "Final Bounty" not in out
        return
    _, metadata = load_checkpoint(checkpoint)
    [bounty] = [line for line in out.splitlines() if line.startswith("Final Bounty")]
    loops = metadata["loops_completed"]
    expected = f"{metadata['bounty']:.2f}% @ {metadata['bounty_loop']}/{loops}"
    assert bounty.endswith(expected), (bounty, expected)
    [test] = [line for line in out.splitlines() if line.startswith("Final Test Accuracy")]
    assert test.endswith(f"{accuracy_on_test_split(checkpoint, data):.2f}%")


@pytest.mark.slow
def test_train_survives_stops_inside_its_critical_sections_and_at_random(
    tmp_path, repo_dataset, mnist_small
):
    model_dir = tmp_path / "model"
    rng = random.Random(7)
    fired = tmp_path / "fired"
    stops = [(injection, None) for injection in TRAIN_INJECTIONS]
    randomly = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGINT]
    stops += [(None, stop) for stop in randomly]
    warned = False
    for injection, stop in stops:
        chaos = None if injection is None else ":".join(map(str, injection))
        fired.unlink(missing_ok=True)
        process = launch("train", train_argv(model_dir, repo_dataset), fired, chaos)
        if injection is None:
            wait_started(fired)
            time.sleep(rng.uniform(0.0, 5.0))
            process.send_signal(stop)
        else:
            stop = signal.SIGKILL if injection[3] == "torn" else SIGNALS[injection[2]]
        status, out, err = finish(process)
        if injection is not None:
            assert fired.exists(), f"{injection} never fired: {err[-800:]}"
        assert status in (EXIT[stop], 0), (injection, stop, err[-800:])
        assert "Traceback" not in err
        warned |= "incomplete last line" in err
        assert_train_consistent(model_dir)
        if "stopped by SIG" in err:
            assert status in (130, 143)
            assert_summary_is_the_checkpoints(out, model_dir, mnist_small)
    before = assert_train_consistent(model_dir)
    status, out, err = finish(launch("train", train_argv(model_dir, repo_dataset), fired))
    assert status == 0, err
    warned |= "incomplete last line" in err
    assert warned
    assert assert_train_consistent(model_dir) == before + TRAIN_LOOPS
    assert_summary_is_the_checkpoints(out, model_dir, mnist_small)
