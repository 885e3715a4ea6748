"""``sweep --launcher {local,slurm} --shards N``: the shards of one sweep as submitit jobs.

``slurm`` submits one job array of N tasks, task i running ``sweep --shard i/N`` on the same
results dir (which must be on a filesystem the nodes share); a task warned of its time limit or of
preemption stops cleanly and is requeued through submitit's checkpointing, and resumes through
sweep's resume. ``local`` runs the same tasks as processes of this machine through submitit's
local executor and waits for them. submitit is an optional extra, imported only here.

What was submitted is recorded in ``<results-dir>/launcher/submitted.json``, so ``sweep --status``
can say so from the moment of submission, before any task has written to the results dir.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from psa.arguments import positive_int
from psa.atomic import write_text_atomically
from psa.errors import UsageError, command_hint, install_hint
from psa.shard import Shard
from psa.sweep import SweepError

LAUNCHERS = ("local", "slurm")
JOB_NAME = "psa-sweep"
# submitit's own count of timeouts is not used: a task is requeued as long as it makes progress
# (psa.shard_task counts the requeues that made none).
SUBMITIT_TIMEOUTS = 1_000_000
SIGNAL_LEAD_SECONDS = 90  # submitit's default warning before the time limit
DEFAULT_TIME_LIMIT = 1440  # minutes
SUBMITTED_NAME = "submitted.json"


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("launchers (submitit; the optional extra 'slurm')")
    group.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default=None,
        help="run --shards N shards of this sweep as a SLURM job array, or as processes here",
    )
    group.add_argument(
        "--shards", type=positive_int, default=None, metavar="N", help="number of shards"
    )
    group.add_argument("--partition", default=None, help="SLURM partition")
    group.add_argument("--account", default=None, help="SLURM account")
    group.add_argument("--qos", default=None, help="SLURM quality of service")
    group.add_argument(
        "--time-limit",
        type=positive_int,
        default=DEFAULT_TIME_LIMIT,
        metavar="MINUTES",
        help="wall-clock limit of each task; a task that reaches it is requeued and resumes",
    )
    group.add_argument("--gpus-per-task", type=positive_int, default=None, help="GPUs of each task")
    group.add_argument(
        "--cpus-per-task",
        type=positive_int,
        default=None,
        help="CPU cores of each task (its torch threads; local default: cores / N)",
    )
    group.add_argument(
        "--mem-per-task", type=positive_int, default=None, metavar="GB", help="memory of each task"
    )
    group.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra sbatch parameter, e.g. constraint=a100 or mail-type=END (repeatable)",
    )
    group.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="CMD",
        help='a shell line the SLURM job runs before its task, e.g. "module load cuda" '
        "(repeatable, in order)",
    )
    group.add_argument(
        "--max-parallel",
        type=positive_int,
        default=None,
        metavar="N",
        help="most array tasks SLURM runs at once (sbatch --array=...%%N; default: every shard)",
    )
    group.add_argument(
        "--launcher-dir",
        type=Path,
        default=None,
        help="submitit's folder: job scripts, pickles and each task's logs "
        "(default: <results-dir>/launcher)",
    )


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise SweepError(
            f"--launcher needs submitit, which is not installed; install the extra: "
            f"{install_hint('slurm')}"
        ) from None
    return submitit


def sbatch_parameters(pairs: list[str]) -> dict[str, str]:
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


def shard_arguments(args: argparse.Namespace, shard: Shard) -> argparse.Namespace:
    """The flags of one shard's sweep: the launching command's, with absolute paths, no launcher."""
    values = dict(vars(args))
    for name in ("results_dir", "configs", "data_dir"):
        if values.get(name) is not None:
            values[name] = Path(values[name]).absolute()
    values.update(launcher=None, shards=None, devices=None, dry_run=False, shard=shard)
    return argparse.Namespace(**values)


def check(args: argparse.Namespace) -> None:
    if args.shards is None:
        raise UsageError(f"--launcher {args.launcher} needs --shards N; add e.g. --shards 4")
    if args.shard is not None:
        raise UsageError("--launcher starts every shard itself; drop --shard")
    slurm_only = (args.partition, args.account, args.qos, args.sbatch, args.setup)
    if args.launcher == "local" and (any(slurm_only) or args.max_parallel):
        raise UsageError(
            "--partition, --account, --qos, --sbatch, --setup and --max-parallel are SLURM's; "
            "use --launcher slurm"
        )
    sbatch_parameters(args.sbatch)


def slurm_parameters(args: argparse.Namespace) -> dict:
    parameters = {
        "job_name": JOB_NAME,
        "time": args.time_limit,
        "signal_delay_s": signal_lead(args.time_limit),
        "nodes": 1,
        "ntasks_per_node": 1,
        "array_parallelism": args.max_parallel or args.shards,
        "partition": args.partition,
        "account": args.account,
        "qos": args.qos,
        "gpus_per_task": args.gpus_per_task,
        "cpus_per_task": args.cpus_per_task,
        "mem": f"{args.mem_per_task}GB" if args.mem_per_task else None,
        "setup": list(args.setup) or None,
        "additional_parameters": sbatch_parameters(args.sbatch) or None,
    }
    return {key: value for key, value in parameters.items() if value is not None}


def build_executor(args: argparse.Namespace, folder: Path):
    """The submitit executor of ``args.launcher`` with the task resources of the flags."""
    submitit = import_submitit()
    if args.launcher == "slurm":
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise SweepError(
                "--launcher slurm needs SLURM's sbatch and srun on PATH; run it on a login node "
                "of the cluster (or use --launcher local here)"
            )
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=SUBMITIT_TIMEOUTS)
        executor.update_parameters(**slurm_parameters(args))
        return executor
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=SUBMITIT_TIMEOUTS)
    executor.update_parameters(
        timeout_min=args.time_limit,
        gpus_per_node=args.gpus_per_task or 0,
        tasks_per_node=1,
    )
    return executor


def tasks(args: argparse.Namespace) -> list:
    from psa.shard_task import ShardTask

    threads = args.cpus_per_task
    if threads is None and args.launcher == "local":
        threads = max(1, (os.cpu_count() or 1) // args.shards)
    return [
        ShardTask(shard_arguments(args, Shard(index, args.shards)), threads)
        for index in range(1, args.shards + 1)
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


def check_resources(args: argparse.Namespace) -> None:
    """Refuse per-task resources that no node of the partition has (SLURM would keep such a
    job pending forever, Reason=PartitionConfig)."""
    if not (args.cpus_per_task or args.mem_per_task or args.gpus_per_task):
        return
    limits = node_limits(args.partition)
    if limits is None:
        return
    name, cpus, memory_mb, gpus = limits
    where = f"a node of partition {name} has"
    if args.cpus_per_task and args.cpus_per_task > cpus:
        raise UsageError(
            f"--cpus-per-task {args.cpus_per_task} is more than {where} ({cpus} CPUs, per sinfo); "
            f"give at most {cpus}, or another --partition"
        )
    if args.mem_per_task and args.mem_per_task * 1024 > memory_mb:
        raise UsageError(
            f"--mem-per-task {args.mem_per_task} GB is more than {where} ({memory_mb} MB, per "
            f"sinfo); give at most {memory_mb // 1024}, or another --partition"
        )
    if args.gpus_per_task and args.gpus_per_task > gpus:
        have = f"{gpus} GPUs" if gpus else "no GPUs"
        raise UsageError(
            f"--gpus-per-task {args.gpus_per_task} is more than {where} ({have}, per sinfo); "
            "give another --partition" + (f" or at most {gpus}" if gpus else "")
        )


def sbatch_script(args: argparse.Namespace, folder: Path) -> str:
    """The sbatch script that submitting the shards of ``args`` writes (built as submitit's
    SlurmExecutor builds it, without the srun the executor insists on)."""
    from submitit.slurm.slurm import _make_sbatch_string

    parameters = slurm_parameters(args)
    if args.shards > 1:
        parameters["map_count"] = args.shards
    command = (
        f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    )
    return _make_sbatch_string(command=command, folder=folder, **parameters)


def first_error_line(text: str) -> str:
    """sbatch's own complaint (its first ``sbatch:`` line), else the last line of ``text``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("sbatch:")]
    return own[0] if own else (lines[-1] if lines else "no output")


