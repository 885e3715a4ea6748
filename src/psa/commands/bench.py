"""``bench``: seconds per trial-epoch of the engine, one trial at a time and batched, fp32 and
bf16 side by side, against an upstream-style nn.Module + DataLoader loop and this machine's
measured matmul peak. A benchmark, not a test: it prints figures and writes them as JSON."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from psa.arch import ArchError, parse_key
from psa.arguments import (
    MAX_TRIALS,
    MAX_TRIALS_TOGETHER,
    add_device_flag,
    existing_path,
    positive_int,
)
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.commands import bench_engines
from psa.commands.bench_engines import COMPARED_ARCHS
from psa.commands.console import print_table
from psa.config import HYPERPARAMETER_NAMES, PRECISIONS, Hyperparameters, RunConfig
from psa.data import DatasetError, MnistSplits, load_mnist
from psa.device import DeviceError, resolve_device, set_threads
from psa.engine import Engine, TrialSpec
from psa.errors import UsageExit
from psa.model import Network, build_network
from psa.modes import MODES
from psa.reference import reference
from psa.seeds import run_seeds, trial_run_seed
from psa.store.schema import version_stamp

TRAIN_ROWS = 50_000
DEFAULT_ARCHS = ("[1*1024]", "[2*256]", "[4*17]", "[18*18]")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="bench",
        description="Measure seconds per trial-epoch of PSA training on this machine.",
    )
    parser.add_argument(
        "--archs",
        default=None,
        help="comma-separated L*W architectures (default: "
        f"{','.join(a.strip('[]') for a in DEFAULT_ARCHS)}; with --compare-engines "
        f"{','.join(a.strip('[]') for a in COMPARED_ARCHS)})",
    )
    parser.add_argument(
        "--compare-engines",
        action="store_true",
        help="time the engine before flat trial state against the current one, side by side "
        "at the sweep's own K: seconds per loop (train, validate, commit) and ops per step",
    )
    parser.add_argument(
        "--trials",
        default="1,6,60",
        help="batch sizes K to time (K trials of the six modes, in lockstep), each at most "
        f"{MAX_TRIALS_TOGETHER}",
    )
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="comma-separated precisions to measure"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="training steps timed per measurement; an epoch is extrapolated "
        "from them (196 steps at batch 256); default 30, with --compare-engines 4",
    )
    # The hyperparameters of the timed trials; --precisions varies the precision.
    RunConfig.add_flags(parser, [name for name in HYPERPARAMETER_NAMES if name != "precision"])
    RunConfig.add_flags(parser, ["threads"])  # as a run of train or sweep would take them
    parser.add_argument(
        "--no-upstream",
        action="store_true",
        help="skip the upstream-style nn.Module + DataLoader reference",
    )
    add_device_flag(parser)
    parser.add_argument(
        "--data-dir",
        type=existing_path,
        default=None,
        help="MNIST folder (default: the shipped dataset/)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("results/bench.json"), help="JSON file of the figures"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        default = COMPARED_ARCHS if args.compare_engines else DEFAULT_ARCHS
        names = args.archs.split(",") if args.archs is not None else default
        archs = [parse_key(a.strip("[] ")) for a in names if a.strip()]
        ks = [int(k) for k in args.trials.split(",")]
        precisions = [p.strip() for p in args.precisions.split(",")]
        if any(k < 1 for k in ks) or any(p not in PRECISIONS for p in precisions):
            raise ValueError
    except ArchError as error:
        raise UsageExit(f"bench: --archs: {error}") from None
    except ValueError:
        raise UsageExit(
            "bench: --trials takes positive whole numbers and --precisions "
            f"{','.join(PRECISIONS)}, e.g. --trials 1,6,60 --precisions fp32,bf16"
        ) from None
    if max(ks) > MAX_TRIALS_TOGETHER:
        raise UsageExit(
            f"bench: --trials: {max(ks)} is more than {MAX_TRIALS_TOGETHER}, the most trials a "
            f"sweep trains together ({len(MODES)} modes x {MAX_TRIALS} trials); time fewer"
        )
    if not archs:
        raise UsageExit(
            "bench: --archs lists no architecture; give L*W items, e.g. --archs 1*1024,4*17"
        )
    set_threads(args.threads)
    try:
        device = resolve_device(args.device, args.matmul_precision)
        data = load_mnist(args.data_dir, device)
    except (DatasetError, DeviceError) as error:
        sys.exit(f"bench: {error}")
    if args.compare_engines:
        args.steps = args.steps or 4
        compare(args, archs, device, data)
    else:
        args.steps = args.steps or 30
        run(args, archs, ks, precisions, device, data)


def compare(args, archs, device, data: MnistSplits) -> dict:
    console = Console(highlight=False, soft_wrap=True)
    hyper = RunConfig.from_args(args).hyper
    rows = []
    for shape in archs:
        network = build_network("resmlp", shape)
        k = bench_engines.sweep_k(network, hyper.batch_size, device)
        for name, module in bench_engines.ENGINES.items():
            figures = bench_engines.measure(module, network, k, hyper, data, args.steps)
            rows.append({"arch": shape.key, "trials": k, "engine": name, **figures})
            console.print(
                f"[{shape.key}] {name} K={k}: loop {figures['loop']:.2f} s (train "
                f"{figures['train']:.2f}, validate {figures['validate']:.2f}, commit "
                f"{figures['commit']:.3f}), {figures['ops_per_step']:.0f} ops/step"
            )
    report = {
        "steps_timed": args.steps,
        "batch_size": hyper.batch_size,
        "rows": rows,
        "threads": torch.get_num_threads(),
        **version_stamp(device),
    }
    print_table(console, bench_engines.comparison_table(rows))
    write_text_atomically(args.output, json.dumps(report, indent=2) + "\n")
    console.print(f"Wrote {args.output}")
    return report


def run(args, archs, ks, precisions, device, data: MnistSplits) -> dict:
    console = Console(highlight=False, soft_wrap=True)
    peaks = {p: matmul_peak(device, p) for p in precisions}
    console.print(
        "Matmul peak (2048x2048): "
        + ", ".join(f"{p} {gflops_text(gflops)} GFLOP/s" for p, gflops in peaks.items())
    )
    rows = []
    steps_per_epoch = math.ceil(TRAIN_ROWS / args.batch_size)
    subset = _subset(data, args.steps * args.batch_size)
    for shape in archs:
        network = build_network("resmlp", shape)
        floor = (
            6
            * network.parameter_count()
            * TRAIN_ROWS
            / (peaks.get("fp32", peaks[precisions[0]]) * 1e9)
        )
        if not args.no_upstream:
            seconds = upstream_epoch_seconds(network, subset, args.batch_size, steps_per_epoch)
            rows.append(_row(network, "upstream-style", 1, "fp32", seconds, floor))
            console.print(_line(rows[-1]))
        for precision in precisions:
            for k in ks:
                hyper = replace(RunConfig.from_args(args).hyper, precision=precision)
                seconds = engine_epoch_seconds(network, k, hyper, subset, steps_per_epoch)
                rows.append(_row(network, "engine", k, precision, seconds, floor))
                console.print(_line(rows[-1]))
    report = {
        "matmul_peak_gflops": peaks,
        "steps_timed": args.steps,
        "batch_size": args.batch_size,
        "rows": rows,
        "threads": torch.get_num_threads(),
        **version_stamp(device),
    }
    print_table(console, summary_table(rows))
    write_text_atomically(args.output, json.dumps(report, indent=2) + "\n")
    console.print(f"Wrote {args.output}")
    return report


def engine_epoch_seconds(
    network: Network,
    k: int,
    hyper: Hyperparameters,
    data: MnistSplits,
    steps_per_epoch: int,
) -> float:
    """Seconds of one training epoch of K batched trials, extrapolated from a timed subset."""
    trials = []
    for index in range(1, k + 1):  # the six modes of trial 1, then of trial 2, ...
        t, mode = divmod(index - 1, len(MODES))
        seed = trial_run_seed(0, t + 1)
        trials.append(TrialSpec(MODES[mode], run_seeds(seed, MODES[mode])))
    trials.sort(key=lambda spec: spec.seeds.data)  # modes sharing a data order stay together
    engine = Engine(network, trials, hyper, data)
    engine.run_loop(ablate=False)  # warm-up: allocator, kernels, lazy imports
    report = engine.run_loop(ablate=True)
    steps = math.ceil(data.train_x.shape[0] / hyper.batch_size)
    return report.train_seconds * steps_per_epoch / steps


def upstream_epoch_seconds(
    network: Network, data: MnistSplits, batch_size: int, steps_per_epoch: int
) -> float:
    """The same epoch the way upstream ran it: an nn.Module, a shuffling DataLoader over a
    TensorDataset, AdamW; one trial."""
    model = reference_module(network).to(data.train_x.device)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.train_x, data.train_y),
        batch_size=batch_size,
        shuffle=True,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def epoch() -> float:
        start = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return time.perf_counter() - start

    epoch()
    return epoch() * steps_per_epoch / len(loader)


def reference_module(network: Network) -> nn.Module:
    """Upstream's ResMLP as nn.Modules (spec 2.2), dropout idle as outside dropout mode."""
    return reference(
        "resmlp",
        network.arch.stacks,
        dropout=lambda kind: nn.Dropout(0.1 if kind == "block" else 0.0),
    )


