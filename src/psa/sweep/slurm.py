"""``sweep --launcher {local,slurm} --shards N``: the shards of one sweep as submitit jobs.

``slurm`` submits one job array of N tasks, task i running shard i/N of the request on the same
results dir (which must be on a filesystem the nodes share); a task warned of its time limit or of
preemption stops cleanly and is requeued through submitit's checkpointing, and resumes through the
sweep's resume. ``local`` runs the same tasks as processes of this machine through submitit's
local executor and waits for them; the two share everything but the executor, so they live here
together. submitit is an optional extra, imported only here.

What was submitted is recorded in the results dir (its store's submission record), so
``sweep --status`` can say so from the moment of submission, before any task has written to the
results dir. Each task holds its shard's SweepRequest (pickled by submitit) and calls
``runner.run``; what it reports goes to its log through the ``printer`` it was given.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from psa import interrupts
from psa.errors import UsageError, install_hint
from psa.store import ResultsStore
from psa.sweep.process import Printer, run_reported
from psa.sweep.request import Shard, SweepError, SweepRequest

LAUNCHERS = ("local", "slurm")
JOB_NAME = "psa-sweep"
# submitit's own count of timeouts is not used: a task is requeued as long as it makes progress
# (ShardTask counts the requeues that made none).
SUBMITIT_TIMEOUTS = 1_000_000
SIGNAL_LEAD_SECONDS = 90  # submitit's default warning before the time limit
DEFAULT_TIME_LIMIT = 1440  # minutes
# Requeues in a row that made no progress (not one more loop saved) before a task gives up.
STALLED_RUNS = 5


@dataclass(frozen=True)
class LaunchOptions:
    """How the shards are launched: the executor and each task's resources."""

    launcher: str  # one of LAUNCHERS
    shards: int | None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: int = DEFAULT_TIME_LIMIT  # minutes
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem_per_task: int | None = None  # GB
    sbatch: tuple[str, ...] = ()  # extra KEY=VALUE sbatch parameters
    setup: tuple[str, ...] = ()  # shell lines the SLURM job runs before its task
    max_parallel: int | None = None
    launcher_dir: Path | None = None  # submitit's folder (default: the results dir's)

    def folder(self, request: SweepRequest) -> Path:
        """submitit's folder: job scripts, pickles and each task's logs."""
        default = ResultsStore(request.results_dir.absolute()).launcher_dir
        return (self.launcher_dir or default).absolute()


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise SweepError(
            f"--launcher needs submitit, which is not installed; install the extra: "
            f"{install_hint('slurm')}"
        ) from None
    return submitit


def sbatch_parameters(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or key.strip().startswith("-"):
            raise UsageError(
                f"--sbatch {pair!r} is not KEY=VALUE; give e.g. --sbatch constraint=a100"
            )
        extra[key.strip()] = value.strip()
    return extra


def signal_lead(time_limit: int) -> int:
    """Seconds before the time limit that SLURM warns a task: submitit's 90, or a sixth of a limit
    under nine minutes. SLURM sends the warning up to about 30 s early (it checks its timers every
    30 s), so a long lead on a short limit would leave a run little time to work; psa's stop
    itself takes seconds (the loop in flight is dropped, the batch is saved at its last loop)."""
    return min(SIGNAL_LEAD_SECONDS, time_limit * 10)


def check(options: LaunchOptions, request: SweepRequest) -> None:
    if options.shards is None:
        raise UsageError(f"--launcher {options.launcher} needs --shards N; add e.g. --shards 4")
    if request.shard is not None:
        raise UsageError("--launcher starts every shard itself; drop --shard")
    slurm_only = (options.partition, options.account, options.qos, options.sbatch, options.setup)
    if options.launcher == "local" and (any(slurm_only) or options.max_parallel):
        raise UsageError(
            "--partition, --account, --qos, --sbatch, --setup and --max-parallel are SLURM's; "
            "use --launcher slurm"
        )
    sbatch_parameters(options.sbatch)


def slurm_parameters(options: LaunchOptions) -> dict:
    parameters = {
        "job_name": JOB_NAME,
        "time": options.time_limit,
        "signal_delay_s": signal_lead(options.time_limit),
        "nodes": 1,
        "ntasks_per_node": 1,
        "array_parallelism": options.max_parallel or options.shards,
        "partition": options.partition,
        "account": options.account,
        "qos": options.qos,
        "gpus_per_task": options.gpus_per_task,
        "cpus_per_task": options.cpus_per_task,
        "mem": f"{options.mem_per_task}GB" if options.mem_per_task else None,
        "setup": list(options.setup) or None,
        "additional_parameters": sbatch_parameters(options.sbatch) or None,
    }
    return {key: value for key, value in parameters.items() if value is not None}


def build_executor(options: LaunchOptions, folder: Path):
    """The submitit executor of ``options.launcher`` with the task resources asked."""
    submitit = import_submitit()
    if options.launcher == "slurm":
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise SweepError(
                "--launcher slurm needs SLURM's sbatch and srun on PATH; run it on a login node "
                "of the cluster (or use --launcher local here)"
            )
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=SUBMITIT_TIMEOUTS)
        executor.update_parameters(**slurm_parameters(options))
        return executor
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=SUBMITIT_TIMEOUTS)
    executor.update_parameters(
        timeout_min=options.time_limit,
        gpus_per_node=options.gpus_per_task or 0,
        tasks_per_node=1,
    )
    return executor


