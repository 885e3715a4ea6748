"""``sweep``: the paper's grid (configurations x modes x trials x meta-loops) on one machine, its
shards on a SLURM cluster or per device, and its status. Parses the flags into a SweepRequest,
calls psa.sweep and prints what it reports."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from psa import interrupts
from psa.arch import Arch, argparse_arch, read_config_file
from psa.arguments import (
    MAX_SHARDS,
    MAX_TRIALS,
    add_cuda_graph_flag,
    add_device_flag,
    add_shipped_flag,
    argparse_shard,
    device_name,
    existing_path,
    mode_list,
    positive_int,
    refuse_shipped,
    shard_count,
    trial_count,
)
from psa.cli import CommandParser, running
from psa.cli import run as run_command
from psa.config import RunConfig
from psa.costs import CostModel
from psa.errors import UsageError, command_hint, exit_status, stopped_line
from psa.model import build_network
from psa.modes import MODES
from psa.reproduction import PAPER_GRID, PAPER_GRID_NAME
from psa.store import ResultsStore
from psa.sweep import Shard, SweepError, SweepRequest, devices, runner, slurm
from psa.sweep.events import (
    BatchLost,
    BatchRestarted,
    BatchStarted,
    Event,
    Finished,
    LoopDone,
    NothingToRun,
    Planned,
    Started,
    Stopped,
)
from psa.sweep.plan import Batch, Plan, assign, estimate_seconds, read_plan, twin_reason
from psa.wording import count, noun, span

# Where a sweep writes unless told: a dir of the user's own (git ignores it), never the shipped
# results/.
DEFAULT_RESULTS_DIR = Path("results/sweep")


def device_list(text: str) -> tuple[str, ...]:
    try:
        names = devices.parse_devices(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return tuple(device_name(name) for name in names)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="sweep",
        description="Run configurations x modes x trials of PSA, batching the trials of each "
        "architecture. Killed and rerun with the same arguments, it resumes.",
    )
    parser.add_argument(
        "--configs",
        type=existing_path,
        default=PAPER_GRID,
        help=f"one L*W architecture per line (default: the paper's grid, {PAPER_GRID_NAME})",
    )
    parser.add_argument(
        "--arch",
        type=argparse_arch,
        action="append",
        default=None,
        help='run this architecture instead of --configs (repeatable), e.g. "[4*17]"',
    )
    parser.add_argument("--modes", type=mode_list, default=MODES, help="comma-separated modes")
    parser.add_argument(
        "--trials", type=trial_count, default=10, help=f"trials per mode (at most {MAX_TRIALS})"
    )
    RunConfig.add_flags(
        parser,
        helps={
            "seed": "base seed; drawn and recorded when omitted (a rerun reuses the results "
            "dir's seed)"
        },
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        help="where trial records, loop logs, tables and saved batches go",
    )
    add_shipped_flag(parser, "--results-dir")
    add_device_flag(parser)
    add_cuda_graph_flag(parser)
    parser.add_argument(
        "--data-dir",
        type=existing_path,
        default=None,
        help="MNIST folder (default: the shipped dataset/)",
    )
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=None,
        help="most trials trained together (default: from free memory)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, trials per batch and an estimated time; run nothing",
    )
    parser.add_argument(
        "--train-decay",
        action="store_true",
        help="train decay trials even where AdamW's decay factor 1 - lr*wd is 1.0 in float32 "
        "(the paper's lr and weight decay): they then compute exactly what their none twin does, "
        "so by default each is not trained and its record and loop log are copied from the twin's",
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard event files of the loops as they run, with each trial's "
        "HParams and, once recorded, its test accuracy, into RESULTS_DIR/tensorboard (the "
        "optional extra tensorboard)",
    )
    scale = parser.add_argument_group("scale-out")
    scale.add_argument(
        "--shard",
        type=argparse_shard,
        default=None,
        metavar="I/N",
        help=f"run only shard I of N of the batch plan (1 <= I <= N <= {MAX_SHARDS}); shards "
        "may share one --results-dir or use their own",
    )
    scale.add_argument(
        "--status",
        action="store_true",
        help="print the done, running and pending batches of --results-dir (every shard); "
        "run nothing",
    )
    scale.add_argument(
        "--devices",
        type=device_list,
        default=None,
        metavar="D1,D2,...",
        help="one worker per device of this machine (e.g. cuda:0,cuda:1 or cpu,cpu), worker i "
        "running shard i of N on --results-dir",
    )
    add_launcher_flags(parser)
    return parser


def add_launcher_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("launchers (submitit; the optional extra 'slurm')")
    group.add_argument(
        "--launcher",
        choices=slurm.LAUNCHERS,
        default=None,
        help="run --shards N shards of this sweep as a SLURM job array, or as processes here",
    )
    group.add_argument(
        "--shards",
        type=shard_count,
        default=None,
        metavar="N",
        help=f"number of shards (at most {MAX_SHARDS})",
    )
    group.add_argument("--partition", default=None, help="SLURM partition")
    group.add_argument("--account", default=None, help="SLURM account")
    group.add_argument("--qos", default=None, help="SLURM quality of service")
    group.add_argument(
        "--time-limit",
        type=positive_int,
        default=slurm.DEFAULT_TIME_LIMIT,
        metavar="MINUTES",
        help="wall-clock limit of each task; a task that reaches it is requeued and resumes",
    )
    group.add_argument("--gpus-per-task", type=positive_int, default=None, help="GPUs of each task")
    group.add_argument(
        "--cpus-per-task",
        type=positive_int,
        default=None,
        help="CPU cores SLURM gives each task (its torch threads are --threads)",
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


def request_of(args: argparse.Namespace) -> SweepRequest:
    """The request of parsed flags; reads --configs unless --arch is given."""
    archs = args.arch if args.arch else read_config_file(args.configs)
    return SweepRequest(
        archs=tuple(archs),
        modes=tuple(args.modes),
        trials=args.trials,
        config=RunConfig.from_args(args),
        results_dir=args.results_dir,
        device=args.device,
        data_dir=args.data_dir,
        max_batch=args.max_batch,
        shard=args.shard,
        dry_run=args.dry_run,
        tensorboard=args.tensorboard,
        matmul_precision=args.matmul_precision,
        cuda_graph=args.cuda_graph,
        train_decay=args.train_decay,
    )


def launch_options(args: argparse.Namespace) -> slurm.LaunchOptions:
    return slurm.LaunchOptions(
        launcher=args.launcher,
        shards=args.shards,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time_limit=args.time_limit,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        mem_per_task=args.mem_per_task,
        sbatch=tuple(args.sbatch),
        setup=tuple(args.setup),
        max_parallel=args.max_parallel,
        launcher_dir=args.launcher_dir,
    )


def main(argv: list[str] | None = None) -> int:
    """A sweep, its status, or its shards through a launcher or per device; the exit status."""
    args = build_parser().parse_args(argv)
    check_not_shipped(args)
    # Every shard a launcher starts runs with the one base seed settled here.
    if args.launcher is not None:
        interrupts.saving()  # its tasks save; a stop's line cannot say that nothing was
        return launch(launch_options(args), runner.settled(request_of(args)))
    if args.devices is not None:
        interrupts.saving()
        return run_devices(runner.settled(request_of(args)), args.devices, args.launcher_dir)
    if args.shards is not None:
        raise UsageError("--shards N needs --launcher local or slurm; or give --shard I/N")
    if args.status:
        print_status(Console(highlight=False, soft_wrap=True), ResultsStore(args.results_dir))
        return 0
    run(request_of(args))
    return 0


def run(request: SweepRequest) -> None:
    """Run one sweep in this process, printing its progress. A stop the sweep reported (its
    line printed) exits with its status; one before or after its loop (nothing to report but the
    stop) is the entry layer's to print."""
    printer = SweepPrinter()
    try:
        with printer:
            runner.run(request, printer)
    except KeyboardInterrupt as error:
        if not printer.stopped:
            raise
        sys.exit(exit_status(error))


