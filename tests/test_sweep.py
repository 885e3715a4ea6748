"""The ``sweep`` command and its planner: records, logs and tables of a real MNIST sweep, the
paired design, resume after SIGTERM and SIGKILL, refusals and the dry run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from psa.arch import Arch, parse_arch, parse_key
from psa.cli import run as run_command
from psa.commands import sweep as sweep_command
from psa.config import RunConfig
from psa.engine import Engine
from psa.errors import Interrupted
from psa.modes import ABLATIVE_MODES, BASELINE_MODES, MODES
from psa.report.inputs import read_summary_markdown, read_trials_markdown
from psa.store import ResultsStore, Trial
from psa.sweep import runner
from psa.sweep.plan import plan_batches
from psa.sweep.runner import prepare_results_dir
from psa.wording import count
from schemas import LOOP_LOG_KEYS, TRIAL_RECORD_KEYS

ARCHS = ("[1*8]", "[2*4]")
KEYS = ("1*8", "2*4")
TRIALS, LOOPS, SEED = 2, 3, 11
# What a default sweep with LOOPS meta-loops and SEED stores in settings.json.
DEFAULT_SETTINGS = RunConfig("resmlp", LOOPS, SEED, threads=1)


def sweep_flags(results_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    """Every mode trained, decay too (tests/test_decay_twins.py covers decay copied from none,
    the default at these settings)."""
    archs = [flag for arch in ARCHS for flag in ("--arch", arch)]
    return [
        *archs,
        "--train-decay",
        *("--trials", str(TRIALS), "--meta-loops", str(LOOPS), "--seed", str(SEED)),
        *("--results-dir", str(results_dir), "--data-dir", str(data_dir), "--device", "cpu"),
        *extra,
    ]


def refusal(argv: list[str], capsys) -> str:
    """The one line a refused sweep ends with, through the console entry (status 1 or 2); it
    prints nothing else."""
    assert run_command("sweep", argv) in (1, 2)
    out, err = capsys.readouterr()
    [message] = err.splitlines()
    assert message.startswith("sweep: ") and "Traceback" not in err
    assert "trials to run" not in out
    return message


def read_records(results_dir: Path) -> list[dict]:
    """Every record file of the dir, line by line (a record written twice would show twice)."""
    store = ResultsStore(results_dir)
    files = store.batch_record_files() or store.record_files()
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def read_log(results_dir: Path, arch: str, mode: str, trial: int) -> list[dict]:
    path = results_dir / "logs" / parse_key(arch).slug / f"{mode}-t{trial}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def outcomes(records: list[dict]) -> dict[tuple, tuple]:
    """What a trial produced, keyed by (arch, mode, trial); duplicates would be lost, so callers
    count records separately."""
    return {
        (r["arch"], r["mode"], r["trial"]): (r["val_bounty"], r["test_accuracy"], r["bounty_loop"])
        for r in records
    }


def every_trial() -> set[tuple]:
    return {(a, m, t) for a in KEYS for m in MODES for t in range(1, TRIALS + 1)}


HANDLERS: dict[str, object] = {}


def keep_handler(signum, frame) -> None:
    """A caller's own SIGTERM handler, which an in-process sweep must leave in place."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory, repo_dataset) -> Path:
    """One uninterrupted sweep of two tiny architectures, shared by the tests that read it."""
    results = tmp_path_factory.mktemp("reference") / "results"
    previous = signal.signal(signal.SIGTERM, keep_handler)
    try:
        sweep_command.main(sweep_flags(results, repo_dataset))
        HANDLERS["after"] = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return results


@pytest.mark.slow
def test_a_sweep_records_every_trial_once_with_the_shared_schema(reference):
    records = read_records(reference)
    assert len(records) == len(every_trial())
    assert {(r["arch"], r["mode"], r["trial"]) for r in records} == every_trial()
    for record in records:
        assert set(record) == TRIAL_RECORD_KEYS  # the shared test records are whole
        assert record["model"] == "resmlp" and record["device"] == "cpu"
        assert record["paired"] is True
        assert record["meta_loops"] == record["loops_run"] == LOOPS
        assert 1 <= record["bounty_loop"] <= LOOPS
        assert 11 < record["val_bounty"] <= 100 and 11 < record["test_accuracy"] <= 100
        assert record["seconds"] > 0
        assert set(record["seeds"]) >= {"base", "init", "data", "ablation"}
        assert record["seeds"]["base"] == SEED
        hyperparameters = {
            "lr": 1e-4,
            "batch_size": 256,
            "weight_decay": 1e-4,
            "dropout": 0.1,
            "precision": "fp32",
        }
        assert record["hyperparameters"].items() >= hyperparameters.items()
    settings = json.loads((reference / "settings.json").read_text())
    assert settings == DEFAULT_SETTINGS.flat()


