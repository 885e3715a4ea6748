"""``sweep``: the paper's grid (configurations x modes x trials x meta-loops) on one machine."""

from __future__ import annotations

import argparse
import sys
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
from psa.arch import ArchError, argparse_arch, format_arch, read_config_file
from psa.arguments import add_method_flags, mode_list, positive_int, probability
from psa.cli import CommandParser
from psa.data import DatasetError, load_mnist
from psa.device import CHOICES as DEVICE_CHOICES
from psa.device import DeviceError, resolve_device
from psa.engine import PRECISIONS
from psa.markdown import write_tables
from psa.model import MODELS, build_architecture
from psa.modes import MODES
from psa.seeds import fresh_seed
from psa.store import ClaimLost, ResultsFormatError, ResultsStore, StoreError, Trial
from psa.sweep import (
    Chunk,
    ChunkRunner,
    Settings,
    SweepError,
    batch_limit,
    check_results_dir,
    drop_finished_chunks,
    grid,
    memory_budget,
    plan_chunks,
    prepare_results_dir,
    saved_chunks,
    stored_seed,
)

# Rough CPU cost model of a trial-epoch for --dry-run, fitted to `bench` on a 2-core machine
# (results/bench.json; within about 30 %): arithmetic at a sustained rate, plus the memory
# traffic of the activations, which bounds small batched networks.
DRY_RUN_GFLOPS = 120.0
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
        type=Path,
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
    parser.add_argument(
        "--meta-loops", type=positive_int, default=100, help="meta-loops per trial"
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="resmlp",
        help="residual MLP, or the first paper's plain MLP",
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    parser.add_argument(
        "--batch-size", type=positive_int, default=256, help="training batch size"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=1e-4, help="AdamW weight decay of decay-mode trials"
    )
    parser.add_argument(
        "--dropout", type=probability, default=0.1, help="dropout rate of dropout-mode trials"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="base seed; drawn and recorded when omitted (a rerun reuses the results dir's seed)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16 autocasts the matmuls; weights, optimizer and LKG stay fp32",
    )
    add_method_flags(parser)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path("results"),
        help="where trial records, loop logs, tables and saved batches go",
    )
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="auto picks CUDA, then MPS, then CPU",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="MNIST folder (default: the shipped dataset/)"
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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (
        ArchError,
        SweepError,
        StoreError,
        DatasetError,
        DeviceError,
        ResultsFormatError,
    ) as error:
        sys.exit(f"sweep: {error}")


def plan(args, settings: Settings, store: ResultsStore, configs, device) -> list[Chunk]:
    """The chunks still to run: saved ones first (as they were saved), then the rest, leaving
    out trials that are recorded or that a live worker holds."""
    done = store.recorded_trials(settings.model) if store.exists() else set()
    budget = memory_budget(device)
    chunks = []
    for stacks, pending in grid(configs, args.modes, args.trials, done):
        running = {t for t in pending if store.is_claimed(t)}
        resumed = saved_chunks(store, stacks, pending, running)
        taken = {t for chunk in resumed for t in chunk.trials} | running
        arch = build_architecture(args.model, stacks)
        limit = args.max_batch or batch_limit(arch, args.batch_size, budget, device)
        rest = [t for t in pending if t not in taken]
        chunks += resumed + plan_chunks(stacks, rest, limit)
    return chunks


