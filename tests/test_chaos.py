"""Chaos: sweep and train stopped by SIGINT, SIGTERM and SIGKILL at random instants and inside
every critical section (tests/chaos_entry.py makes a function signal its own process), then
resumed.

After every stop: what is on disk agrees with itself; nothing committed before the run (a
recorded trial, a saved loop, its log lines) was lost or rewritten; the exit status and the last
line name the signal. After every resume: each saved batch started at the loop after the one it
saved. train's printed summary is what its loop logs and its checkpoint's tensors say. The
finished sweep equals an uninterrupted one: trials.jsonl line for line (fields that may differ
between runs aside), both markdown tables byte for byte, and the summary line it prints. Two
sweeps started at once on one results dir split the work and leave the same result."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from psa.arch import Arch, parse_arch
from psa.checkpoint import DEFAULT_NAME, load_checkpoint
from psa.engine import Engine, Hyperparameters, TrialSpec
from psa.model import build_network
from psa.seeds import run_seeds
from psa.store import ResultsStore, Trial, run_logs
from psa.store.schema import PER_RUN_FIELDS

ENTRY = Path(__file__).with_name("chaos_entry.py")
ARCHS = ("[1*8]", "[2*4]")
SHAPES = tuple(parse_arch(arch) for arch in ARCHS)
MODES, TRIALS, LOOPS, SEED, MAX_BATCH = ("none", "dropout", "hidden"), 2, 4, 5, 3
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
TRAIN_LOOPS, TRAIN_SEED, TRAIN_BATCH = 5, 7, 64
OTHER_HOST = "psa-chaos-other-host"
# Fields of a record or loop line that may differ between two runs of the same sweep (wall clock,
# the id of the command run). Everything else is the method's and must match bit for bit.
MAY_DIFFER = PER_RUN_FIELDS
# The chaos entry runs a command as `chaos-<command>`; its messages name it so.
SWEEP, TRAIN = "chaos-sweep", "chaos-train"
SWEEP_LOOP = re.compile(r"^(\[[^\]]*\]) batch (\d+)/\d+ \(K=\d+\) loop (\d+)/\d+ \|")
SWEEP_RESUME = re.compile(r"^(\[[^\]]*\]) batch (\d+)/\d+ \(K=\d+\) resuming at loop (\d+)/")
TRAIN_LOOP = re.compile(r"^Loop \d+/\d+ \(Global: \d+\)", re.MULTILINE)

# (function, call number, signal, when): every place where a stop could split what sweep writes.
SWEEP_INJECTIONS = [
    ("psa.engine:Engine._promote", 2, "INT", "before"),  # the engine's promote-and-count
    ("psa.store.jsonlines:LineLog.append", 2, "TERM", "after"),  # between two trials' lines
    ("psa.store.results:ResultsStore.save_batch", 1, "KILL", "before"),  # lines, no state
    ("psa.store.jsonlines:LineLog._write", 1, "KILL", "torn"),  # inside an append
    ("psa.store.results:ResultsStore.save_batch", 2, "KILL", "after"),  # right at a boundary
    ("psa.atomic:write_atomically", 1, "KILL", "before"),
    ("psa.store.results:ResultsStore.write_records", 1, "KILL", "after"),  # records, state
    ("psa.store.results:ResultsStore.delete_batch", 1, "INT", "after"),
    ("psa.store.claims:Claim.release", 1, "KILL", "before"),  # a claim of a dead process
    ("psa.store.results:ResultsStore.merge_records", 1, "TERM", "before"),
    ("psa.store.tables:write_tables", 1, "KILL", "before"),
]
TRAIN_INJECTIONS = [
    ("psa.engine:Engine._promote", 2, "INT", "before"),  # promoted in memory, not on disk
    ("psa.store.jsonlines:LineLog.append", 1, "TERM", "before"),
    ("psa.checkpoint:save_checkpoint", 1, "KILL", "before"),  # a log line, no checkpoint
    ("psa.store.jsonlines:LineLog._write", 1, "KILL", "torn"),
    ("psa.atomic:write_atomically", 2, "KILL", "after"),
]


def stopped_line(command: str, number: int) -> str:
    """How the last line of a command stopped by signal ``number`` starts (the wording of
    psa.errors.stopped_line, written out: a change to it is one edit here)."""
    return f"{command}: stopped by {signal.Signals(number).name}; "


def assert_stopped_by(number: int, status: int, err: str, command: str) -> None:
    """The exact exit status of the signal and, but for SIGKILL, the line that names it."""
    assert status == EXIT[number], (signal.Signals(number).name, status, err[-800:])
    assert "Traceback" not in err
    if number != signal.SIGKILL:
        assert err.splitlines()[-1].startswith(stopped_line(command, number)), err[-800:]


class Run:
    """A command run through the chaos entry, its output read as it comes."""

    def __init__(self, command: str, argv: list[str], fired: Path, chaos: str | None = None,
                 first_loop: re.Pattern = SWEEP_LOOP, prefix: list[str] | None = None):  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.update(PSA_CHAOS_SUBSET="1", PSA_CHAOS_FIRED=str(fired))
        env.update(PSA_CHAOS_STARTED=str(fired.with_name("started")))
        fired.with_name("started").unlink(missing_ok=True)
        env.pop("SAGEMAKER_MODEL_DIR", None)
        env.pop("PSA_CHAOS", None)
        if chaos:
            env["PSA_CHAOS"] = chaos
        self.started = fired.with_name("started")
        self.before: Committed | None = None  # what the results dir held when it started
        self.process = subprocess.Popen(
            [*(prefix or []), sys.executable, str(ENTRY), command, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.looping = threading.Event()  # this run printed a loop line of its own
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out, first_loop)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err, None)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str], pattern: re.Pattern | None) -> None:
        for line in stream:
            lines.append(line)
            if pattern is not None and pattern.search(line):
                self.looping.set()

    def wait_started(self) -> None:
        """Until the entry layer handles signals (a stop before that is the interpreter's)."""
        deadline = time.monotonic() + 120
        while not self.started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def wait_looping(self) -> bool:
        """Until this run prints its first loop line; False if it ended first."""
        while not self.looping.wait(0.05):
            if self.process.poll() is not None:
                return self.looping.is_set()
        return True

    def finish(self) -> tuple[int, str, str]:
        try:
            self.process.wait(timeout=300)
        finally:
            self.process.kill()
            for reader in self._readers:
                reader.join(timeout=60)
        return self.process.returncode, "".join(self.out), "".join(self.err)


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


def method_fields(line: dict) -> dict:
    return {key: value for key, value in line.items() if key not in MAY_DIFFER}


@dataclass
class Committed:
    """What a results dir holds committed: per trial its record, the loops its batch saved and
    its complete loop-log lines; and the saved batches, per architecture."""

    recorded: dict[Trial, dict]
    saved: dict[Trial, int]
    logged: dict[Trial, list[dict]]
    batches: dict[Arch, list[int]]  # loops saved by each unfinished batch no live worker holds
    claimed: set[Trial]  # trials a live worker holds (by their claim files)


def committed(results: Path) -> Committed:
    store = ResultsStore(results)
    recorded = {}
    if store.exists():
        by_key = {(t.arch.key, t.mode, t.index): t for t in every_trial()}
        for record in store.records():
            recorded[by_key[record["arch"], record["mode"], record["trial"]]] = record
    states = {arch: store.saved_batches(arch) if store.exists() else [] for arch in SHAPES}
    saved = {t: s.loops_completed for states_ in states.values() for s in states_ for t in s.trials}
    claimed = {t for t in every_trial() if store.is_claimed(t)}
    batches = {
        arch: sorted(
            s.loops_completed
            for s in found
            if not set(s.trials) <= recorded.keys() and not set(s.trials) & claimed
        )
        for arch, found in states.items()
    }
    logged = {trial: read_log(store.log_path(trial))[0] for trial in every_trial()}
    return Committed(recorded, saved, logged, batches, claimed)


def assert_nothing_committed_lost(before: Committed, after: Committed) -> None:
    """A recorded trial keeps its record and log; an unrecorded one keeps the loops its batch
    had saved, and their log lines exactly as they were (timings included: not redone)."""
    for trial in every_trial():
        if trial in before.recorded:
            assert after.recorded.get(trial) == before.recorded[trial], f"{trial}: record changed"
            assert after.logged[trial] == before.logged[trial], f"{trial}: log changed"
            continue
        saved = before.saved.get(trial, 0)
        if trial not in after.recorded:
            assert after.saved.get(trial, 0) >= saved, f"{trial}: saved loops {saved} lost"
        assert after.logged[trial][:saved] == before.logged[trial][:saved], (
            f"{trial}: the {saved} saved loops of its log were rewritten"
        )


def assert_resumed_where_committed(before: Committed, out: str) -> None:
    """Each batch this run started says where it starts and starts there: a saved batch (they
    run first, per architecture) at the loop after its saved ones, a fresh one at loop 1."""
    starts: dict[tuple[str, int], tuple[int | None, int | None]] = {}
    for line in out.splitlines():
        if match := SWEEP_RESUME.match(line):
            starts[match[1], int(match[2])] = (int(match[3]), None)
        elif match := SWEEP_LOOP.match(line):
            key = (match[1], int(match[2]))
            resume, first = starts.get(key, (None, None))
            if first is None:
                starts[key] = (resume, int(match[3]))
    for arch in SHAPES:
        batches = [starts[key] for key in sorted(starts) if key[0] == arch.flag]
        saved = Counter(before.batches[arch])
        resumed = batches[: sum(saved.values())]
        assert all(resume is not None for resume, _ in resumed), (arch, batches, saved)
        said = Counter(resume - 1 for resume, _ in resumed)
        assert said == saved if len(resumed) == sum(saved.values()) else said <= saved, (
            arch, batches, saved
        )  # fmt: skip
        for resume, first in resumed:  # started where it said (or was stopped in that loop)
            assert first in (resume, None), (arch, batches)
        for resume, first in batches[len(resumed) :]:
            assert resume is None and first == 1, (arch, batches, saved)


def assert_consistent(results: Path) -> None:
    """What must hold at any instant: (a) each trial's log holds loops 1..m once each, m its
    saved loops or one more (the loop in flight; the next run drops it), (b) a recorded trial
    has its whole log and is recorded once, (e) progress saved at the last loop boundary."""
    store = ResultsStore(results)
    batch_lines = [
        json.loads(line)
        for path in store.batch_record_files()
        for line in path.read_text().splitlines()
    ]
    recorded = [(r["arch"], r["mode"], r["trial"]) for r in batch_lines]
    assert len(recorded) == len(set(recorded)), "a trial recorded twice"
    state = committed(results)
    for trial in every_trial():
        loops = [line["loop"] for line in state.logged[trial]]
        assert loops == list(range(1, len(loops) + 1)), f"{trial}: loops {loops}"
        if trial in state.recorded:
            assert loops == list(range(1, LOOPS + 1)), f"{trial} recorded with loops {loops}"
        else:
            done = state.saved.get(trial, 0)
            assert len(loops) in (done, done + 1), f"{trial}: loops {loops}, saved {done}"


def run_and_check(results: Path, run: Run) -> tuple[int, str, str]:
    """Finish ``run`` (started on ``results`` after ``before`` was taken) and check it."""
    before = run.before
    status, out, err = run.finish()
    assert "Traceback" not in err
    assert_consistent(results)
    assert_nothing_committed_lost(before, committed(results))
    assert_resumed_where_committed(before, out)
    return status, out, err


def start_sweep(results: Path, data_dir: Path, fired: Path, chaos: str | None = None) -> Run:
    before = committed(results)
    run = Run("sweep", sweep_argv(results, data_dir), fired, chaos)
    run.before = before
    return run


@dataclass
class Finished:
    trials_lines: list[list]  # trials.jsonl, line by line, method fields only
    tables: dict[str, bytes]
    logs: dict[Trial, list[dict]]
    done_line: str


def finished(results: Path, out: str) -> Finished:
    store = ResultsStore(results)
    lines = store.trials_path.read_text().splitlines()
    done = [line for line in out.splitlines() if line.startswith(("Done:", "Nothing to run:"))]
    return Finished(
        [list(method_fields(json.loads(line)).items()) for line in lines],
        {path.name: path.read_bytes() for path in sorted(results.glob("*.md"))},
        {t: list(map(method_fields, read_log(store.log_path(t))[0])) for t in every_trial()},
        done[-1].replace(str(results), "<results>") if done else "",
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, repo_dataset) -> Finished:
    """The uninterrupted sweep, run the same way (through the entry, on the same data)."""
    tmp = tmp_path_factory.mktemp("chaos-reference")
    status, out, err = Run("sweep", sweep_argv(tmp / "r", repo_dataset), tmp / "f").finish()
    assert status == 0, err
    result = finished(tmp / "r", out)
    assert len(result.trials_lines) == len(every_trial())
    assert set(result.tables) == {"psa_resmlp_trials.md", "psa_resmlp_summary.md"}
    assert result.done_line == f"Done: {len(every_trial())} trials recorded in <results>"
    return result


def assert_finished_like(results: Path, out: str, reference: Finished) -> None:
    store = ResultsStore(results)
    assert store.saved_batches(SHAPES[0]) == store.saved_batches(SHAPES[1]) == []
    assert not list((results / "claims").glob("**/*.claim"))
    result = finished(results, out)
    # Merged, each trial once, every line the reference's. Not in its order: a merge keeps the
    # lines trials.jsonl has and appends the new ones, so the order follows where it was stopped.
    assert sorted(map(str, result.trials_lines)) == sorted(map(str, reference.trials_lines))
    assert result.tables == reference.tables
    assert result.logs == reference.logs
    # The last run's summary line; one that found every trial recorded (it only merged) says so.
    nothing_left = "Nothing to run: every trial is recorded in <results>."
    assert result.done_line in (reference.done_line, nothing_left)
    assert (result.done_line == nothing_left) == ("loop 1/" not in out and "resuming" not in out)


def run_injected(results, repo_dataset, tmp_path, injection) -> tuple[int, str, str]:
    function, nth, name, when = injection
    fired = tmp_path / "fired"
    fired.unlink(missing_ok=True)
    chaos = f"{function}:{nth}:{name}:{when}"
    status, out, err = run_and_check(
        results, start_sweep(results, repo_dataset, fired, chaos)
    )
    assert fired.exists(), f"{injection} never fired: {err[-800:]}"
    number = signal.SIGKILL if when == "torn" else SIGNALS[name]
    assert_stopped_by(number, status, err, SWEEP)
    return status, out, err


@pytest.mark.slow
def test_sweep_survives_a_stop_inside_every_critical_section(reference, tmp_path, repo_dataset):
    results = tmp_path / "results"
    warned = False
    for injection in SWEEP_INJECTIONS:
        _, _, err = run_injected(results, repo_dataset, tmp_path, injection)
        warned |= "incomplete last line" in err
        if injection[1:3] == (2, "KILL") and injection[0].endswith("save_batch"):
            # (e) the state saved at that boundary survives a kill -9 at once.
            [state, *_] = ResultsStore(results).saved_batches(SHAPES[0])
            logged = read_log(ResultsStore(results).log_path(state.trials[0]))[0]
            assert state.loops_completed == len(logged) >= 2
    status, out, err = run_and_check(results, start_sweep(results, repo_dataset, tmp_path / "f"))
    assert status == 0, err
    assert warned, "the torn append was not reported"  # (d)
    assert_finished_like(results, out, reference)  # (c)


@pytest.mark.slow
def test_sweep_survives_stops_at_random_instants(reference, tmp_path, repo_dataset):
    rng = random.Random(2026)
    results = tmp_path / "results"
    stops = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * 2
    landed = 0
    for number, stop in enumerate(stops):
        run = start_sweep(results, repo_dataset, tmp_path / "f")
        run.wait_started()
        if number % 2:  # somewhere in the command's start-up or its run
            time.sleep(rng.uniform(0.0, 5.0))
        elif run.wait_looping():  # soon after this run's own first loop line
            time.sleep(rng.uniform(0.0, 0.3))
        # (A run that ends before a loop line of its own only wrote the records of a batch saved
        # after its last loop; it exits 0 and the chain starts again.)
        in_loops = run.looping.is_set()
        run.process.send_signal(stop)
        status, out, err = run_and_check(results, run)
        if status == 0:  # it finished first: start the chain again on a fresh dir
            assert_finished_like(results, out, reference)
            results = tmp_path / f"results-{number}"
            continue
        assert_stopped_by(stop, status, err, SWEEP)
        landed += in_loops
    # Most of the stops sent after a loop line land in a running loop (a run may finish first).
    assert landed >= 2, f"only {landed} stops landed in a running loop"
    status, out, err = run_and_check(results, start_sweep(results, repo_dataset, tmp_path / "f"))
    assert status == 0, err
    assert_finished_like(results, out, reference)


@pytest.mark.slow
def test_two_sweeps_at_once_on_one_dir_split_the_work(reference, tmp_path, repo_dataset):
    results = tmp_path / "results"
    runs = [start_sweep(results, repo_dataset, tmp_path / f"f{n}") for n in range(2)]
    outcomes = [run.finish() for run in runs]
    # The sweep that ends last is done (0); one that ends while the other still holds a batch
    # is not (3, saying so in one line), since a trial it was asked for is not recorded yet.
    statuses = sorted(status for status, _, _ in outcomes)
    assert statuses in ([0, 0], [0, 3]), [err for _, _, err in outcomes]
    for status, out, err in outcomes:
        if status == 3:
            assert "Done:" not in out and "held by another worker's claim" in err
    assert_consistent(results)
    ran = [len(re.findall(r"loop 1/", out)) for _, out, _ in outcomes]
    # Every batch ran in exactly one of them: its first loop was printed once in all.
    assert sum(ran) == len(every_trial()) // MAX_BATCH
    # Merged by two processes in turn: trials.jsonl holds every record once, in either order.
    result = finished(results, "")
    assert sorted(map(str, result.trials_lines)) == sorted(map(str, reference.trials_lines))
    assert result.tables == reference.tables and result.logs == reference.logs


def other_host_prefix() -> list[str] | None:
    """A command prefix that runs a program under another hostname (a UTS namespace), or None
    where this machine does not permit one."""
    for prefix in (["unshare", "--uts"], ["unshare", "--user", "--map-root-user", "--uts"]):
        try:
            done = subprocess.run(
                [*prefix, "sh", "-c", f"hostname {OTHER_HOST} && hostname"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == OTHER_HOST:
            return [*prefix, "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh"]
    return None


def age_claims(results: Path, seconds: float) -> list[Path]:
    claims = sorted((results / "claims").glob("**/*.claim"))
    for path in claims:
        then = time.time() - seconds
        os.utime(path, (then, then))
    return claims


@pytest.mark.slow
def test_a_sweep_takes_over_another_hosts_batch_only_once_its_claim_is_stale(
    reference, tmp_path, repo_dataset
):
    """A sweep under another hostname is killed mid-batch on a shared results dir. A sweep here
    cannot tell whether that worker lives: it runs the rest and leaves the claimed batch alone;
    once the claims are stale it takes the batch over, resumes it at its saved loop and ends as
    an uninterrupted sweep does."""
    prefix = other_host_prefix()
    if prefix is None:
        pytest.skip("this machine does not permit a UTS namespace (unshare --uts) for a 2nd host")
    results = tmp_path / "results"
    elsewhere = Run("sweep", sweep_argv(results, repo_dataset), tmp_path / "f", prefix=prefix)
    assert elsewhere.wait_looping(), "the other host's sweep ended before its first loop"
    elsewhere.process.send_signal(signal.SIGKILL)
    status, _, err = elsewhere.finish()
    assert status == -signal.SIGKILL, err
    held = committed(results)
    assert len(held.claimed) == MAX_BATCH  # the killed batch's trials, still held
    [saved] = {held.saved[trial] for trial in held.claimed}
    assert saved >= 1
    claims = sorted((results / "claims").glob("**/*.claim"))
    assert len(claims) == MAX_BATCH
    assert {json.loads(path.read_text())["host"] for path in claims} == {OTHER_HOST}

    # Fresh claims of another host: skipped, whatever this host thinks of its pid; the sweep
    # records the rest and ends not done (exit status 3), its batch held elsewhere.
    status, out, err = run_and_check(results, start_sweep(results, repo_dataset, tmp_path / "f"))
    assert status == 3, err
    assert "Done:" not in out and "resuming" not in out
    assert f"{MAX_BATCH} trials held by another worker's claim" in err.splitlines()[-1]
    after = committed(results)
    assert len(after.recorded) == len(every_trial()) - MAX_BATCH
    assert after.claimed == held.claimed and not after.claimed & after.recorded.keys()
    assert {trial: after.saved[trial] for trial in held.claimed} == {
        trial: saved for trial in held.claimed
    }
    assert sorted((results / "claims").glob("**/*.claim")) == claims

    # Stale (no heartbeat for longer than the stale time): taken over, resumed at the saved loop.
    age_claims(results, 3600)
    status, out, err = run_and_check(results, start_sweep(results, repo_dataset, tmp_path / "f"))
    assert status == 0, err
    assert f"resuming at loop {saved + 1}/{LOOPS}" in out
    assert_finished_like(results, out, reference)


def train_argv(model_dir: Path, data_dir: Path) -> list[str]:
    return [
        *("--arch", "[1*8]", "--ablation-mode", "hidden", "--meta-loops", str(TRAIN_LOOPS)),
        *("--seed", str(TRAIN_SEED), "--batch-size", str(TRAIN_BATCH), "--device", "cpu"),
        *("--model-dir", str(model_dir), "--data-dir", str(data_dir)),
    ]


def lkg_engine(checkpoint: Path, data) -> Engine:
    """An engine holding the checkpoint's tensors as its LKG, read from the file."""
    tensors, _ = load_checkpoint(checkpoint)
    network = build_network("resmlp", Arch([(1, 8)]))
    seeds = run_seeds(TRAIN_SEED, "hidden")
    engine = Engine(network, [TrialSpec("hidden", seeds)], Hyperparameters(batch_size=64), data)
    engine.load_lkg(0, tensors)
    return engine


def train_log_lines(model_dir: Path) -> list[dict]:
    paths = run_logs(model_dir, model_dir / DEFAULT_NAME)
    lines = [line for path in paths for line in read_log(path)[0]]
    return sorted(lines, key=lambda line: line["loop"])


def assert_train_consistent(model_dir: Path) -> int:
    """The run logs hold each loop the checkpoint holds once, and at most the one loop after
    it (written just before a checkpoint that a kill prevented); returns the loops saved."""
    checkpoint = model_dir / DEFAULT_NAME
    done = load_checkpoint(checkpoint)[1]["loops_completed"] if checkpoint.exists() else 0
    loops = [line["loop"] for line in train_log_lines(model_dir)]
    assert loops in (list(range(1, done + 1)), list(range(1, done + 2))), (loops, done)
    assert all(path.stat().st_size for path in run_logs(model_dir, checkpoint))  # none empty
    return done


def assert_summary_is_what_logs_and_tensors_say(out: str, model_dir: Path, data) -> None:
    """The printed summary against the loop logs and the checkpoint's tensors (the bounty
    re-evaluated from the file), not only against the checkpoint's metadata."""
    checkpoint = model_dir / DEFAULT_NAME
    if not checkpoint.exists() or "Data ready" not in out:  # nothing saved, or not started yet
        assert "Final Bounty" not in out and not TRAIN_LOOP.search(out), out
        return
    loops = load_checkpoint(checkpoint)[1]["loops_completed"]
    lines = [line for line in train_log_lines(model_dir) if line["loop"] <= loops]
    assert [line["loop"] for line in lines] == list(range(1, loops + 1))
    engine = lkg_engine(checkpoint, data)
    [validation] = engine.evaluate(engine.lkg, data.val_x, data.val_y)
    assert validation == lines[-1]["lkg_accuracy"]  # the file holds the logged LKG
    bounty_loop = max(line["loop"] for line in lines if line["promoted"])
    [bounty] = [line for line in out.splitlines() if line.startswith("Final Bounty")]
    assert bounty.endswith(f"{validation:.2f}% @ {bounty_loop}/{loops}"), (bounty, lines)
    [test] = [line for line in out.splitlines() if line.startswith("Final Test Accuracy")]
    assert test.endswith(f"{engine.test_accuracy()[0]:.2f}%")


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
    warned, landed = False, 0
    for number, (injection, stop) in enumerate(stops):
        chaos = None if injection is None else ":".join(map(str, injection))
        fired.unlink(missing_ok=True)
        saved = assert_train_consistent(model_dir)
        run = Run("train", train_argv(model_dir, repo_dataset), fired, chaos, TRAIN_LOOP)
        in_loops = False
        if injection is None:
            run.wait_started()
            if number % 2:
                time.sleep(rng.uniform(0.0, 5.0))
            else:  # just after this run's own first loop line, before its last loop ends
                assert run.wait_looping(), "the run ended before its first loop"
                time.sleep(rng.uniform(0.0, 0.05))
            in_loops = run.looping.is_set()
            run.process.send_signal(stop)
        else:
            stop = signal.SIGKILL if injection[3] == "torn" else SIGNALS[injection[2]]
        status, out, err = run.finish()
        if injection is not None:
            assert fired.exists(), f"{injection} never fired: {err[-800:]}"
        warned |= "incomplete last line" in err
        now = assert_train_consistent(model_dir)
        assert now >= saved  # nothing the checkpoint held was lost
        if status == 0 and injection is None:  # it finished before the stop landed
            assert now == saved + TRAIN_LOOPS
        else:
            assert_stopped_by(stop, status, err, TRAIN)
            landed += in_loops
        if stop != signal.SIGKILL:
            assert_summary_is_what_logs_and_tensors_say(out, model_dir, mnist_small)
    assert landed >= 2, f"only {landed} random stops landed in a running loop"
    before = assert_train_consistent(model_dir)
    status, out, err = Run("train", train_argv(model_dir, repo_dataset), fired).finish()
    assert status == 0, err
    warned |= "incomplete last line" in err
    assert warned
    assert assert_train_consistent(model_dir) == before + TRAIN_LOOPS
    assert_summary_is_what_logs_and_tensors_say(out, model_dir, mnist_small)