def check_not_shipped(args: argparse.Namespace) -> None:
    """A run never adds to the shipped results set unless --add-to-shipped says so."""
    if not args.status:
        refuse_shipped(
            "--results-dir", args.results_dir, args.add_to_shipped, default=DEFAULT_RESULTS_DIR
        )


def preview_shard(request: SweepRequest, shard: Shard, device: str | None = None) -> None:
    """A launcher's --dry-run: the part of one shard (its batches and estimate); runs nothing."""
    run(replace(request.for_shard(shard, device), dry_run=True))


class SweepPrinter:
    """Prints a sweep's events: a progress bar on a terminal, a line per loop elsewhere (a log).
    A context manager (the bar ends with it); handed to shard processes as the class itself."""

    def __init__(self) -> None:
        self.console = Console(highlight=False, soft_wrap=True)
        self.progress: Progress | None = None
        self.task = None
        self.stopped = False  # whether it printed a Stopped event's line
        self.loops_saved = 0  # loops this run committed (LoopDone events)

    def __enter__(self) -> SweepPrinter:
        return self

    def __exit__(self, *exc) -> None:
        self._end_progress()

    def _end_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __call__(self, event: Event) -> None:
        console = self.console
        if isinstance(event, Planned):
            if event.plan is not None:
                print_shard_line(console, event.plan, event.shard)
            print_plan(console, list(event.batches), event.settings, event.finished, event.model)
        elif isinstance(event, NothingToRun):
            whose = f"of shard {event.shard} " if event.shard else ""
            console.print(f"Nothing to run: every trial {whose}is recorded in {event.results_dir}.")
        elif isinstance(event, Started):
            part = f" | shard {event.shard} of plan {event.plan_fingerprint}" if event.shard else ""
            copied = f" (+{event.twins} decay copied from none)" if event.twins else ""
            console.print(
                f"Sweep: {count(event.batches, 'batch')}, {count(event.trials, 'trial')}{copied} x "
                f"{count(event.meta_loops, 'meta-loop')} "
                f"({event.trial_loops} trial-loops left) | base seed {event.seed} | device "
                f"{event.device} ({count(event.threads, 'thread')}) | results in "
                f"{event.results_dir}{part}"
            )
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=not console.is_terminal,
            )
            self.progress.start()
            self.task = self.progress.add_task("trial-loops", total=event.trial_loops)
        elif isinstance(event, BatchStarted):
            if self.progress is not None:
                self.progress.update(self.task, description=event.label)
            if event.batch.saved_loops:
                saved = event.batch.saved_loops
                console.print(
                    f"{event.label} resuming at loop {saved + 1}/{event.meta_loops} "
                    f"({count(saved, 'loop')} saved)"
                )
        elif isinstance(event, LoopDone):
            self.loops_saved += 1
            if self.progress is not None:
                self.progress.advance(self.task, len(event.started.batch.trials))
            if not console.is_terminal:
                print(
                    f"{event.started.label} loop {event.loop}/{event.started.meta_loops} | best "
                    f"LKG {event.best_lkg_accuracy:.2f}% | {event.train_seconds:.2f}s",
                    flush=True,
                )
        elif isinstance(event, BatchRestarted):
            print(
                f"sweep: {event.log} lacks loops its batch saved; that batch restarts from its "
                "first loop",
                file=sys.stderr,
            )
        elif isinstance(event, BatchLost):
            print(f"sweep: {event.reason}; leaving that batch to it", file=sys.stderr)
        elif isinstance(event, Stopped):
            saved = (
                "finished trials are recorded and unfinished batches saved at their last "
                "completed loop"
                if self.loops_saved
                else "no loop was completed and nothing was saved"
            )
            detail = f"{saved}; {interrupts.resume_hint()}"
            print(stopped_line(running("sweep"), event.error, detail), file=sys.stderr)
            self.stopped = True
        elif isinstance(event, Finished):
            self._end_progress()
            elsewhere = (
                f"; {event.running_elsewhere} run in another worker"
                if event.running_elsewhere
                else ""
            )
            console.print(
                f"Done: {count(event.done, 'trial')} recorded in {event.results_dir}{elsewhere}"
            )


