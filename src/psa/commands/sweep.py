"""``sweep``: the paper's grid (configurations x modes x trials x meta-loops) on one machine."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
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

from psa import interrupts, launcher
from psa.arch import Arch, ArchError, argparse_arch, read_config_file
from psa.arguments import add_device_flag, existing_path, mode_list, positive_int
from psa.cli import CommandParser, running
from psa.cli import run as run_command
from psa.config import RunConfig
from psa.data import DatasetError, load_mnist
from psa.device import DeviceError, resolve_device
from psa.errors import UsageError, exit_with
from psa.markdown import write_tables
from psa.memory import MemoryLimitError, batch_limit, check_fits, memory_budget
from psa.model import build_network
from psa.modes import MODES
from psa.provenance import capture
from psa.seeds import fresh_seed
from psa.shard import (
    Grid,
    Plan,
    PlanError,
    Shard,
    argparse_shard,
    assign,
    read_plan,
    store_plan,
)
from psa.store import ClaimLost, ResultsFormatError, ResultsStore, StoreError, Trial
from psa.store.provenance import recording
from psa.store.results import SHIPPED_MARKER
from psa.sweep import (
    Chunk,
    ChunkRunner,
    SweepError,
    check_results_dir,
    drop_finished_chunks,
    grid,
    plan_chunks,
    prepare_results_dir,
    saved_chunks,
    stored_seed,
)
from psa.wording import count, noun, span
from psa.workers import device_list, run_workers

# Rough CPU cost model of a trial-epoch for --dry-run, fitted to `bench` on a 2-core machine
# (results/bench.json; within about 30 %): arithmetic at a sustained rate, plus the memory
# traffic of the activations, which bounds small batched networks.
DRY_RUN_GFLOPS = 120.0
# Where a sweep writes unless told: a dir of the user's own (git ignores it), never the shipped
# results/.
DEFAULT_RESULTS_DIR = Path("results/sweep")
DRY_RUN_SECONDS_PER_ACTIVATION_UNIT = 8e-5  # per unit of width summed over the Linears
VALIDATION_SHARE = 1 + 2 * 10_000 / (6 * 50_000)  # a forward pass over 10,000 images


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="sweep",
        description="Run configurations x modes x trials of PSA, batching the trials of each "
        "architecture. Killed and rerun with the same arguments, it resumes.",
    )
    parser.add_argument(
        "--configs",
        type=existing_path,
        default=Path("reproduction/configurations.txt"),
        help="one L*W architecture per line",
    )
    parser.add_argument(
        "--arch",
        type=argparse_arch,
        action="append",
        default=None,
        help='run this architecture instead of --configs (repeatable), e.g. "[4*17]"',
    )
    parser.add_argument("--modes", type=mode_list, default=MODES, help="comma-separated modes")
    parser.add_argument("--trials", type=positive_int, default=10, help="trials per mode")
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
    parser.add_argument(
        "--add-to-shipped",
        action="store_true",
        help="let --results-dir be the results set shipped with psa (results/, marked by "
        "SHIPPED.md), adding this sweep's trials to it",
    )
    add_device_flag(parser)
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
        "--tensorboard",
        action="store_true",
        help="write TensorBoard event files of the loops as they run, into "
        "RESULTS_DIR/tensorboard (the optional extra tensorboard)",
    )
    scale = parser.add_argument_group("scale-out")
    scale.add_argument(
        "--shard",
        type=argparse_shard,
        default=None,
        metavar="I/N",
        help="run only shard I of N of the batch plan (1 <= I <= N); shards may share one "
        "--results-dir or use their own",
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
    launcher.add_flags(parser)
    return parser


@dataclass(frozen=True)
class SweepRequest:
    """What one sweep process runs: a grid of architectures x modes x trials with one run
    configuration (its seed None: the results dir's, or drawn), and where."""

    archs: tuple[Arch, ...]
    modes: tuple[str, ...]
    trials: int
    config: RunConfig
    results_dir: Path
    device: str = "auto"
    data_dir: Path | None = None
    max_batch: int | None = None
    shard: Shard | None = None
    dry_run: bool = False
    tensorboard: bool = False
    matmul_precision: str = "highest"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SweepRequest:
        """The request of parsed flags; reads --configs unless --arch is given."""
        archs = args.arch if args.arch else read_config_file(args.configs)
        return cls(
            tuple(archs),
            tuple(args.modes),
            args.trials,
            RunConfig.from_args(args),
            args.results_dir,
            args.device,
            args.data_dir,
            args.max_batch,
            args.shard,
            args.dry_run,
            getattr(args, "tensorboard", False),
            getattr(args, "matmul_precision", "highest"),
        )


ERRORS = (
    ArchError,
    SweepError,
    PlanError,
    StoreError,
    DatasetError,
    DeviceError,
    MemoryLimitError,
    ResultsFormatError,
    UsageError,
)


def main(argv: list[str] | None = None) -> None:
    execute(build_parser().parse_args(argv))


def run_request(request: SweepRequest) -> None:
    """Run one sweep; a refusal ends the process with one line ``sweep: ...``."""
    try:
        run(request)
    except ERRORS as error:
        exit_with("sweep", error)


def execute(args: argparse.Namespace) -> None:
    """Run parsed flags: a sweep, its status, or its shards through a launcher or per device."""
    code = 0
    try:
        check_not_shipped(args)
        if args.launcher is not None:
            code = launcher.launch(args, preview_shard)
        elif args.devices is not None:
            code = run_workers(args, preview_shard)
        elif args.shards is not None:
            raise UsageError("--shards N needs --launcher local or slurm; or give --shard I/N")
        elif args.status:
            print_status(Console(highlight=False, soft_wrap=True), ResultsStore(args.results_dir))
        else:
            run(SweepRequest.from_args(args))
    except ERRORS as error:
        exit_with("sweep", error)
    if code:
        sys.exit(code)


def check_not_shipped(args: argparse.Namespace) -> None:
    """A run never adds to the shipped results set unless --add-to-shipped says so."""
    if args.status or args.add_to_shipped or not ResultsStore(args.results_dir).is_shipped():
        return
    raise UsageError(
        f"{args.results_dir} is the results set shipped with psa ({SHIPPED_MARKER} there), "
        f"which a sweep does not add to; give a --results-dir of your own (the default is "
        f"{DEFAULT_RESULTS_DIR}), or --add-to-shipped to add to it"
    )


def preview_shard(args: argparse.Namespace) -> None:
    """A launcher's --dry-run: the part of one shard (its batches and estimate); runs nothing."""
    run(SweepRequest.from_args(argparse.Namespace(**{**vars(args), "dry_run": True})))


def plan(
    request: SweepRequest, settings: RunConfig, store: ResultsStore, device
) -> list[Chunk]:
    """The chunks still to run: saved ones first (as they were saved), then the rest, leaving
    out trials that are recorded or that a live worker holds."""
    done = store.recorded_trials(settings.model) if store.exists() else set()
    budget = memory_budget(device)
    chunks = []
    for arch, pending in grid(request.archs, request.modes, request.trials, done):
        running = {t for t in pending if store.is_claimed(t)}
        resumed = saved_chunks(store, arch, pending, running)
        taken = {t for chunk in resumed for t in chunk.trials} | running
        network = build_network(settings.model, arch)
        limit = request.max_batch or batch_limit(network, settings.hyper.batch_size, budget, device)
        rest = [t for t in pending if t not in taken]
        chunks += resumed + plan_chunks(arch, rest, limit)
    return chunks


def run(request: SweepRequest) -> None:
    if request.tensorboard:  # refused before anything is written
        from psa.store import tensorboard

        tensorboard.require()
    configs = request.archs
    arch_order = [arch.key for arch in configs]
    store = ResultsStore(request.results_dir)
    seed = request.config.seed if request.config.seed is not None else stored_seed(store)
    settings = replace(request.config, seed=fresh_seed() if seed is None else seed)
    device = resolve_device(request.device, request.matmul_precision)
    # Checked before anything else, so --dry-run refuses what the real run would refuse.
    check_results_dir(store, settings)
    wanted = Grid(tuple(arch_order), tuple(request.modes), request.trials)
    batch_plan = choose_plan(request, store, settings, device, wanted)

    def replan() -> list[Chunk]:
        if batch_plan is None:
            return plan(request, settings, store, device)
        return open_batches(batch_plan, request.shard, store, settings.model)

    chunks = replan()
    for arch, size in sorted({(chunk.arch, len(chunk.trials)) for chunk in chunks}):
        network = build_network(settings.model, arch)
        check_fits(network, settings.hyper.batch_size, size, device)
    finished = len(store.recorded_trials(settings.model)) if store.exists() else 0

    console = Console(highlight=False, soft_wrap=True)
    if request.dry_run:
        if batch_plan is not None:
            print_shard_line(console, batch_plan, request.shard)
        print_plan(console, chunks, settings, finished)
        return
    prepare_results_dir(store, settings)
    if batch_plan is not None:
        stored = store_plan(store.root, batch_plan)  # a concurrent shard's plan may have won
        if stored != batch_plan:
            batch_plan = stored
            chunks = replan()
    store.clear_stale_claims()
    done = store.recorded_trials(settings.model)
    for arch in configs:
        drop_finished_chunks(store, arch, done)
    if not chunks:
        finish(store, settings.model, arch_order)  # a sweep stopped before it merged
        whose = f"of shard {request.shard} " if request.shard else ""
        console.print(f"Nothing to run: every trial {whose}is recorded in {request.results_dir}.")
        return
    trials = sum(len(c.trials) for c in chunks)
    total = sum(len(c.trials) * (settings.meta_loops - c.saved_loops) for c in chunks)
    part = f" | shard {request.shard} of plan {batch_plan.fingerprint()}" if request.shard else ""
    console.print(
        f"Sweep: {count(len(chunks), 'batch')}, {count(trials, 'trial')} x "
        f"{count(settings.meta_loops, 'meta-loop')} "
        f"({total} trial-loops left) | base seed {settings.seed} | device {device} | "
        f"results in {request.results_dir}{part}"
    )
    data = load_mnist(request.data_dir, device)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    this_run = capture(device)  # the records of this run name its provenance
    with interrupts.sigterm_stops(), progress, recording(store.root, this_run):
        task = progress.add_task("trial-loops", total=total)
        try:
            while chunks:
                ran = 0
                for number, chunk in enumerate(chunks, start=1):
                    label = f"batch {number}/{len(chunks)}"
                    ran += run_chunk(
                        store, settings, data, chunk, label, progress, task, console,
                        this_run.id, request.tensorboard,
                    )
                # Trials skipped because another worker held them may be free by now.
                chunks = replan() if ran else []
        except KeyboardInterrupt as error:
            finish(store, settings.model, arch_order)
            detail = (
                "finished trials are recorded and unfinished batches saved at their last "
                f"completed loop; {interrupts.resume_hint()}"
            )
            print(interrupts.stopped_line(running("sweep"), error, detail), file=sys.stderr)
            sys.exit(interrupts.exit_status(error))
    finish(store, settings.model, arch_order)
    if request.tensorboard:  # trials recorded by runs without --tensorboard, or other workers
        tensorboard.rebuild(store.root, tensorboard.results_dir_runs(store))
    every = [
        Trial(arch, mode, index)
        for arch in configs
        for mode in request.modes
        for index in range(1, request.trials + 1)
    ]
    status = store.status(every, settings.model)
    elsewhere = f"; {len(status.running)} run in another worker" if status.running else ""
    done = count(len(status.done), "trial")
    console.print(f"Done: {done} recorded in {request.results_dir}{elsewhere}")


def choose_plan(request: SweepRequest, store: ResultsStore, settings: RunConfig, device, wanted):
    """The results dir's batch plan; a new one for a shard or a fresh dir; None (plan the pending
    trials as they come) for an unsharded sweep of a dir planned before, or for another grid."""
    stored = read_plan(store.root) if store.exists() else None
    if stored is not None and stored.grid != wanted:
        if request.shard is not None:
            raise SweepError(
                f"{store.root} was planned for another grid "
                f"({grid_difference(stored.grid, wanted)}); give every shard the same "
                "--configs/--arch, --modes and --trials, or use another --results-dir"
            )
        return None
    if stored is not None:
        return stored
    started = store.exists() and (
        store.recorded_trials(settings.model)
        or any(store.saved_chunks(arch) for arch in request.archs)
    )
    if request.shard is None and started:
        return None
    budget = memory_budget(device)
    return full_plan(request.archs, wanted, settings, request.max_batch, budget, device)


def full_plan(
    configs, wanted: Grid, settings: RunConfig, max_batch: int | None, budget: int, device
) -> Plan:
    """Every batch of the grid, finished or not, in the order one process runs them."""
    batches, costs = [], []
    for arch, trials in grid(configs, wanted.modes, wanted.trials, set()):
        network = build_network(settings.model, arch)
        limit = max_batch or batch_limit(network, settings.hyper.batch_size, budget, device)
        for chunk in plan_chunks(arch, trials, limit):
            batches.append(chunk)
            costs.append(estimate_seconds(network, len(chunk.trials), settings))
    return Plan(wanted, tuple(batches), tuple(costs))


def open_batches(batch_plan: Plan, shard: Shard | None, store: ResultsStore, model: str) -> list:
    """The batches of ``shard`` (every batch without one) that have trials to run and that no
    live worker holds; a batch recorded in part (by an older psa) runs the rest of its trials."""
    done = store.recorded_trials(model) if store.exists() else set()
    batches = batch_plan.shard_part(shard) if shard is not None else list(batch_plan.batches)
    chunks = []
    for batch in batches:
        left = [trial for trial in batch.trials if trial not in done]
        if not left or any(store.is_claimed(trial) for trial in left):
            continue
        chunk = batch if len(left) == len(batch.trials) else Chunk(batch.arch, left)
        state = store.chunk_state(chunk.key, chunk.arch)
        chunk.saved_loops = state.loops_completed if state is not None else 0
        chunks.append(chunk)
    return chunks


def grid_difference(stored: Grid, wanted: Grid) -> str:
    parts = []
    if stored.archs != wanted.archs:
        parts.append(f"{len(stored.archs)} architectures here vs {len(wanted.archs)} asked")
    if stored.modes != wanted.modes:
        parts.append(f"modes {','.join(stored.modes)} here vs {','.join(wanted.modes)} asked")
    if stored.trials != wanted.trials:
        parts.append(f"trials {stored.trials} here vs {wanted.trials} asked")
    return "; ".join(parts) or "other architectures"


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
    submitted = launcher.submission_lines(store.root)
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
    batch_plan = read_plan(store.root)
    if batch_plan is None:
        recorded = store.recorded_trials(model)
        console.print(
            f"{store.root}: {count(len(recorded), 'trial')} recorded; no batch plan (plan.json, "
            "written by the first sweep of a results dir since shards exist), so no batches to show"
        )
        for line in submitted:
            console.print(line)
        return
    trials = [trial for batch in batch_plan.batches for trial in batch.trials]
    status = store.status(trials, model)
    states = ("done", "running", "saved", "pending")
    counts = dict.fromkeys(states, 0)
    sizes = dict.fromkeys(states, 0)
    by_arch: dict[str, dict[str, int]] = {}
    for batch in batch_plan.batches:
        members = set(batch.trials)
        if members <= status.done:
            state = "done"
        elif members & status.running:
            state = "running"
        elif members & set(status.saved_loops):
            state = "saved"
        else:
            state = "pending"
        counts[state] += 1
        sizes[state] += len(batch.trials)
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


def run_chunk(
    store, settings, data, chunk, label, progress, task, console, provenance=None,
    tensorboard=False,
) -> int:
    """Run ``chunk`` if this worker can claim all its trials: 1 if it ran, 0 if skipped."""
    claim = store.claim(chunk.trials)
    if claim is None:
        return 0
    with claim:
        if set(chunk.trials) & store.recorded_trials(settings.model):
            return 0  # recorded by another worker between planning and claiming
        label = f"{chunk.arch.flag} {label} (K={len(chunk.trials)})"
        progress.update(task, description=label)
        if chunk.saved_loops:
            console.print(
                f"{label} resuming at loop {chunk.saved_loops + 1}/{settings.meta_loops} "
                f"({count(chunk.saved_loops, 'loop')} saved)"
            )

        def on_loop(chunk, report, engine):
            progress.advance(task, len(chunk.trials))
            if not console.is_terminal:
                best = max(report.lkg_accuracy)
                print(
                    f"{label} loop {report.loop}/{settings.meta_loops} | best LKG "
                    f"{best:.2f}% | {report.train_seconds:.2f}s",
                    flush=True,
                )

        try:
            runner = ChunkRunner(store, settings, data, on_loop, provenance, tensorboard)
            runner.run(chunk, claim)
        except ClaimLost as error:
            print(f"sweep: {error}; leaving that batch to it", file=sys.stderr)
            return 0
    return 1


def finish(store: ResultsStore, model: str, arch_order: list[str]) -> None:
    """Merge the records into trials.jsonl and render the upstream tables from them."""
    if store.exists():
        store.merge_records()
        write_tables(store, model, arch_order)


def print_plan(console: Console, chunks: list[Chunk], settings: RunConfig, finished: int) -> None:
    left = sum(len(c.trials) * (settings.meta_loops - c.saved_loops) for c in chunks)
    console.print(
        f"Plan: {count(sum(len(c.trials) for c in chunks), 'trial')} to run "
        f"({finished} already recorded), {count(settings.meta_loops, 'meta-loop')} each "
        f"({left} trial-loops left), model {settings.model}, base seed {settings.seed}"
    )
    total_seconds = 0.0
    by_arch: dict[Arch, list] = {}
    for chunk in chunks:
        by_arch.setdefault(chunk.arch, []).append(chunk)
    for key, batches in by_arch.items():
        network = build_network(settings.model, key)
        seconds = [
            estimate_seconds(network, len(c.trials), settings, settings.meta_loops - c.saved_loops)
            for c in batches
        ]
        total_seconds += sum(seconds)
        if len(batches) > 6 and not any(c.saved_loops for c in batches):
            sizes = sorted({len(c.trials) for c in batches})
            k = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            indices = sorted({t.index for c in batches for t in c.trials})
            console.print(
                f"  {key.flag} {count(len(batches), 'batch')} of K={k}"
                f" ({span('trial', indices)}) ~{_duration(sum(seconds))}"
            )
            continue
        for chunk, estimate in zip(batches, seconds):
            modes = sorted({t.mode for t in chunk.trials})
            indices = sorted({t.index for t in chunk.trials})
            resume = f", resumes after loop {chunk.saved_loops}" if chunk.saved_loops else ""
            console.print(
                f"  {key.flag} K={len(chunk.trials)} ({span('trial', indices)}"
                f", modes {','.join(modes)}{resume}) ~{_duration(estimate)}"
            )
    console.print(
        f"Estimated time: ~{_duration(total_seconds)} on an idle 2-core CPU (a rough model "
        "fitted to `bench` there, within about 30 %; a busy machine takes longer, a GPU far "
        "less; `bench` measures this one)"
    )


def estimate_seconds(network, trials: int, settings: RunConfig, loops: int | None = None) -> float:
    """Seconds for ``trials`` trials of ``network`` over ``loops`` meta-loops (default: all of
    them; the cost model above)."""
    flops = 6.0 * network.parameter_count() * 50_000
    units = sum(spec.out_features for spec in network.linears)
    trial_epoch = flops / (DRY_RUN_GFLOPS * 1e9) + units * DRY_RUN_SECONDS_PER_ACTIVATION_UNIT
    loops = settings.meta_loops if loops is None else loops
    return trial_epoch * VALIDATION_SHARE * trials * loops


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


if __name__ == "__main__":
    sys.exit(run_command("sweep", sys.argv[1:]))
