"""Whole-process start-up of psa's commands against a bare `import torch`, through scripts/poetry.

    python3 scripts/measure_startup.py [--repeats 5]

Runs, alternately and --repeats times each, ``scripts/poetry run python -c "import torch"`` and a
one-loop ``[1*8]`` train (in a temporary model dir), plus Poetry's own start-up (``python -c
pass``) and a few light commands, and prints every time, the minimum and the median of each,
and the target: train within 2x the bare import + 1 s.
Measure on an otherwise idle machine; the minimum is the figure least disturbed by other load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POETRY = ["scripts/poetry", "run"]


def commands(model_dir: Path) -> dict[str, list[str]]:
    return {
        "python -c pass": ["python", "-c", "pass"],
        "import torch": ["python", "-c", "import torch"],
        "train [1*8] x1": [
            "train", "--arch", "[1*8]", "--meta-loops", "1", "--seed", "1",
            "--model-dir", str(model_dir),
        ],  # fmt: skip
        "train --version": ["train", "--version"],
        "clean --dry-run": ["clean", "--dry-run", "--model-dir", str(model_dir)],
        "classify-regimes --help": ["classify-regimes", "--help"],
    }


def timed(argv: list[str], root: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*POETRY, *argv], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (5)")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the checkout to measure (this script's)"
    )
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            # A fresh model dir per round: train starts from nothing every time.
            model_dir = Path(scratch) / f"models-{repeat}"
            for name, argv in commands(model_dir).items():
                seconds = timed(argv, args.root)
                times.setdefault(name, []).append(seconds)
                print(f"{name:24} {seconds:6.2f} s", file=sys.stderr, flush=True)
    print(f"{'command':24} {'min':>7} {'median':>7}   (scripts/poetry run, {args.repeats} runs)")
    for name, values in times.items():
        print(f"{name:24} {min(values):6.2f}s {statistics.median(values):6.2f}s")
    torch_min, train_min = min(times["import torch"]), min(times["train [1*8] x1"])
    target = 2 * torch_min + 1
    verdict = "within" if train_min <= target else "over"
    print(f"train {train_min:.2f} s; target 2 x {torch_min:.2f} + 1 = {target:.2f} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
