"""``sweep --launcher {local,slurm} --shards N``: the shards of one sweep as submitit jobs.

``slurm`` submits one job array of N tasks, task i running ``sweep --shard i/N`` on the same
results dir (which must be on a filesystem the nodes share); a task warned of its time limit or of
preemption stops cleanly and is requeued through submitit's checkpointing, and resumes through
sweep's resume. ``local`` runs the same tasks as processes of this machine through submitit's
local executor and waits for them. submitit is an optional extra, imported only here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from psa.arguments import positive_int
from psa.errors import UsageError, command_hint, install_hint
from psa.shard import Shard
from psa.sweep import SweepError

LAUNCHERS = ("local", "slurm")
JOB_NAME = "psa-sweep"
TIMEOUT_REQUEUES = 10  # how often a task may hit its time limit and be requeued
DEFAULT_TIME_LIMIT = 1440  # minutes


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
    if args.launcher == "local" and (args.partition or args.account or args.qos or args.sbatch):
        raise UsageError(
            "--partition, --account, --qos and --sbatch are SLURM's; use --launcher slurm"
        )
    sbatch_parameters(args.sbatch)


def build_executor(args: argparse.Namespace, folder: Path):
    """The submitit executor of ``args.launcher`` with the task resources of the flags."""
    submitit = import_submitit()
    if args.launcher == "slurm":
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise SweepError(
                "--launcher slurm needs SLURM's sbatch and srun on PATH; run it on a login node "
                "of the cluster (or use --launcher local here)"
            )
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=TIMEOUT_REQUEUES)
        parameters = {
            "job_name": JOB_NAME,
            "time": args.time_limit,
            "nodes": 1,
            "ntasks_per_node": 1,
            "array_parallelism": args.shards,
            "partition": args.partition,
            "account": args.account,
            "qos": args.qos,
            "gpus_per_task": args.gpus_per_task,
            "cpus_per_task": args.cpus_per_task,
            "mem": f"{args.mem_per_task}GB" if args.mem_per_task else None,
            "additional_parameters": sbatch_parameters(args.sbatch) or None,
        }
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        return executor
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=TIMEOUT_REQUEUES)
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


def launch(args: argparse.Namespace) -> int:
    """Submit the shards; print the job ids, their logs and the status command. A local launch
    waits for its tasks and returns non-zero if one failed."""
    check(args)
    results_dir = Path(args.results_dir).absolute()
    folder = (args.launcher_dir or results_dir / "launcher").absolute()
    executor = build_executor(args, folder)
    submitit = import_submitit()
    try:
        jobs = executor.submit_array(tasks(args))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
        lines = str(error).strip().splitlines() or ["no output"]
        raise SweepError(f"the submission failed: {lines[-1]}; see {folder}") from None
    count = len(jobs)
    if args.launcher == "slurm":
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