@pytest.mark.slow
def test_each_trial_has_a_per_loop_log_that_agrees_with_its_record(reference):
    for record in read_records(reference):
        arch, mode, trial = record["arch"], record["mode"], record["trial"]
        lines = read_log(reference, arch, mode, trial)
        assert [line["loop"] for line in lines] == list(range(1, LOOPS + 1))
        for line in lines:
            assert set(line) == LOOP_LOG_KEYS
            assert (line["arch"], line["mode"], line["trial"]) == (arch, mode, trial)
            assert line["model"] == "resmlp"
        assert lines[-1]["lkg_accuracy"] == record["val_bounty"]
        promotions = [line["loop"] for line in lines if line["promoted"]]
        assert promotions and promotions[-1] == record["bounty_loop"]
        assert lines[record["bounty_loop"] - 1]["val_accuracy"] == record["val_bounty"]
        # The first loop of a trial trains the fresh init; later loops ablate in ablative modes.
        assert lines[0]["ablation"] is None
        if mode in BASELINE_MODES:
            assert all(line["ablation"] is None for line in lines)
        else:
            assert all(line["ablation"] is not None for line in lines[1:])


@pytest.mark.slow
def test_the_markdown_tables_parse_back_to_the_records(reference):
    records = read_records(reference)
    table = read_trials_markdown(reference / "psa_resmlp_trials.md")
    assert table.attrs["paired"] is True
    assert table.attrs["archs"] == list(KEYS)
    assert (table["status"] == "ok").all()
    parsed = {(r.arch, r.mode, r.trial): r.accuracy for r in table.itertuples()}
    assert parsed == {
        (r["arch"], r["mode"], r["trial"]): float(f"{r['val_bounty']:.2f}") for r in records
    }

    summary = read_summary_markdown(reference / "psa_resmlp_summary.md")
    assert summary.attrs["archs"] == list(KEYS)
    assert len(summary) == len(KEYS) * len(MODES)
    for row in summary.itertuples():
        bounties = np.array(
            [r["val_bounty"] for r in records if (r["arch"], r["mode"]) == (row.arch, row.mode)]
        )
        assert row.status == "ok" and row.n == TRIALS
        assert row.parameters == parse_key(row.arch).resmlp_parameters
        expected = (bounties.mean(), bounties.std(ddof=0), bounties.min(), bounties.max())
        assert (row.mean, row.std, row.min, row.max) == pytest.approx(expected, abs=0.005 + 1e-9)


@pytest.mark.slow
def test_the_modes_of_a_trial_index_share_init_and_data_and_indices_differ(reference):
    records = read_records(reference)
    for arch in KEYS:
        per_index = []
        for t in range(1, TRIALS + 1):
            seeds = [r["seeds"] for r in records if (r["arch"], r["trial"]) == (arch, t)]
            assert len(seeds) == len(MODES)
            assert len({(s["init"], s["data"]) for s in seeds}) == 1
            assert len({s["ablation"] for s in seeds}) == len(MODES)
            per_index.append((seeds[0]["init"], seeds[0]["data"]))
        inits, datas = zip(*per_index)
        assert len(set(inits)) == TRIALS and len(set(datas)) == TRIALS
        # Shared init and batches make the first loop of the modes without decay or dropout the
        # same computation (no ablation happens in loop 1).
        for t in range(1, TRIALS + 1):
            first = {read_log(reference, arch, m, t)[0]["val_accuracy"] for m in ABLATIVE_MODES}
            first.add(read_log(reference, arch, "none", t)[0]["val_accuracy"])
            assert len(first) == 1
    first_loops = {
        (arch, t): read_log(reference, arch, "none", t)[0]["val_accuracy"]
        for arch in KEYS
        for t in range(1, TRIALS + 1)
    }
    assert any(first_loops[arch, 1] != first_loops[arch, 2] for arch in KEYS)


@pytest.mark.slow
def test_an_in_process_sweep_gives_the_callers_sigterm_handler_back(reference):
    assert HANDLERS["after"] is keep_handler


