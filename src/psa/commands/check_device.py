"""``check-device``: does this device compute what a float64 CPU reference computes, and how long
would the paper grid take on it? The command to run before a long grid on new hardware.

Exit status 0 when every comparison is within its tolerance, 1 when one is not (the table or the
JSON says which), 2 for a usage error."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from psa.arch import ArchError, parse_key
from psa.arguments import MAX_TIMED_STEPS, add_device_flag, bounded_int
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.commands.console import print_table
from psa.config import RunConfig
from psa.costs import DEVICE_COSTS_DIR, device_costs_path
from psa.device import DeviceError, resolve_device, set_threads
from psa.errors import UsageExit
from psa.selfcheck import TIMED_ARCHS, TIMED_STEPS, SelfCheck, run_selfcheck


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="check-device",
        description="Compare this device's logits, gradients and whole meta-loops with a float64 "
        "CPU reference within stated tolerances, report its software and numerical settings, "
        "time a few grid architectures and project the paper grid's time here. Exit status 1 "
        "when a comparison fails.",
    )
    add_device_flag(parser)
    # Timed with the threads a sweep takes, so the figures plan what a sweep will do.
    RunConfig.add_flags(parser, ["threads"])
    parser.add_argument(
        "--archs",
        default=",".join(a.strip("[]") for a in TIMED_ARCHS),
        help="comma-separated L*W grid architectures to time; empty to time none",
    )
    parser.add_argument(
        "--steps",
        type=bounded_int(
            MAX_TIMED_STEPS,
            "steps check-device times: an epoch's at batch 256 (their images are made in memory "
            "at once, twice over)",
        ),
        default=TIMED_STEPS,
        help="training steps timed per architecture; a loop is extrapolated from them (with CUDA "
        "graphs a loop of twice as many is timed too, for what a loop pays once); at most "
        f"{MAX_TIMED_STEPS}, an epoch's",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--no-save",
        action="store_true",
        help=f"do not store the timings in {DEVICE_COSTS_DIR}/, where sweep plans this "
        "device's batches by them",
    )
    parser.add_argument(
        "--store-when-busy",
        action="store_true",
        help="store the timings even when the machine looked busy while timing (repeated "
        "timings apart, or the process off the CPU); sweeps then plan by them",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        archs = tuple(parse_key(a).flag for a in args.archs.split(",") if a.strip())
    except ArchError as error:
        raise UsageExit(f"check-device: --archs: {error}") from None
    try:
        device = resolve_device(args.device, args.matmul_precision)
    except DeviceError as error:
        sys.exit(f"check-device: {error}")
    set_threads(args.threads)
    result = run_selfcheck(device, archs, args.steps)
    report = result.as_json()
    text = json.dumps(report, indent=2) + "\n"
    if args.output is not None:
        write_text_atomically(args.output, text)
    busy = [] if args.store_when_busy else result.load_signs()
    if result.timings and result.passed and not args.no_save and not busy:
        write_text_atomically(device_costs_path(report["environment"]["device_model"]), text)
    if busy:
        print(
            f"check-device: the machine looked busy while timing ({'; '.join(busy)}), so these "
            f"timings were not stored and sweep plans by the figures it had; rerun check-device "
            "on an idle machine to store this device's",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(result)
    if not result.passed:
        failed = [c for c in result.comparisons if not c.passed]
        sys.exit(
            f"check-device: {len(failed)} of {len(result.comparisons)} comparisons with the "
            f"float64 reference failed on {device} (first: {failed[0].check}, "
            f"{failed[0].network}); do not trust this device's results until it passes"
        )
    return 0


def print_report(result: SelfCheck) -> None:
    console = Console(highlight=False, soft_wrap=True)
    settings = Table(title="Device and numerical settings", show_header=False)
    for key, value in result.environment.items():
        settings.add_row(key, "-" if value is None else str(value))
    print_table(console, settings)
    checks = Table(title="Against the float64 CPU reference")
    for column in ("check", "network", "error", "tolerance", "unit", "result"):
        checks.add_column(column, justify="right" if column in ("error", "tolerance") else "left")
    for c in result.comparisons:
        checks.add_row(
            c.check,
            c.network,
            f"{c.error:.2e}",
            f"{c.tolerance:g}",
            c.unit,
            "PASS" if c.passed else "FAIL",
        )
    print_table(console, checks)
    if result.timings:
        speed = Table(title="Training speed at the sweep's K (a loop: 50,000 + 10,000 images)")
        for column in ("arch", "K", "steps timed", "s/step", "s/loop", "trial-epochs/s"):
            speed.add_column(column, justify="left" if column == "arch" else "right")
        for t in result.timings:
            speed.add_row(
                t.arch,
                str(t.trials),
                str(t.steps_timed),
                f"{t.seconds_per_step:.4f}",
                f"{t.seconds_per_loop:.1f}",
                f"{t.trial_epochs_per_second:.2f}",
            )
        print_table(console, speed)
        grid = result.as_json()["grid"]
        console.print(
            f"Paper grid ({grid['architectures']} architectures x {grid['trials_per_architecture']}"
            f" trials x {grid['meta_loops']} loops) projected on this device: "
            f"~{result.grid_hours:.1f} h (the sweep's cost model, its dispatch and arithmetic "
            f"costs scaled {result.model.dispatch_scale:.2f}x and "
            f"{result.model.arithmetic_scale:.2f}x to fit the timed architectures; a busy "
            "machine takes longer)"
        )
    console.print("PASS" if result.passed else "FAIL")