def launch(args: argparse.Namespace, preview_shard=None) -> int:
    """Submit the shards; print the job ids, their logs and the status command. A local launch
    waits for its tasks and returns non-zero if one failed. With --dry-run, print what would be
    submitted (the sbatch script) and, through ``preview_shard(shard_args)``, each shard's part;
    submit nothing."""
    check(args)
    results_dir = Path(args.results_dir).absolute()
    folder = (args.launcher_dir or results_dir / "launcher").absolute()
    if args.dry_run:
        return preview(args, folder, preview_shard)
    executor = build_executor(args, folder)
    if args.launcher == "slurm":
        check_resources(args)
    jobs = submit(executor, tasks(args), results_dir, folder)
    count = len(jobs)
    record(results_dir, args, jobs)
    if args.launcher == "slurm" and count == 1:  # submitit submits one task as a plain job
        print(f"Submitted SLURM job {jobs[0].job_id}: 1 task, running sweep --shard 1/1")
    elif args.launcher == "slurm":
        array = jobs[0].job_id.split("_")[0]
        print(f"Submitted SLURM job array {array}: {count} tasks, task i runs sweep --shard i/N")
    else:
        print(f"Started {count} local submitit jobs, job i runs sweep --shard i/N")
    for index, job in enumerate(jobs, start=1):
        print(f"  shard {index}/{len(jobs)}: job {job.job_id}, log {job.paths.stdout}")
    print(f"Watch: {command_hint('sweep')} --status --results-dir {results_dir}")
    if args.launcher == "slurm":
        return 0
    return wait(jobs)