@pytest.mark.slow
def test_rerunning_a_finished_sweep_runs_nothing(reference, tmp_path, repo_dataset, capsys):
    results = tmp_path / "results"
    shutil.copytree(reference, results)
    before = {path: path.read_bytes() for path in results.rglob("*") if path.is_file()}
    sweep_command.main(sweep_flags(results, repo_dataset))
    assert "Nothing to run" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in results.rglob("*") if path.is_file()} == before


def start_sweep(results_dir: Path, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "psa.commands.sweep", *sweep_flags(results_dir, data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_inside_second_architecture(process: subprocess.Popen, results_dir: Path) -> None:
    """Return once the first architecture is recorded and every trial of the second has logged
    its first loop (so a batch is mid-way: at least one loop done, more to come)."""
    logs = results_dir / "logs" / parse_arch(ARCHS[1]).slug
    expected = TRIALS * len(MODES)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sweep ended before it could be stopped: {process.communicate()[1]}")
        # Record files appear whole (a hard link) and logs only grow (or are replaced by an
        # atomic rename), so a read here never fails while the sweep runs.
        recorded = len(read_records(results_dir))
        logged = [path.read_text().count("\n") for path in logs.glob("*.jsonl")]
        if recorded == expected and len(logged) == expected and min(logged) >= 1:
            return
        time.sleep(0.02)
    process.kill()
    pytest.fail("the second architecture did not start within 300 s")


def assert_same_as_reference(results: Path, reference: Path) -> None:
    records = read_records(results)
    assert len(records) == len(every_trial())  # one record per trial, no duplicates
    assert outcomes(records) == outcomes(read_records(reference))
    for name in ("psa_resmlp_trials.md", "psa_resmlp_summary.md"):
        assert (results / name).read_text() == (reference / name).read_text()
    for arch, mode, trial in every_trial():
        loops = [line["loop"] for line in read_log(results, arch, mode, trial)]
        assert loops == list(range(1, LOOPS + 1))
    assert not list(results.glob("batches/*.safetensors"))


def interrupt(*args, **kwargs):
    raise Interrupted(signal.SIGINT)


def test_a_sweep_stopped_in_its_first_loop_says_nothing_was_saved(
    tmp_path, repo_dataset, monkeypatch, capsys
):
    monkeypatch.setattr(Engine, "run_loop", interrupt)
    results = tmp_path / "results"
    argv = sweep_flags(results, repo_dataset, "--modes", "none", "--trials", "1")
    with pytest.raises(SystemExit) as stopped:  # the sweep printed its line and exits
        run_command("sweep", argv)
    assert stopped.value.code == 130
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == (
        "sweep: stopped by SIGINT; no loop was completed and nothing was saved; "
        "rerun the same command to resume"
    )
    assert read_records(results) == [] and not list(results.glob("batches/*"))


def test_a_sweep_stopped_after_its_loops_does_not_say_nothing_was_saved(
    tmp_path, repo_dataset, monkeypatch, capsys
):
    monkeypatch.setattr(runner, "Finished", interrupt)  # the stop lands as the sweep ends
    results = tmp_path / "results"
    argv = sweep_flags(results, repo_dataset, "--modes", "none", "--trials", "1")
    assert run_command("sweep", argv) == 130
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("sweep: stopped by SIGINT; ") and "nothing was saved" not in last
    assert len(read_records(results)) == len(ARCHS)


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_mid_batch_resumes_exactly(
    reference, tmp_path, repo_dataset, capsys
):
    results = tmp_path / "results"
    process = start_sweep(results, repo_dataset)
    try:
        wait_inside_second_architecture(process, results)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert "Traceback" not in err and "Interrupted" not in out
    last = err.splitlines()[-1]
    assert last.startswith("sweep: stopped by SIGTERM; finished trials are recorded")
    assert {r["arch"] for r in read_records(results)} == {KEYS[0]}
    [saved] = ResultsStore(results).saved_batches(parse_key(KEYS[1]))
    done = saved.loops_completed
    assert 1 <= done < LOOPS

    sweep_command.main(sweep_flags(results, repo_dataset, "--dry-run"))
    plan = capsys.readouterr().out
    half = TRIALS * len(MODES)
    assert f"{half} trials to run ({half} already recorded)" in plan
    assert f"({half * (LOOPS - done)} trial-loops left)" in plan
    assert f"[{KEYS[1]}] K={half}" in plan and f"resumes after loop {done}" in plan
    assert KEYS[0] not in plan.split("\n", 1)[1]
    # A smaller memory budget now does not re-plan the saved batch: it resumes as it was.
    sweep_command.main(sweep_flags(results, repo_dataset, "--max-batch", "6", "--dry-run"))
    assert f"[{KEYS[1]}] K={half}" in capsys.readouterr().out

    sweep_command.main(sweep_flags(results, repo_dataset))
    out = capsys.readouterr().out
    left = half * (LOOPS - done)
    assert f"1 batch, {half} trials x {LOOPS} meta-loops ({left} trial-loops left)" in out
    assert f"resuming at loop {done + 1}/{LOOPS} ({count(done, 'loop')} saved)" in out
    assert f"loop {done + 1}/{LOOPS} | best LKG" in out and f"loop {done}/{LOOPS} |" not in out
    assert_same_as_reference(results, reference)
    # A record's seconds count every session's training, not only the last one's.
    resumed = [r for r in read_records(results) if r["arch"] == KEYS[1]]
    assert all(r["seconds"] * half >= saved.seconds > 0 for r in resumed)


@pytest.mark.slow
def test_a_sweep_killed_mid_batch_reruns_without_duplicate_records(
    reference, tmp_path, repo_dataset
):
    results = tmp_path / "results"
    process = start_sweep(results, repo_dataset)
    try:
        wait_inside_second_architecture(process, results)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert len(read_records(results)) == TRIALS * len(MODES)

    sweep_command.main(sweep_flags(results, repo_dataset))
    assert_same_as_reference(results, reference)


def finished_results_dir(path: Path) -> Path:
    """A results dir as a finished sweep leaves it: its settings and one trial record."""
    prepare_results_dir(ResultsStore(path), DEFAULT_SETTINGS)
    record = {"arch": "1*8", "model": "resmlp", "mode": "none", "trial": 1, "val_bounty": 60.0}
    (path / "trials.jsonl").write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        (["--lr", "0.001"], "lr 0.0001 here vs 0.001 asked"),
        (["--seed", "12"], f"seed {SEED} here vs 12 asked"),
        (["--batch-size", "128"], "batch_size 256 here vs 128 asked"),
        (["--precision", "bf16"], "precision 'fp32' here vs 'bf16' asked"),
    ],
)
def test_other_settings_in_a_results_dir_are_refused_and_nothing_changes(
    tmp_path, repo_dataset, capsys, change, difference
):
    results = finished_results_dir(tmp_path / "results")
    files = {name: (results / name).read_bytes() for name in ("settings.json", "trials.jsonl")}
    message = refusal(sweep_flags(results, repo_dataset, *change), capsys)
    assert f"({difference})" in message and "--results-dir" in message
    assert {name: (results / name).read_bytes() for name in files} == files
    assert sorted(path.name for path in results.iterdir()) == sorted(files)