def tasks(options: LaunchOptions, request: SweepRequest, printer: Printer | None = None) -> list:
    """One task per shard, each holding its shard's request."""
    return [
        ShardTask(request.for_shard(Shard(index, options.shards)), printer=printer)
        for index in range(1, options.shards + 1)
    ]


def node_limits(partition: str | None) -> tuple[str, int, int, int] | None:
    """(partition, CPUs, memory MB, GPUs) of the largest node of ``partition`` (the default one
    when None) as ``sinfo`` reports them; None when sinfo cannot tell."""
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%P|%c|%m|%G"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    rows = []
    for line in done.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        name, cpus, memory, gres = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        if (partition is None and default) or name == partition:
            try:
                rows.append((name, int(cpus.rstrip("+")), int(memory.rstrip("+")), gpu_count(gres)))
            except ValueError:
                continue
    if not rows:
        return None
    return rows[0][0], max(r[1] for r in rows), max(r[2] for r in rows), max(r[3] for r in rows)


def gpu_count(gres: str) -> int:
    """GPUs of one node from sinfo's GRES column, e.g. ``gpu:a100:4(S:0-1),tmpfs:1`` -> 4."""
    total = 0
    for item in gres.split(","):
        item = item.split("(")[0]
        parts = item.split(":")
        if parts[0] == "gpu" and parts[-1].isdigit() and len(parts) > 1:
            total += int(parts[-1])
    return total


def check_resources(options: LaunchOptions) -> None:
    """Refuse per-task resources that no node of the partition has (SLURM would keep such a
    job pending forever, Reason=PartitionConfig)."""
    if not (options.cpus_per_task or options.mem_per_task or options.gpus_per_task):
        return
    limits = node_limits(options.partition)
    if limits is None:
        return
    name, cpus, memory_mb, gpus = limits
    where = f"a node of partition {name} has"
    if options.cpus_per_task and options.cpus_per_task > cpus:
        raise UsageError(
            f"--cpus-per-task {options.cpus_per_task} is more than {where} ({cpus} CPUs, per "
            f"sinfo); give at most {cpus}, or another --partition"
        )
    if options.mem_per_task and options.mem_per_task * 1024 > memory_mb:
        raise UsageError(
            f"--mem-per-task {options.mem_per_task} GB is more than {where} ({memory_mb} MB, per "
            f"sinfo); give at most {memory_mb // 1024}, or another --partition"
        )
    if options.gpus_per_task and options.gpus_per_task > gpus:
        have = f"{gpus} GPUs" if gpus else "no GPUs"
        raise UsageError(
            f"--gpus-per-task {options.gpus_per_task} is more than {where} ({have}, per sinfo); "
            "give another --partition" + (f" or at most {gpus}" if gpus else "")
        )