def matmul_peak(device: torch.device, precision: str, size: int = 2048) -> float:
    """Best GFLOP/s of a size x size matmul over a few repeats."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * size**3 / best / 1e9


def _subset(data: MnistSplits, rows: int) -> MnistSplits:
    rows = min(rows, data.train_x.shape[0])
    return MnistSplits(
        data.train_x[:rows],
        data.train_y[:rows],
        data.val_x[:1000],
        data.val_y[:1000],
        data.test_x[:1000],
        data.test_y[:1000],
    )


def _row(
    network: Network, engine: str, k: int, precision: str, epoch_seconds: float, floor: float
) -> dict:
    per_trial = epoch_seconds / k
    flops = 6 * network.parameter_count() * TRAIN_ROWS * k
    return {
        "arch": network.arch.key,
        "parameters": network.parameter_count(),
        "engine": engine,
        "trials": k,
        "precision": precision,
        "epoch_seconds": round(epoch_seconds, 4),
        "seconds_per_trial_epoch": round(per_trial, 4),
        "gflops": float(f"{flops / epoch_seconds / 1e9:.4g}"),  # 4 significant figures
        "fp32_floor_seconds_per_trial_epoch": round(floor, 4),
    }


def _line(row: dict) -> str:
    return (
        f"[{row['arch']}] {row['engine']} K={row['trials']} {row['precision']}: "
        f"{row['seconds_per_trial_epoch']:.4f} s per trial-epoch, {gflops_text(row['gflops'])} "
        "GFLOP/s"
    )


def gflops_text(gflops: float) -> str:
    """GFLOP/s to 3 significant figures, whole from 100 up: 0.0484, 3.07, 42.1, 1234 (a small
    network's rate is a fraction of one)."""
    return f"{gflops:.0f}" if gflops >= 100 else f"{gflops:.3g}"


def summary_table(rows: list[dict]) -> Table:
    table = Table(title="Seconds per trial-epoch (50,000 images)")
    for column in (
        "arch",
        "engine",
        "K",
        "precision",
        "s/trial-epoch",
        "GFLOP/s",
        "fp32 floor",
        "vs upstream-style",
    ):
        table.add_column(
            column, justify="left" if column in ("arch", "engine", "precision") else "right"
        )
    upstream = {
        r["arch"]: r["seconds_per_trial_epoch"] for r in rows if r["engine"] == "upstream-style"
    }
    for r in rows:
        base = upstream.get(r["arch"])
        ratio = f"{base / r['seconds_per_trial_epoch']:.1f}x" if base else "-"
        table.add_row(
            r["arch"],
            r["engine"],
            str(r["trials"]),
            r["precision"],
            f"{r['seconds_per_trial_epoch']:.4f}",
            gflops_text(r["gflops"]),
            f"{r['fp32_floor_seconds_per_trial_epoch']:.4f}",
            ratio,
        )
    return table


if __name__ == "__main__":
    main()