def test_dry_run_refuses_other_settings_as_the_real_run_does(tmp_path, repo_dataset, capsys):
    results = finished_results_dir(tmp_path / "results")
    message = refusal(sweep_flags(results, repo_dataset, "--lr", "0.001", "--dry-run"), capsys)
    assert "lr 0.0001 here vs 0.001 asked" in message


def test_an_unreadable_settings_file_is_refused_in_one_line(tmp_path, repo_dataset, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "settings.json").write_text("{not json")
    message = refusal(sweep_flags(results, repo_dataset), capsys)
    assert "settings.json" in message and "--results-dir" in message
    assert (results / "settings.json").read_text() == "{not json"


@pytest.mark.parametrize("modes", ["none,bogus", ","])
def test_an_unknown_mode_is_refused_before_anything_is_written(
    tmp_path, repo_dataset, capsys, modes
):
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as raised:
        sweep_command.main(sweep_flags(results, repo_dataset, "--modes", modes))
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [complaint] = err.splitlines()
    assert complaint.startswith("sweep: argument --modes: ")
    assert "unknown mode" in complaint and ",".join(MODES) in complaint
    assert not results.exists()


@pytest.mark.parametrize(
    ("content", "line"),
    [("1*8\n# comment\n2*x\n", 3), ("4*4\n\n0*8\n", 3), ("[1*8\n", 1)],
)
def test_a_bad_configs_line_is_refused_with_its_file_and_line(
    tmp_path, repo_dataset, capsys, content, line
):
    configs = tmp_path / "configs.txt"
    configs.write_text(content)
    results = tmp_path / "results"
    argv = ["--configs", str(configs), "--results-dir", str(results)]
    message = refusal([*argv, "--data-dir", str(repo_dataset), "--seed", "1"], capsys)
    assert f"{configs}:{line}:" in message
    assert not results.exists()