def sbatch_script(options: LaunchOptions, folder: Path) -> str:
    """The sbatch script that submitting the shards writes (built as submitit's
    SlurmExecutor builds it, without the srun the executor insists on)."""
    from submitit.slurm.slurm import _make_sbatch_string

    parameters = slurm_parameters(options)
    if options.shards > 1:
        parameters["map_count"] = options.shards
    command = (
        f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    )
    return _make_sbatch_string(command=command, folder=folder, **parameters)


def first_error_line(text: str) -> str:
    """sbatch's own complaint (its first ``sbatch:`` line), else the last line of ``text``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("sbatch:")]
    return own[0] if own else (lines[-1] if lines else "no output")


def launch(options: LaunchOptions, request: SweepRequest, printer: Printer | None = None) -> list:
    """Submit one task per shard of ``request`` (a SLURM job array, or local processes) and record
    the submission in the results dir; the submitit jobs, in shard order. Each task reports
    through ``printer`` into its own log."""
    check(options, request)
    results_dir = request.results_dir.absolute()
    folder = options.folder(request)
    executor = build_executor(options, folder)
    if options.launcher == "slurm":
        check_resources(options)
    jobs = submit(executor, tasks(options, request, printer), results_dir, folder)
    record(ResultsStore(results_dir), options, jobs)
    return jobs


def submit(executor, shard_tasks: list, results_dir: Path, folder: Path) -> list:
    """Submit the array; a refusal raises one line with sbatch's own complaint and leaves no
    file behind (submitit writes its pickles and script before it calls sbatch)."""
    submitit = import_submitit()
    created = [path for path in (results_dir, folder) if not path.exists()]
    before = set(folder.iterdir()) if folder.is_dir() else set()
    failures = (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr
            return executor.submit_array(shard_tasks)
    except failures as error:
        for path in set(folder.iterdir()) - before if folder.is_dir() else ():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise SweepError(
            f"the submission failed: {first_error_line(str(error))}; nothing was submitted"
        ) from None


def record(store: ResultsStore, options: LaunchOptions, jobs: list) -> None:
    """What was submitted, for ``sweep --status`` (the latest submission wins)."""
    store.write_submission(
        {
            "launcher": options.launcher,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "shards": len(jobs),
            "jobs": [str(job.job_id) for job in jobs],
            "logs": [str(job.paths.stdout) for job in jobs],
            "time_limit": options.time_limit,
        }
    )


def scheduler_states(jobs: list[str]) -> dict[str, dict] | None:
    """SLURM's view of the array tasks ``jobs`` (``A_i``): task -> {state, reason, restarts,
    node, runtime}; None when scontrol does not answer (not on the cluster, job forgotten)."""
    arrays = sorted({job.split("_")[0] for job in jobs})
    states: dict[str, dict] = {}
    for array in arrays:
        try:
            done = subprocess.run(
                ["scontrol", "show", "job", "-o", array], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        for line in done.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            task = fields.get("ArrayTaskId")
            ids = array_task_ids(task) if task else []
            names = [f"{array}_{index}" for index in ids] or [fields.get("JobId", array)]
            for name in names:
                states[name] = {
                    "state": fields.get("JobState", "?"),
                    "reason": fields.get("Reason", "None"),
                    "restarts": int(fields.get("Restarts", "0") or 0),
                    "runtime": fields.get("RunTime", ""),
                }
    return states


def array_task_ids(text: str) -> list[int]:
    """``"0-3%2"`` or ``"1,3"`` or ``"2"`` -> the task indices."""
    ids = []
    for part in text.split("%")[0].split(","):
        low, sep, high = part.partition("-")
        if low.isdigit() and (not sep or high.isdigit()):
            ids += range(int(low), int(high if sep else low) + 1)
    return ids


@dataclass(frozen=True)
class ShardEnded:
    """A local task ended: ``failure`` is its last line when it failed, else None."""

    index: int
    count: int
    failure: str | None
    log: Path


def wait(jobs: list, on_end: Callable[[ShardEnded], None]) -> int:
    """Wait for local jobs, reporting each as it ends; the number that failed. Ctrl-C stops every
    task cleanly (each saves its batch)."""
    failed = 0
    try:
        for index, job in enumerate(jobs, start=1):
            try:
                job.result()
                on_end(ShardEnded(index, len(jobs), None, Path(job.paths.stdout)))
            except Exception as error:  # submitit re-raises the task's failure, of any type
                failed += 1
                lines = str(error).strip().splitlines() or [type(error).__name__]
                on_end(ShardEnded(index, len(jobs), lines[-1], Path(job.paths.stderr)))
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel()
        for job in jobs:
            job.wait()
        raise
    return failed


class ShardTask:
    """One shard of a sweep as a requeueable submitit job (a ``submitit.helpers.Checkpointable``:
    submitit calls ``checkpoint`` when it requeues).

    submitit warns a job of a coming timeout or preemption with SIGUSR2 (SLURM's ``--signal``;
    the local executor does the same before its time limit). The task turns it into the sweep's
    own stop (SIGTERM: the loop in flight is committed or dropped, the batch's progress is on
    disk), then lets submitit's handler checkpoint and requeue it. The requeued task runs the
    same shard again and resumes through the sweep's resume. A run that saved progress does not
    count against the task; ``STALLED_RUNS`` runs in a row that saved none end it, failed, with
    one line. A task whose sweep has finished exits 0 whatever signal comes after. It is the
    entry of its process: a refusal ends it with one line ``sweep: ...``.
    """

    def __init__(
        self,
        request: SweepRequest,
        stalled: int = 0,
        printer: Printer | None = None,
    ):
        self.request = request  # its settings hold the torch threads the sweep sets
        self.stalled = stalled  # runs in a row, before this one, that saved no progress
        self.printer = printer

    def __call__(self) -> int:
        start = shard_progress(self.request)
        warned: list[bool] = []  # whether this warning requeues the task
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue handler

        def stop(signum, frame) -> None:
            if warned:
                return
            progressed = shard_progress(self.request) > start
            self.stalled = 0 if progressed else self.stalled + 1
            warned.append(self.stalled < STALLED_RUNS)
            interrupts.announce_requeue(warned[0])
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGUSR2, stop)
        try:
            with interrupts.sigterm_stops():  # submitit itself ignores SIGTERM
                run_reported(self.request, self.printer)
        except (SystemExit, KeyboardInterrupt):
            if warned and not warned[0]:
                sys.exit(
                    f"sweep: shard {self.request.shard} was warned of its end {STALLED_RUNS} "
                    "runs in a row before it saved a loop; not requeued: give a longer "
                    "--time-limit and rerun the same command"
                )
            if warned and callable(requeue):
                requeue(signal.SIGUSR2, None)  # checkpoints, requeues and exits
            raise
        finally:
            signal.signal(signal.SIGUSR2, requeue)
            interrupts.announce_requeue(False)
        # The shard's work is done: a warning or a stop that comes now (the time limit, a
        # requeue in flight) must not turn the finished task into a failed one.
        for number in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)
        return 0

    def checkpoint(self, *_args, **_kwargs):
        """The same shard again: its progress lives in the results dir, not in this object."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(ShardTask(self.request, self.stalled, self.printer))


def shard_progress(request: SweepRequest) -> int:
    """Loops the shard has saved so far: the lines of its trials' loop logs (0 before its
    sweep has planned the results dir)."""
    from psa.sweep.plan import read_plan

    store = ResultsStore(request.results_dir)
    try:
        batch_plan = read_plan(store) if store.exists() else None
    except Exception:  # an unreadable plan: the sweep itself says what is wrong
        return 0
    if batch_plan is None or request.shard is None:
        return 0
    total = 0
    for batch in batch_plan.shard_part(request.shard):
        for trial in batch.trials:
            try:
                with store.log_path(trial).open("rb") as stream:
                    total += sum(1 for _ in stream)
            except OSError:
                continue
    return total