def launch(options: slurm.LaunchOptions, request: SweepRequest) -> int:
    """Submit the shards; print the job ids, their logs and the status command. A local launch
    waits for its tasks and fails if one failed. A dry run prints what would be submitted (the
    sbatch script) and each shard's part, and submits nothing."""
    slurm.check(options, request)
    results_dir = request.results_dir.absolute()
    if request.dry_run:
        slurm.import_submitit()
        if options.launcher == "slurm":
            print(
                f"Dry run: would submit this sbatch script ({options.shards} array tasks); "
                "nothing is submitted"
            )
            print(slurm.sbatch_script(options, options.folder(request)), end="")
        else:
            print(f"Dry run: would start {options.shards} local submitit jobs; nothing is started")
        for index in range(1, options.shards + 1):
            preview_shard(request, Shard(index, options.shards))
        return 0
    jobs = slurm.launch(options, request, SweepPrinter)
    if options.launcher == "slurm" and len(jobs) == 1:  # submitit submits one task as a job
        print(f"Submitted SLURM job {jobs[0].job_id}: 1 task, running sweep --shard 1/1")
    elif options.launcher == "slurm":
        array = jobs[0].job_id.split("_")[0]
        print(
            f"Submitted SLURM job array {array}: {len(jobs)} tasks, task i runs sweep --shard i/N"
        )
    else:
        print(f"Started {len(jobs)} local submitit jobs, job i runs sweep --shard i/N")
    for index, job in enumerate(jobs, start=1):
        print(f"  shard {index}/{len(jobs)}: job {job.job_id}, log {job.paths.stdout}")
    print(f"Watch: {command_hint('sweep')} --status --results-dir {results_dir}")
    if options.launcher == "slurm":
        return 0
    failed = slurm.wait(jobs, print_shard_end)
    print(done_line(len(jobs) - failed, len(jobs), "shard", results_dir))
    return 1 if failed else 0