def test_a_missing_configs_file_is_named_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(SystemExit) as raised:
        sweep_command.main(["--configs", str(missing), "--results-dir", str(tmp_path / "r")])
    assert raised.value.code == 2  # a usage error
    message = capsys.readouterr().err
    assert message.startswith("sweep:") and message.count("\n") == 1 and str(missing) in message


def test_dry_run_prints_batches_and_an_estimate_and_writes_nothing(tmp_path, repo_dataset, capsys):
    results = tmp_path / "results"
    sweep_command.main(
        sweep_flags(results, repo_dataset, "--trials", "3", "--max-batch", "12", "--dry-run")
    )
    out = capsys.readouterr().out
    assert "36 trials to run (0 already recorded)" in out and f"base seed {SEED}" in out
    batches = [line.strip() for line in out.splitlines() if " K=" in line]
    assert [line.split(" (")[0] for line in batches] == [
        "[1*8] K=12",
        "[1*8] K=6",
        "[2*4] K=12",
        "[2*4] K=6",
    ]
    assert "trials 1-2" in batches[0] and "(trial 3," in batches[1]
    assert all(line.rsplit("~", 1)[1][0].isdigit() for line in batches)
    assert "Estimated time: ~" in out
    assert not results.exists()


def test_dry_run_of_a_partly_recorded_dir_plans_only_the_rest(tmp_path, repo_dataset, capsys):
    results = finished_results_dir(tmp_path / "results")
    before = (results / "trials.jsonl").read_bytes()
    sweep_command.main(sweep_flags(results, repo_dataset, "--modes", "none,full", "--dry-run"))
    out = capsys.readouterr().out
    assert "7 trials to run (1 already recorded)" in out
    batches = [line.strip() for line in out.splitlines() if " K=" in line]
    assert [line.split(" (")[0] for line in batches] == ["[1*8] K=3", "[2*4] K=4"]
    assert (results / "trials.jsonl").read_bytes() == before


def trials_of(pending: list[Trial]) -> list[tuple[str, int]]:
    return [(t.mode, t.index) for t in pending]


@st.composite
def pending_trials(draw) -> list[Trial]:
    """Pending trials of one architecture as ``grid`` lists them: by index, then mode order."""
    indices = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8, unique=True))
    pending = []
    for index in sorted(indices):
        modes = draw(st.lists(st.sampled_from(MODES), min_size=1, max_size=6, unique=True))
        pending += [Trial(Arch([(4, 17)]), mode, index) for mode in MODES if mode in modes]
    return pending


@given(pending=pending_trials(), max_trials=st.integers(1, 20))
def test_plan_batches_keeps_indices_together_within_the_limit(pending, max_trials):
    arch = Arch([(4, 17)])
    batches = plan_batches(arch, pending, max_trials)
    planned = [t for batch in batches for t in batch.trials]
    assert sorted(trials_of(planned)) == sorted(trials_of(pending))
    assert len(planned) == len(pending)
    assert len({batch.key for batch in batches}) == len(batches)
    groups: dict[int, int] = {}
    for trial in pending:
        groups[trial.index] = groups.get(trial.index, 0) + 1
    for batch in batches:
        assert batch.arch == arch and 1 <= len(batch.trials) <= max_trials
        assert trials_of(batch.trials) == [
            t for t in trials_of(pending) if t in trials_of(batch.trials)
        ]
    for index, size in groups.items():
        holding = [c for c in batches if any(t.index == index for t in c.trials)]
        if size <= max_trials:
            assert len(holding) == 1
        else:  # split only because it alone is too big, into full pieces of that index only
            assert len(holding) == -(-size // max_trials)
            assert all({t.index for t in c.trials} == {index} for c in holding)
    # Batches are as full as the indices allow: the next index never fit in the previous batch.
    packed = [c for c in batches if groups[c.trials[0].index] <= max_trials]
    packed.sort(key=lambda c: pending.index(c.trials[0]))
    for before, after in zip(packed, packed[1:]):
        assert len(before.trials) + groups[after.trials[0].index] > max_trials


def test_plan_batches_of_the_paper_grid_packs_whole_trial_indices():
    arch = Arch([(4, 17)])
    pending = [Trial(arch, mode, t) for t in range(1, 11) for mode in MODES]
    batches = plan_batches(arch, pending, 20)
    assert [len(c.trials) for c in batches] == [18, 18, 18, 6]
    assert [sorted({t.index for t in c.trials}) for c in batches] == [
        [1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
        [10],
    ]
    assert [len(c.trials) for c in plan_batches(arch, pending, 4)] == [4, 2] * 10
