"""Times `train` as a user runs it, idle and with one busy `nice -n 19` process beside it, side by
side in one run: psa's default thread policy (one torch thread) against two threads, for a small
network ([4*17], 5 loops) and an arithmetic-bound one ([1*1024], 2 loops). Prints each case's
median wall time of --repeats runs in both conditions, the loaded/idle ratio, and the figures as
JSON with --output. Run it on an otherwise idle machine:

    scripts/poetry run python scripts/load_probe.py --output results/load-probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = (
    ("[4*17] x5, default (1 thread)", ["--arch", "[4*17]", "--meta-loops", "5"]),
    ("[4*17] x5, --threads 2", ["--arch", "[4*17]", "--meta-loops", "5", "--threads", "2"]),
    ("[1*1024] x2, default (1 thread)", ["--arch", "[1*1024]", "--meta-loops", "2"]),
    ("[1*1024] x2, --threads 2", ["--arch", "[1*1024]", "--meta-loops", "2", "--threads", "2"]),
)
BUSY = "while True: pass"


def train_seconds(flags: list[str]) -> float:
    """Wall seconds of one fresh `train` (a new model dir), start-up and data loading included."""
    with tempfile.TemporaryDirectory() as models:
        argv = [sys.executable, "-m", "psa", "train", *flags, "--seed", "1", "--device", "cpu"]
        argv += ["--model-dir", models, "--data-dir", str(ROOT / "dataset")]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def measure(flags: list[str], repeats: int, loaded: bool) -> list[float]:
    busy = None
    if loaded:
        busy = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", BUSY])
    try:
        return [train_seconds(flags) for _ in range(repeats)]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case and condition")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    figures = []
    print(f"{'case':34} {'idle s':>8} {'loaded s':>9} {'loaded/idle':>12}")
    for name, flags in CASES:
        # Alternate the conditions case by case so that both see the same minutes.
        idle = measure(flags, args.repeats, loaded=False)
        loaded = measure(flags, args.repeats, loaded=True)
        row = {
            "case": name,
            "idle_seconds": idle,
            "loaded_seconds": loaded,
            "idle_median": statistics.median(idle),
            "loaded_median": statistics.median(loaded),
        }
        row["ratio"] = row["loaded_median"] / row["idle_median"]
        figures.append(row)
        print(
            f"{name:34} {row['idle_median']:8.1f} {row['loaded_median']:9.1f} {row['ratio']:12.2f}",
            flush=True,
        )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"cores": os.cpu_count(), "cases": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
