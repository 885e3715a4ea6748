"""sweep --shard: a deterministic partition of one batch plan, so shards running at once on one
results dir, or in separate dirs merged afterwards, record exactly the single-process sweep's
trials; --dry-run --shard, --status, and the refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from command_support import refusal as command_refusal
from psa.arch import parse_arch
from psa.commands import merge_results
from psa.commands import sweep as sweep_command
from psa.config import RunConfig
from psa.device import resolve_device
from psa.errors import PsaError
from psa.modes import MODES
from psa.store import ResultsStore
from psa.sweep import Shard, SweepRequest, parse_shard, slurm
from psa.sweep.plan import Grid, assign, full_plan, read_plan, store_plan
from psa.sweep.runner import prepare_results_dir
from sweep_equality import assert_same_as_single_process as same_as_single_process
from sweep_equality import outcomes

ARCHS = ("[1*8]", "[2*4]")
KEYS = ("1*8", "2*4")
TRIALS, LOOPS, SEED, MAX_BATCH = 2, 3, 11, 6  # four batches of six trials


def flags(results_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    archs = [flag for arch in ARCHS for flag in ("--arch", arch)]
    return [
        *archs,
        *("--trials", str(TRIALS), "--meta-loops", str(LOOPS), "--seed", str(SEED)),
        *("--max-batch", str(MAX_BATCH), "--device", "cpu"),
        *("--results-dir", str(results_dir), "--data-dir", str(data_dir)),
        *extra,
    ]


# Every trial of the grid recorded once, as the single-process sweep recorded it.
assert_same_as_single_process = partial(
    same_as_single_process, keys=KEYS, trials=TRIALS * len(MODES) * len(KEYS)
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, repo_dataset) -> Path:
    """The single-process sweep of the grid."""
    results = tmp_path_factory.mktemp("single") / "results"
    sweep_command.main(flags(results, repo_dataset))
    return results


def start_shard(results_dir: Path, data_dir: Path, shard: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "psa.commands.sweep"]
    command += flags(results_dir, data_dir, "--shard", shard)
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def run_shards(*jobs: tuple[Path, str], data_dir: Path) -> None:
    processes = [start_shard(results, data_dir, shard) for results, shard in jobs]
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        assert "Traceback" not in err


@pytest.mark.slow
def test_two_shards_at_once_on_one_results_dir_record_the_single_process_sweep(
    reference, tmp_path, repo_dataset, capsys
):
    results = tmp_path / "results"
    run_shards((results, "1/2"), (results, "2/2"), data_dir=repo_dataset)
    assert_same_as_single_process(results, reference)
    assert read_plan(ResultsStore(results)) == read_plan(ResultsStore(reference))
    sweep_command.main(["--status", "--results-dir", str(results)])
    status = capsys.readouterr().out
    assert "4 batches of 24 trials; 24 trials recorded" in status
    assert "done        4 batches, 24 trials" in status and "pending     0 batches" in status


@pytest.mark.slow
def test_shards_in_separate_dirs_merged_equal_the_single_process_sweep(
    reference, tmp_path, repo_dataset
):
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    run_shards((first, "1/2"), (second, "2/2"), data_dir=repo_dataset)
    assert not set(outcomes(first)) & set(outcomes(second))
    merged = tmp_path / "merged"
    merge_results.main(["--results-dir", str(merged), str(first), str(second)])
    assert_same_as_single_process(merged, reference)
    assert ResultsStore(merged).plan_text() == ResultsStore(first).plan_text()


@pytest.mark.slow
def test_a_finished_shard_rerun_runs_nothing_and_status_counts_the_other_as_pending(
    reference, tmp_path, repo_dataset, capsys
):
    results = tmp_path / "results"
    sweep_command.main(flags(results, repo_dataset, "--shard", "2/2"))
    sweep_command.main(flags(results, repo_dataset, "--shard", "2/2"))
    assert "Nothing to run: every trial of shard 2/2 is recorded" in capsys.readouterr().out
    sweep_command.main(["--status", "--results-dir", str(results)])
    status = capsys.readouterr().out
    assert "done        2 batches, 12 trials" in status
    assert "pending     2 batches, 12 trials" in status
    assert "[1*8] done 1, pending 1" in status
    # The rest of the plan, run without --shard, completes the single-process sweep.
    sweep_command.main(flags(results, repo_dataset))
    assert_same_as_single_process(results, reference)


def test_dry_run_of_a_shard_shows_its_part_of_the_plan_and_writes_nothing(
    tmp_path, repo_dataset, capsys
):
    results = tmp_path / "results"
    parts = []
    for shard in ("1/2", "2/2"):
        sweep_command.main(flags(results, repo_dataset, "--shard", shard, "--dry-run"))
        out = capsys.readouterr().out
        assert f"Shard {shard} of batch plan " in out and "2 of 4 batches" in out
        # decay is copied from none at these settings: 5 trained modes of each trial index
        assert "10 trials to run (0 already recorded)" in out and "decay copied from none" in out
        parts.append([line.strip() for line in out.splitlines() if " K=" in line])
    assert not results.exists()
    assert len(parts[0]) == len(parts[1]) == 2 and not set(parts[0]) & set(parts[1])
    assert sorted(line.split(" (")[0] for line in parts[0] + parts[1]) == sorted(
        [f"[{key}] K=5" for key in KEYS] * 2
    )


def test_a_shard_of_another_grid_than_the_dir_was_planned_for_is_refused(tmp_path, repo_dataset):
    results = tmp_path / "results"
    # What a shard's real run stores before it trains: the settings and the plan.
    settings = RunConfig("resmlp", LOOPS, SEED)
    prepare_results_dir(ResultsStore(results), settings)
    grid = Grid(KEYS, tuple(MODES), TRIALS)
    configs = tuple(parse_arch(arch) for arch in ARCHS)
    request = SweepRequest(configs, tuple(MODES), TRIALS, settings, results, max_batch=MAX_BATCH)
    store = ResultsStore(results)
    store_plan(store, full_plan(request, grid, settings, resolve_device("cpu")))
    before = store.plan_path.read_bytes()
    with pytest.raises(PsaError) as raised:
        sweep_command.main(flags(results, repo_dataset, "--shard", "1/2", "--trials", "3"))
    message = str(raised.value)
    assert "\n" not in message
    assert "planned for another grid (trials 2 here vs 3 asked)" in message
    assert store.plan_path.read_bytes() == before


def test_status_of_a_dir_without_a_sweep_is_refused_in_one_line(tmp_path):
    with pytest.raises(PsaError) as raised:
        sweep_command.main(["--status", "--results-dir", str(tmp_path)])
    message = str(raised.value)
    assert "\n" not in message and "no settings.json" in message


@pytest.mark.parametrize(
    ("devices", "gpus", "expected"),
    [
        ("cuda:0,cuda:1", 0, "--devices names cuda:0, but "),
        ("cuda:0,cuda:1", 1, "--devices names cuda:1, but only 1 CUDA device exists (cuda:0)"),
        ("cpu,cuda:0", 0, "; name only devices this machine has"),
        ("cpu,tpu", 0, "--devices: unknown device 'tpu'"),
    ],
)
def test_devices_this_machine_lacks_are_refused_before_any_worker_starts(
    tmp_path, repo_dataset, capsys, monkeypatch, devices, gpus, expected
):
    import torch

    if gpus:  # a machine with one GPU (this one may have none)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    results = tmp_path / "results"
    for extra in ([], ["--dry-run"]):
        status, line = command_refusal(
            capsys, "sweep", flags(results, repo_dataset, "--devices", devices, *extra)
        )
        assert status == 2
        assert line.startswith("sweep: ") and expected in line
        assert "--device cpu" not in line
    assert not results.exists()  # no worker, no launcher dir


@given(st.integers(1, 50), st.integers(1, 50))
def test_a_shard_parses_from_i_slash_n_only_within_range(index, count):
    text = f"{index}/{count}"
    if index <= count:
        assert parse_shard(text) == Shard(index, count) and str(parse_shard(text)) == text
    else:
        with pytest.raises(ValueError, match="1 <= I <= N"):
            parse_shard(text)


@pytest.mark.parametrize("text", ["0/3", "1/0", "1", "1/2/3", "a/b", "-1/2", "１/2", "1/ 2x", ""])
def test_malformed_shards_are_refused(text):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


@given(
    costs=st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=0, max_size=60),
    count=st.integers(1, 12),
)
def test_assign_gives_every_batch_one_shard_deterministically_and_balanced(costs, count):
    owners = assign(costs, count)
    assert owners == assign(list(costs), count)
    assert len(owners) == len(costs) and all(1 <= owner <= count for owner in owners)
    loads = [sum(c for c, o in zip(costs, owners) if o == shard) for shard in range(1, count + 1)]
    if costs:
        # Greedy longest-first: no shard carries more than the lightest plus one batch.
        assert max(loads) <= min(loads) + max(costs) + 1e-6
    if len(costs) >= count and min(costs) > 0:
        assert set(owners) == set(range(1, count + 1))  # nobody idles while batches wait


def launch_arguments(results: Path, data_dir: Path, *extra: str):
    """The launch options and the request of these flags, as the command builds them."""
    args = sweep_command.build_parser().parse_args(flags(results, data_dir, *extra))
    return sweep_command.launch_options(args), sweep_command.request_of(args)


@pytest.mark.parametrize(
    ("failed", "done"),
    [
        (0, "Done: 2 shards finished in {results}"),
        (
            1,
            "Done: 1 of 2 shards finished; sweep --status --results-dir {results} shows every "
            "batch",
        ),
    ],
)
def test_a_local_launch_ends_with_a_done_line_as_devices_does(
    tmp_path, repo_dataset, monkeypatch, capsys, failed, done
):
    """submitit's jobs stood in for: what the launch prints once they have ended."""
    jobs = [
        SimpleNamespace(job_id=str(index), paths=SimpleNamespace(stdout=tmp_path / f"{index}.out"))
        for index in (1, 2)
    ]
    monkeypatch.setattr(slurm, "launch", lambda options, request, printer: jobs)
    monkeypatch.setattr(slurm, "wait", lambda jobs, on_end: failed)
    results = tmp_path / "results"
    argv = flags(results, repo_dataset, "--launcher", "local", "--shards", "2")
    assert sweep_command.main(argv) == (1 if failed else 0)
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == done.format(results=results.absolute())