def done_line(finished: int, total: int, what: str, results_dir: Path) -> str:
    """The last line of a sweep run as several shards here: how many finished, and where."""
    if finished < total:
        return (
            f"Done: {finished} of {count(total, what)} finished; {command_hint('sweep')} "
            f"--status --results-dir {results_dir} shows every batch"
        )
    return f"Done: {count(total, what)} finished in {results_dir}"


def print_shard_end(ended: slurm.ShardEnded) -> None:
    if ended.failure is None:
        print(f"  shard {ended.index}/{ended.count} finished")
    else:
        print(
            f"  shard {ended.index}/{ended.count} failed: {ended.failure} (log {ended.log})",
            file=sys.stderr,
        )


def run_devices(request: SweepRequest, names: tuple[str, ...], launcher_dir: Path | None) -> int:
    """One worker per device; with --dry-run, each worker's device and part of the plan."""
    planned = devices.workers(request, names, launcher_dir)
    count_of = len(planned)

    def where(worker: devices.Worker) -> str:
        threads = f", {count(worker.threads, 'thread')}" if worker.threads else ""
        return f"shard {worker.index}/{count_of} on {worker.device}{threads}"

    if request.dry_run:
        print(
            f"Dry run: would start {count_of} workers, worker i running shard i/{count_of}; "
            "nothing is started"
        )
        for worker in planned:
            print(f"  {where(worker)}")
            preview_shard(request, Shard(worker.index, count_of), worker.device)
        return 0

    def started(worker: devices.Worker) -> None:
        print(f"  {where(worker)}: pid {worker.pid}, log {worker.log}", flush=True)
        if worker.index == count_of:
            print(
                f"Watch: {command_hint('sweep')} --status --results-dir {request.results_dir}",
                flush=True,
            )

    ended = devices.run_workers(request, names, launcher_dir, SweepPrinter, started)
    results_dir = request.results_dir
    codes = [worker.exit_code for worker in ended]
    for worker in ended:
        place = f"shard {worker.index}/{count_of} on {worker.device}"
        if not worker.exit_code:
            print(f"  {place}: finished")
        elif worker.exit_code in (130, 143):
            print(
                f"  {place}: stopped (exit {worker.exit_code}); rerun the same command to resume",
                file=sys.stderr,
            )
        else:
            error = worker.error or f"exited with {worker.exit_code}"
            print(f"  {place}: {error} (log {worker.log})", file=sys.stderr)
    failed = sum(1 for code in codes if code)
    print(done_line(count_of - failed, count_of, "worker", results_dir))
    return 0 if not any(codes) else 130 if 130 in codes else 1