def run(args: argparse.Namespace) -> None:
    configs = args.arch if args.arch else read_config_file(args.configs)
    arch_order = [format_arch(stacks) for stacks in configs]
    store = ResultsStore(args.results_dir)
    seed = args.seed if args.seed is not None else stored_seed(store)
    settings = Settings(
        args.model,
        args.lr,
        args.batch_size,
        args.weight_decay,
        args.dropout,
        args.meta_loops,
        fresh_seed() if seed is None else seed,
        args.precision,
        args.hidden_targets,
        args.full_sampling,
    )
    device = resolve_device(args.device)
    # Checked before anything else, so --dry-run refuses what the real run would refuse.
    check_results_dir(store, settings)
    chunks = plan(args, settings, store, configs, device)
    finished = len(store.recorded_trials(settings.model)) if store.exists() else 0

    console = Console(highlight=False, soft_wrap=True)
    if args.dry_run:
        print_plan(console, chunks, settings, finished)
        return
    prepare_results_dir(store, settings)
    done = store.recorded_trials(settings.model)
    for stacks in configs:
        drop_finished_chunks(store, stacks, done)
    if not chunks:
        console.print(f"Nothing to run: every trial is recorded in {args.results_dir}.")
        return
    trials = sum(len(c.trials) for c in chunks)
    total = sum(len(c.trials) * (settings.meta_loops - c.saved_loops) for c in chunks)
    console.print(
        f"Sweep: {len(chunks)} batches, {trials} trials x {settings.meta_loops} meta-loops | "
        f"base seed {settings.seed} | device {device.type} | results in {args.results_dir}"
    )
    data = load_mnist(args.data_dir, device)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with interrupts.sigterm_stops(), progress:
        task = progress.add_task("trial-loops", total=total)
        try:
            while chunks:
                ran = 0
                for number, chunk in enumerate(chunks, start=1):
                    label = f"batch {number}/{len(chunks)}"
                    ran += run_chunk(store, settings, data, chunk, label, progress, task, console)
                # Trials skipped because another worker held them may be free by now.
                chunks = plan(args, settings, store, configs, device) if ran else []
        except KeyboardInterrupt as error:
            finish(store, settings.model, arch_order)
            console.print(
                "Interrupted: finished trials are recorded and unfinished batches "
                "saved at their last completed loop; rerun the same command to resume."
            )
            sys.exit(interrupts.exit_status(error))
    finish(store, settings.model, arch_order)
    every = [
        Trial(key, mode, index)
        for key in arch_order
        for mode in args.modes
        for index in range(1, args.trials + 1)
    ]
    status = store.status(every, settings.model)
    elsewhere = f"; {len(status.running)} run in another worker" if status.running else ""
    console.print(f"Done: {len(status.done)} trials recorded in {args.results_dir}{elsewhere}")


def run_chunk(store, settings, data, chunk, label, progress, task, console) -> int:
    """Run ``chunk`` if this worker can claim all its trials: 1 if it ran, 0 if skipped."""
    claim = store.claim(chunk.trials)
    if claim is None:
        return 0
    with claim:
        if set(chunk.trials) & store.recorded_trials(settings.model):
            return 0  # recorded by another worker between planning and claiming
        label = f"[{format_arch(chunk.stacks)}] {label} (K={len(chunk.trials)})"
        progress.update(task, description=label)

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
            ChunkRunner(store, settings, data, on_loop).run(chunk, claim)
        except ClaimLost as error:
            print(f"sweep: {error}; leaving that batch to it", file=sys.stderr)
            return 0
    return 1


def finish(store: ResultsStore, model: str, arch_order: list[str]) -> None:
    """Merge the records into trials.jsonl and render the upstream tables from them."""
    if store.exists():
        store.merge_records()
        write_tables(store, model, arch_order)


def print_plan(console: Console, chunks: list[Chunk], settings: Settings, finished: int) -> None:
    console.print(
        f"Plan: {sum(len(c.trials) for c in chunks)} trials to run "
        f"({finished} already recorded), {settings.meta_loops} meta-loops each, "
        f"model {settings.model}, base seed {settings.seed}"
    )
    total_seconds = 0.0
    by_arch: dict[str, list] = {}
    for chunk in chunks:
        by_arch.setdefault(format_arch(chunk.stacks), []).append(chunk)
    for key, batches in by_arch.items():
        arch = build_architecture(settings.model, batches[0].stacks)
        seconds = [
            estimate_seconds(arch, len(c.trials), settings, settings.meta_loops - c.saved_loops)
            for c in batches
        ]
        total_seconds += sum(seconds)
        if len(batches) > 6 and not any(c.saved_loops for c in batches):
            sizes = sorted({len(c.trials) for c in batches})
            k = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
            indices = sorted({t.index for c in batches for t in c.trials})
            console.print(
                f"  [{key}] {len(batches)} batches of K={k}"
                f" (trials {indices[0]}-{indices[-1]}) ~{_duration(sum(seconds))}"
            )
            continue
        for chunk, estimate in zip(batches, seconds):
            modes = sorted({t.mode for t in chunk.trials})
            indices = sorted({t.index for t in chunk.trials})
            resume = f", resumes after loop {chunk.saved_loops}" if chunk.saved_loops else ""
            console.print(
                f"  [{key}] K={len(chunk.trials)} (trials {indices[0]}-{indices[-1]}"
                f", modes {','.join(modes)}{resume}) ~{_duration(estimate)}"
            )
    console.print(
        f"Estimated time: ~{_duration(total_seconds)} (rough CPU model; "
        "`bench` measures this machine)"
    )


def estimate_seconds(arch, trials: int, settings: Settings, loops: int | None = None) -> float:
    """Seconds for ``trials`` trials of ``arch`` over ``loops`` meta-loops (default: all of
    them; the cost model above)."""
    flops = 6.0 * arch.parameter_count() * 50_000
    units = sum(spec.out_features for spec in arch.linears)
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
    main()