@pytest.mark.slow
def test_the_local_submitit_launcher_runs_the_shards_as_processes_like_one_sweep(
    reference, tmp_path, repo_dataset, capsys
):
    pytest.importorskip("submitit")
    results = tmp_path / "results"
    sweep_command.main(
        flags(results, repo_dataset, "--launcher", "local", "--shards", "2", "--cpus-per-task", "1")
    )
    out = capsys.readouterr().out
    assert "Started 2 local submitit jobs" in out and "shard 2/2 finished" in out
    assert f"Watch: sweep --status --results-dir {results.absolute()}" in out
    assert out.splitlines()[-1] == f"Done: 2 shards finished in {results.absolute()}"
    assert_same_as_single_process(results, reference)
    logs = sorted((results / "launcher").glob("*_0_log.out"))
    assert len(logs) == 2 and all("Sweep: 2 batches" in log.read_text() for log in logs)


@pytest.mark.slow
def test_a_local_task_warned_of_its_time_limit_requeues_and_resumes_exactly(
    reference, tmp_path, repo_dataset
):
    """SIGUSR2 is submitit's warning of a timeout or preemption: the task stops cleanly,
    checkpoints, is requeued by submitit, and the requeued task resumes the same shard."""
    pytest.importorskip("submitit")
    from psa.sweep import slurm

    results = tmp_path / "results"
    options, request = launch_arguments(
        results, repo_dataset, "--launcher", "local", "--shards", "1", "--cpus-per-task", "1"
    )
    executor = slurm.build_executor(options, options.folder(request))
    [job] = executor.submit_array(slurm.tasks(options, request, sweep_command.SweepPrinter))
    logs = results / "logs" / parse_arch(ARCHS[0]).slug
    deadline = time.monotonic() + 300
    while not any(path.stat().st_size for path in logs.glob("*.jsonl")):
        assert time.monotonic() < deadline and job.state == "RUNNING", job.paths.stderr
        time.sleep(0.05)
    # What submitit's local controller sends its task before the time limit (SLURM: --signal).
    controller = job._process.pid
    [task] = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    os.kill(int(task), signal.SIGUSR2)
    assert job.result() == 0
    log = job.paths.stdout.read_text() + job.paths.stderr.read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    # The stop says the task comes back by itself: there is nothing for the user to rerun.
    assert "the scheduler requeues this task and it resumes by itself" in log
    assert "rerun the same command" not in log
    assert log.count("Starting with JobEnvironment") == 2  # the task ran twice
    assert_same_as_single_process(results, reference)


@pytest.mark.slow
def test_devices_cpu_cpu_runs_one_shard_per_worker_on_one_results_dir(
    reference, tmp_path, repo_dataset, capsys
):
    results = tmp_path / "results"
    sweep_command.main(flags(results, repo_dataset, "--devices", "cpu,cpu"))
    out = capsys.readouterr().out
    assert "shard 1/2 on cpu" in out and "shard 2/2 on cpu" in out
    assert_same_as_single_process(results, reference)
    logs = sorted((results / "launcher").glob("worker-*-of-2.log"))
    assert len(logs) == 2 and all("Done:" in log.read_text() for log in logs)
