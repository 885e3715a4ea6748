"""sweep --launcher slurm against a real single-node SLURM cluster (Debian's packages, started by
tests/slurm_cluster.py; skipped with the reason where it cannot run): a job array, a requeue, a
cancel and rerun, time-limit requeues, --status at every stage, and the refusals, each ending with
the records, loop logs and tables of the single-process sweep, on real MNIST."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from psa.commands import sweep as sweep_command  # noqa: E402
from psa.errors import PsaError  # noqa: E402
from psa.modes import MODES  # noqa: E402
from psa.sweep import Shard, slurm  # noqa: E402
from slurm_cluster import Cluster, Unavailable  # noqa: E402
from sweep_equality import assert_same_as_single_process as same_as_single_process  # noqa: E402

pytestmark = pytest.mark.slurm

ARCHS = ("[1*8]", "[2*4]")
KEYS = ("1*8", "2*4")
TRIALS, SEED, MAX_BATCH = 2, 11, 6  # four batches of six trials
LOOPS = 6
# Compute of the task of the one-minute test: more than one run, which SLURM warns (10 s before
# its limit, up to 30 s early) 20 to 50 s after its start.
TASK_SECONDS = 55
REQUIRED = "PSA_REQUIRE_SLURM"  # set (by .ci/run): fail where the cluster cannot start
WAIT = 300  # seconds any one stage may take on a busy machine


@pytest.fixture(scope="module")
def cluster():
    saved = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # the tasks inherit it
    running = Cluster()
    try:
        running.start()
    except Unavailable as why:
        if os.environ.get(REQUIRED):
            pytest.fail(f"no SLURM cluster here ({REQUIRED} is set): {why}")
        pytest.skip(f"no SLURM cluster here: {why}")
    try:
        yield running
    finally:
        running.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def flags(results_dir: Path, data_dir: Path, *extra: str, loops: int = LOOPS) -> list[str]:
    archs = [flag for arch in ARCHS for flag in ("--arch", arch)]
    return [
        *archs,
        *("--trials", str(TRIALS), "--meta-loops", str(loops), "--seed", str(SEED)),
        *("--max-batch", str(MAX_BATCH), "--device", "cpu"),
        *("--results-dir", str(results_dir), "--data-dir", str(data_dir)),
        *extra,
    ]


def slurm_flags(results_dir: Path, data_dir: Path, *extra: str, loops: int = LOOPS) -> list[str]:
    return flags(
        results_dir,
        data_dir,
        *("--launcher", "slurm", "--shards", "2", "--cpus-per-task", "1"),
        *extra,
        loops=loops,
    )


def reference_sweep(folder: Path, data_dir: Path, loops: int) -> Path:
    results = folder / "results"
    sweep_command.main(flags(results, data_dir, loops=loops))
    return results


@pytest.fixture(scope="module")
def reference_timed(tmp_path_factory, repo_dataset) -> tuple[Path, float]:
    """The single-process sweep, and its seconds per loop of one batch on this machine."""
    start = time.monotonic()
    results = reference_sweep(tmp_path_factory.mktemp("single"), repo_dataset, LOOPS)
    return results, (time.monotonic() - start) / (4 * LOOPS)


@pytest.fixture(scope="module")
def reference(reference_timed) -> Path:
    return reference_timed[0]


# Every trial of the grid recorded once, as the single-process sweep recorded it.
assert_same_as_single_process = partial(
    same_as_single_process, keys=KEYS, trials=TRIALS * len(MODES) * len(KEYS)
)


def submit(argv: list[str], capsys) -> tuple[str, list[str]]:
    """Launch; the job (array) id and its task ids as printed."""
    sweep_command.main(argv)
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("Submitted SLURM job")]
    array = line.split(":")[0].split()[-1]
    jobs = re.findall(r"^  shard \d+/\d+: job (\S+), log ", out, flags=re.MULTILINE)
    assert jobs and all(job.split("_")[0] == array for job in jobs), out
    return array, jobs


def status(results: Path, capsys) -> str:
    sweep_command.main(["--status", "--results-dir", str(results)])
    return capsys.readouterr().out


def states(jobs: list[str]) -> dict[str, dict]:
    return slurm.scheduler_states(jobs) or {}


def wait_until(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")


def all_in(jobs: list[str], wanted: set[str]):
    now = states(jobs)
    return all(now.get(job, {}).get("state") in wanted for job in jobs) and now


def saved_loops(results: Path, shard: int) -> int:
    """Loop-log lines of the trials of shard ``shard``/2 (its progress on disk)."""
    args = sweep_command.build_parser().parse_args(["--results-dir", str(results)])
    return slurm.shard_progress(sweep_command.request_of(args).for_shard(Shard(shard, 2)))


def task_logs(results: Path, job: str) -> str:
    folder = results / "launcher"
    return "".join(
        path.read_text() for path in sorted(folder.glob(f"{job}_0_log.*")) if path.is_file()
    )


def test_a_two_shard_array_records_the_local_sweep_and_status_follows_every_stage(
    cluster, reference, tmp_path, repo_dataset, capsys
):
    results = tmp_path / "results"
    setup = "echo psa-setup ran for task $SLURM_ARRAY_TASK_ID"
    array, jobs = submit(
        slurm_flags(results, repo_dataset, "--setup", setup, "--sbatch", "begin=now+600"), capsys
    )
    # Pending (held until a start time): --status answers from the moment of submission.
    out = status(results, capsys)
    assert f"{results.absolute()}: submitted; no task has started its sweep yet" in out
    assert f"SLURM job array {array} of 2 tasks" in out
    for index, job in enumerate(jobs, start=1):
        assert f"shard {index}/2: job {job} PENDING (" in out  # (None), then (BeginTime)

    subprocess.run(["scontrol", "update", f"JobId={array}", "StartTime=now"], check=True)
    wait_until(lambda: saved_loops(results, 1) and saved_loops(results, 2), "both shards run")
    out = status(results, capsys)
    assert "batch plan" in out and "running" in out
    assert "RUNNING for" in out

    wait_until(lambda: all_in(jobs, {"COMPLETED"}), "both tasks complete")
    out = status(results, capsys)
    assert "done        4 batches, 24 trials" in out
    for index, job in enumerate(jobs, start=1):
        assert f"shard {index}/2: job {job} COMPLETED" in out
        log = task_logs(results, job)
        assert f"psa-setup ran for task {index - 1}" in log
        assert "Traceback" not in log
    assert_same_as_single_process(results, reference)


def test_a_requeued_task_and_a_cancelled_one_end_as_the_local_sweep_after_a_rerun(
    cluster, reference, tmp_path, repo_dataset, capsys
):
    """--max-parallel 1: shard 2 waits while shard 1 runs, and takes its place while the
    requeued shard 1 waits."""
    results = tmp_path / "results"
    argv = slurm_flags(results, repo_dataset, "--max-parallel", "1")
    array, jobs = submit(argv, capsys)
    wait_until(lambda: saved_loops(results, 1) >= 2 * MAX_BATCH, "shard 1 saves two loops")
    out = status(results, capsys)
    assert f"shard 2/2: job {jobs[1]} PENDING (JobArrayTaskLimit)" in out
    subprocess.run(["scontrol", "requeue", jobs[0]], check=True)
    wait_until(
        lambda: any(
            line.startswith(f"  shard 1/2: job {jobs[0]} ") and line.endswith(", requeued 1 time")
            for line in status(results, capsys).splitlines()
        ),
        "--status shows the requeue (COMPLETING, PENDING, then RUNNING)",
    )

    wait_until(lambda: saved_loops(results, 2) >= 2 * MAX_BATCH, "shard 2 saves two loops")
    subprocess.run(["scancel", jobs[1]], check=True)
    wait_until(lambda: all_in(jobs[1:], {"CANCELLED"}), "shard 2 is cancelled")
    wait_until(lambda: all_in(jobs[:1], {"COMPLETED"}), "the requeued shard 1 completes")
    out = status(results, capsys)
    assert f"shard 2/2: job {jobs[1]} CANCELLED" in out
    assert "saved" in out or "pending" in out  # shard 2's batches wait for a rerun

    # The user reruns the same command: shard 1 has nothing left, shard 2 resumes.
    again, rerun = submit(argv, capsys)
    assert again != array
    wait_until(lambda: all_in(rerun, {"COMPLETED"}), "the rerun completes")
    assert "resuming at loop" in task_logs(results, rerun[1])
    assert "Nothing to run" in task_logs(results, rerun[0])
    assert_same_as_single_process(results, reference)


def test_a_one_minute_limit_requeues_a_task_until_done_and_it_completes(
    cluster, reference_timed, tmp_path, repo_dataset, capsys
):
    """SLURM warns each run (SIGUSR2, 10 s before its one-minute limit, up to 30 s early); the
    task stops with its progress saved and is requeued; progress made, the requeues never run
    out, and the task ends COMPLETED with the single-process sweep's results. The loops are
    sized from this machine's speed so that the work outlasts the first run."""
    loops = max(LOOPS, math.ceil(TASK_SECONDS / (4 * reference_timed[1])))
    single = tmp_path / "single"
    reference = subprocess.Popen(  # beside the task, on the machine's other core
        [sys.executable, "-m", "psa.commands.sweep", *flags(single, repo_dataset, loops=loops)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        results = tmp_path / "results"
        argv = flags(results, repo_dataset, "--launcher", "slurm", "--shards", "1", loops=loops)
        argv += ["--cpus-per-task", "1", "--time-limit", "1"]
        job, [task] = submit(argv, capsys)
        final = wait_until(lambda: all_in([task], {"COMPLETED", "FAILED"}), "the task ends", 900)
        assert reference.wait(timeout=WAIT) == 0, reference.stderr.read()
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    log = task_logs(results, task)
    assert final[task]["state"] == "COMPLETED", (final, log)
    assert final[task]["restarts"] >= 1, final
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert "Traceback" not in log and "rerun the same command" not in log
    assert "the scheduler requeues this task and it resumes by itself" in log
    assert_same_as_single_process(results, single)


@pytest.mark.parametrize(
    ("extra", "sbatch_says"),
    [
        (["--partition", "nosuch"], "sbatch: error: invalid partition specified: nosuch"),
        (["--sbatch", "nosuchopt=1"], "sbatch: unrecognized option '--nosuchopt=1'"),
    ],
)
def test_a_submission_sbatch_refuses_ends_in_its_own_line_and_leaves_nothing(
    cluster, tmp_path, repo_dataset, capsys, extra, sbatch_says
):
    results = tmp_path / "results"
    before = cluster.jobs()
    with pytest.raises(PsaError) as raised:
        sweep_command.main(slurm_flags(results, repo_dataset, *extra))
    assert str(raised.value) == f"the submission failed: {sbatch_says}; nothing was submitted"
    assert capsys.readouterr().err == ""  # sbatch's own lines are not echoed
    assert not results.exists()
    assert cluster.jobs() == before


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--cpus-per-task", "64"], "--cpus-per-task 64 is more than a node of partition debug"),
        (["--mem-per-task", "100000"], "--mem-per-task 100000 GB is more than a node of"),
        (["--gpus-per-task", "1"], "(no GPUs, per sinfo)"),
    ],
)
def test_resources_no_node_of_the_partition_has_are_refused_before_submission(
    cluster, tmp_path, repo_dataset, extra, complaint
):
    results = tmp_path / "results"
    before = cluster.jobs()
    argv = flags(results, repo_dataset, "--launcher", "slurm", "--shards", "2", *extra)
    with pytest.raises(PsaError) as raised:
        sweep_command.main(argv)
    message = str(raised.value)
    assert "\n" not in message
    assert complaint in message
    assert not results.exists()
    assert cluster.jobs() == before


def test_a_dry_run_on_the_cluster_prints_the_script_and_each_part_and_submits_nothing(
    cluster, tmp_path, repo_dataset, capsys
):
    results = tmp_path / "results"
    before = cluster.jobs()
    sweep_command.main(slurm_flags(results, repo_dataset, "--max-parallel", "1", "--dry-run"))
    out = capsys.readouterr().out
    assert "Dry run: would submit this sbatch script (2 array tasks); nothing is submitted" in out
    assert "#SBATCH --array=0-1%1" in out and "#SBATCH --cpus-per-task=1" in out
    assert "Shard 1/2 of batch plan" in out and "Shard 2/2 of batch plan" in out
    assert not results.exists()
    assert cluster.jobs() == before