def print_shard_line(console: Console, batch_plan: Plan, shard: Shard | None) -> None:
    total = sum(batch_plan.costs)
    if shard is None:
        console.print(
            f"Batch plan {batch_plan.fingerprint()}: {count(len(batch_plan.batches), 'batch')}, "
            f"~{_duration(total)}"
        )
        return
    owners = assign(batch_plan.costs, shard.count)
    mine = sum(cost for cost, owner in zip(batch_plan.costs, owners) if owner == shard.index)
    console.print(
        f"Shard {shard} of batch plan {batch_plan.fingerprint()}: {owners.count(shard.index)} of "
        f"{count(len(batch_plan.batches), 'batch')}, ~{_duration(mine)} of ~{_duration(total)}"
    )


def print_status(console: Console, store: ResultsStore) -> None:
    """Done, running (claimed by a live worker) and pending batches of a results dir, across
    every shard and sweep writing to it."""
    settings = store.read_settings() if store.root.is_dir() else None
    submitted = submission_lines(store)
    if settings is None and submitted:
        console.print(f"{store.root}: submitted; no task has started its sweep yet")
        for line in submitted:
            console.print(line)
        return
    if settings is None:
        raise SweepError(
            f"{store.root} holds no sweep (no settings.json); give the --results-dir a sweep "
            "writes to"
        )
    model = settings.get("model", "resmlp")
    batch_plan = read_plan(store)
    if batch_plan is None:
        recorded = store.recorded_trials(model)
        console.print(
            f"{store.root}: {count(len(recorded), 'trial')} recorded; no batch plan (plan.json, "
            "written by the first sweep of a results dir since shards exist), so no batches to show"
        )
        for line in submitted:
            console.print(line)
        return
    trials = [trial for batch in batch_plan.batches for trial in batch.members]
    status = store.status(trials, model)
    states = ("done", "running", "saved", "pending")
    counts = dict.fromkeys(states, 0)
    sizes = dict.fromkeys(states, 0)
    by_arch: dict[str, dict[str, int]] = {}
    for batch in batch_plan.batches:
        members = set(batch.members)
        if members <= status.done:
            state = "done"
        elif members & status.running:
            state = "running"
        elif members & set(status.saved_loops):
            state = "saved"
        else:
            state = "pending"
        counts[state] += 1
        sizes[state] += len(batch.members)
        per = by_arch.setdefault(batch.arch.key, dict.fromkeys(states, 0))
        per[state] += 1
    console.print(
        f"{store.root}: batch plan {batch_plan.fingerprint()}, "
        f"{count(len(batch_plan.batches), 'batch')} of {count(len(trials), 'trial')}; "
        f"{count(len(status.done), 'trial')} recorded"
    )
    notes = {
        "running": " (claimed by a live worker)",
        "saved": " (stopped mid-way; the next sweep of their shard resumes them)",
    }
    for state in states:
        note = notes.get(state, "") if counts[state] else ""
        batches = f"{counts[state]:4} {noun(counts[state], 'batch')}"
        console.print(f"  {state:8} {batches}, {count(sizes[state], 'trial')}{note}")
    for key, per in by_arch.items():
        console.print(f"  [{key}] " + ", ".join(f"{s} {n}" for s, n in per.items() if n))
    for line in submitted:
        console.print(line)