def preview(args: argparse.Namespace, folder: Path, preview_shard) -> int:
    import_submitit()
    if args.launcher == "slurm":
        print(
            f"Dry run: would submit this sbatch script ({args.shards} array tasks); nothing "
            "is submitted"
        )
        print(sbatch_script(args, folder), end="")
    else:
        print(f"Dry run: would start {args.shards} local submitit jobs; nothing is started")
    for index in range(1, args.shards + 1):
        if preview_shard is not None:
            preview_shard(shard_arguments(args, Shard(index, args.shards)))
    return 0


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


def record(results_dir: Path, args: argparse.Namespace, jobs: list) -> None:
    """What was submitted, for ``sweep --status`` (the latest submission wins)."""
    submitted = {
        "launcher": args.launcher,
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "shards": len(jobs),
        "jobs": [str(job.job_id) for job in jobs],
        "logs": [str(job.paths.stdout) for job in jobs],
        "time_limit": args.time_limit,
    }
    write_text_atomically(results_dir / "launcher" / SUBMITTED_NAME, json.dumps(submitted) + "\n")


def read_submitted(results_dir: Path) -> dict | None:
    path = Path(results_dir) / "launcher" / SUBMITTED_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("jobs"), list) else None


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


def submission_lines(results_dir: Path) -> list[str]:
    """What ``sweep --status`` says of the latest submission to ``results_dir``: one line, then
    SLURM's state of each task; nothing when none was recorded."""
    submitted = read_submitted(results_dir)
    if submitted is None:
        return []
    jobs = [str(job) for job in submitted["jobs"]]
    count = len(jobs)
    if submitted.get("launcher") != "slurm":
        return [f"  launched {count} local submitit jobs at {submitted.get('submitted')}"]
    array = jobs[0].split("_")[0] if jobs else "?"
    what = f"job array {array} of {count} tasks" if count > 1 else f"job {array} of 1 task"
    lines = [f"  SLURM {what}, submitted {submitted.get('submitted')}"]
    states = scheduler_states(jobs)
    if states is None:
        return [
            *lines,
            "  (scontrol does not know the array: it ended long ago, or this is "
            "not the cluster's login node)",
        ]
    for index, job in enumerate(jobs, start=1):
        state = states.get(job)
        if state is None:
            lines.append(f"  shard {index}/{count}: job {job} unknown to SLURM")
            continue
        words = state["state"]
        if state["state"] == "PENDING":
            words += f" ({state['reason']})"
        elif state["state"] == "RUNNING":
            words += f" for {state['runtime']}"
        if state["restarts"]:
            times = "time" if state["restarts"] == 1 else "times"
            words += f", requeued {state['restarts']} {times}"
        lines.append(f"  shard {index}/{count}: job {job} {words}")
    return lines


def wait(jobs: list) -> int:
    """Wait for local jobs; Ctrl-C stops every task cleanly (each saves its batch)."""
    failed = 0
    try:
        for index, job in enumerate(jobs, start=1):
            try:
                job.result()
                print(f"  shard {index}/{len(jobs)} finished")
            except Exception as error:  # submitit re-raises the task's failure, of any type
                failed += 1
                lines = str(error).strip().splitlines() or [type(error).__name__]
                print(
                    f"  shard {index}/{len(jobs)} failed: {lines[-1]} (log {job.paths.stderr})",
                    file=sys.stderr,
                )
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel()
        for job in jobs:
            job.wait()
        raise
    return 1 if failed else 0