def submission_lines(store: ResultsStore) -> list[str]:
    """What --status says of the latest submission to the results dir: one line, then SLURM's
    state of each task; nothing when none was recorded."""
    submitted = store.read_submission()
    if submitted is None:
        return []
    jobs = [str(job) for job in submitted["jobs"]]
    total = len(jobs)
    if submitted.get("launcher") != "slurm":
        return [f"  launched {total} local submitit jobs at {submitted.get('submitted')}"]
    array = jobs[0].split("_")[0] if jobs else "?"
    what = f"job array {array} of {total} tasks" if total > 1 else f"job {array} of 1 task"
    lines = [f"  SLURM {what}, submitted {submitted.get('submitted')}"]
    states = slurm.scheduler_states(jobs)
    if states is None:
        return [
            *lines,
            "  (scontrol does not know the array: it ended long ago, or this is "
            "not the cluster's login node)",
        ]
    for index, job in enumerate(jobs, start=1):
        state = states.get(job)
        if state is None:
            lines.append(f"  shard {index}/{total}: job {job} unknown to SLURM")
            continue
        words = state["state"]
        if state["state"] == "PENDING":
            words += f" ({state['reason']})"
        elif state["state"] == "RUNNING":
            words += f" for {state['runtime']}"
        if state["restarts"]:
            times = "time" if state["restarts"] == 1 else "times"
            words += f", requeued {state['restarts']} {times}"
        lines.append(f"  shard {index}/{total}: job {job} {words}")
    return lines


def print_plan(
    console: Console, batches: list[Batch], settings: RunConfig, finished: int, model: CostModel
) -> None:
    """The dry run's plan: every estimate in it (batch lines, total) by ``model``, the one the
    batch plan's costs were made by."""
    left = sum(len(b.trials) * (settings.meta_loops - b.saved_loops) for b in batches)
    console.print(
        f"Plan: {count(sum(len(b.trials) for b in batches), 'trial')} to run "
        f"({finished} already recorded), {count(settings.meta_loops, 'meta-loop')} each "
        f"({left} trial-loops left), model {settings.model}, base seed {settings.seed}, "
        f"{count(settings.threads, 'torch thread')} a process"
    )
    twins = sum(len(b.twins) for b in batches)
    if twins:
        console.print(
            f"  {count(twins, 'decay trial')} not trained: {twin_reason(settings.hyper)}; each "
            "one's record and loop log are its none twin's (--train-decay trains them)"
        )
    total_seconds = 0.0
    by_arch: dict[Arch, list[Batch]] = {}
    for batch in batches:
        by_arch.setdefault(batch.arch, []).append(batch)
    for key, group in by_arch.items():
        network = build_network(settings.model, key)
        seconds = [
            estimate_seconds(
                network, len(b.trials), settings, settings.meta_loops - b.saved_loops, model
            )
            for b in group
        ]
        total_seconds += sum(seconds)
        if len(group) > 6 and not any(b.saved_loops for b in group):
            sizes = sorted({len(b.trials) for b in group})
            k = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            indices = sorted({t.index for b in group for t in b.trials})
            copied = ", decay copied from none" if any(b.twins for b in group) else ""
            console.print(
                f"  {key.flag} {count(len(group), 'batch')} of K={k}"
                f" ({span('trial', indices)}{copied}) ~{_duration(sum(seconds))}"
            )
            continue
        for batch, estimate in zip(group, seconds):
            modes = sorted({t.mode for t in batch.trials})
            indices = sorted({t.index for t in batch.trials})
            resume = f", resumes after loop {batch.saved_loops}" if batch.saved_loops else ""
            copied = ", decay copied from none" if batch.twins else ""
            console.print(
                f"  {key.flag} K={len(batch.trials)} ({span('trial', indices)}"
                f", modes {','.join(modes)}{copied}{resume}) ~{_duration(estimate)}"
            )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spread = ""
    if cores and cores > 1 and len(batches) > 1:
        spread = (
            f"; ~{_duration(total_seconds / min(cores, len(batches)))} as "
            f"{min(cores, len(batches))} single-thread workers on this machine's {cores} cores "
            f"(--devices {','.join(['cpu'] * min(cores, len(batches)))})"
        )
    console.print(
        f"Estimated time: ~{_duration(total_seconds)} in one process, by {model.source} "
        f"(within about 30 %; a busy machine takes longer){spread}"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


if __name__ == "__main__":
    sys.exit(run_command("sweep", sys.argv[1:]))
