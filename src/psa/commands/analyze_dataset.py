"""``analyze-dataset``: class balance and ZeroR baselines of MNIST and of the seed-1337 split."""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

from rich.console import Console
from rich.table import Table

from psa.arguments import device_name, existing_path
from psa.cli import CommandParser
from psa.data import (
    NUM_CLASSES,
    DatasetStats,
    MNISTAnalysis,
    analyze_mnist,
    default_data_dir,
    load_mnist,
)
from psa.device import resolve_device
from psa.errors import UsageError

TIMING_REPEATS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="analyze-dataset",
        description=(
            "Class counts, percentages and the ZeroR baseline (always predict the most frequent "
            "class) of the MNIST train and test sets and of the 50k/10k train/validation split."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=existing_path,
        default=None,
        help="folder holding the MNIST files (default: $SM_CHANNEL_TRAINING, else dataset/)",
    )
    parser.add_argument(
        "--format",
        choices=("auto", "text", "json"),
        default="auto",
        help="auto: a rich table on a terminal, plain text otherwise (default: auto)",
    )
    parser.add_argument(
        "--value",
        metavar="SET.FIELD",
        default=None,
        help="print only this number, e.g. split_validation.zeror_accuracy or "
        "split_validation.class_counts.1; SET is full_train, full_test, split_train or "
        "split_validation, FIELD total_samples, zeror_accuracy, zeror_class, class_counts.D or "
        "class_percentages.D (check-reproduction's claims use it)",
    )
    parser.add_argument(
        "--time-load",
        action="store_true",
        help=f"also time the data preparation the trainer does (best of {TIMING_REPEATS})",
    )
    parser.add_argument(
        "--device",
        type=device_name,
        default=None,
        help="device for --time-load: cpu, cuda, cuda:N, mps (default: best available)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    data_dir = arguments.data_dir or default_data_dir()
    analysis = _analysis(Path(data_dir).resolve())
    if arguments.value is not None:
        print(f"{value_at(_as_json(analysis), arguments.value):.10g}")
        return
    timing = _time_load(data_dir, arguments.device) if arguments.time_load else None

    console = Console()
    if arguments.format == "json":
        report = {"data_dir": str(data_dir), **_as_json(analysis)}
        if timing is not None:
            report["load_seconds"] = timing
        print(json.dumps(report, indent=2))
        return
    if arguments.format == "auto" and console.is_terminal:
        console.print(rich_table(analysis, data_dir))
    else:
        print(text_table(analysis, data_dir))
    if timing is not None:
        print(
            f"Data ready in {timing['first']:.3f} s (best of {TIMING_REPEATS}: "
            f"{timing['best']:.3f} s) on {timing['device']}: verify, read, split, normalise."
        )


@functools.lru_cache(maxsize=2)
def _analysis(data_dir: Path) -> MNISTAnalysis:
    """The analysis of ``data_dir``, once per process (check-reproduction's claims ask often)."""
    return analyze_mnist(data_dir)


def _sets(analysis: MNISTAnalysis) -> list[DatasetStats]:
    return [getattr(analysis, field.name) for field in fields(analysis)]


def _cell(stats: DatasetStats, digit: int) -> str:
    return f"{stats.class_counts[digit]:,} ({stats.class_percentages[digit]:.2f}%)"


def _rows(analysis: MNISTAnalysis) -> list[list[str]]:
    sets = _sets(analysis)
    rows = [[str(digit)] + [_cell(stats, digit) for stats in sets] for digit in range(NUM_CLASSES)]
    rows.append(["Total"] + [f"{stats.total_samples:,}" for stats in sets])
    rows.append(
        ["ZeroR"] + [f"class {stats.zeror_class}: {stats.zeror_accuracy:.2f}%" for stats in sets]
    )
    return rows


def text_table(analysis: MNISTAnalysis, data_dir: Path) -> str:
    header = ["Class"] + [stats.name for stats in _sets(analysis)]
    rows = [header, *_rows(analysis)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"MNIST class balance and ZeroR baselines ({data_dir})"]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if index == 0 or index == NUM_CLASSES:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def rich_table(analysis: MNISTAnalysis, data_dir: Path) -> Table:
    table = Table(title=f"MNIST class balance and ZeroR baselines ({data_dir})")
    table.add_column("Class")
    for stats in _sets(analysis):
        table.add_column(stats.name, justify="right")
    rows = _rows(analysis)
    for index, row in enumerate(rows):
        table.add_row(
            *row,
            end_section=index == NUM_CLASSES - 1,
            style="bold" if index == len(rows) - 1 else None,
        )
    return table


def value_at(report: dict, path: str) -> float:
    """The number at ``path`` (dotted keys) of the JSON report; UsageError naming the choices."""
    node = report
    for depth, key in enumerate(path.split(".")):
        if isinstance(node, dict) and key.isdigit() and int(key) in node:
            key = int(key)  # a class: the report's tables are keyed by digit
        if not isinstance(node, dict) or key not in node or key == "name":
            where = ".".join(path.split(".")[:depth])
            keys = [str(k) for k in node if k != "name"] if isinstance(node, dict) else []
            choices = ", ".join(keys) if keys else "nothing: it is a number"
            raise UsageError(
                f"--value {path}: {where or 'the report'} has no {key!r}; it has {choices}"
            )
        node = node[key]
    if isinstance(node, dict):
        keys = ", ".join(map(str, node))
        raise UsageError(f"--value {path} is a table, not a number; add one of {keys}")
    return float(node)


def _as_json(analysis: MNISTAnalysis) -> dict:
    return {field.name: asdict(getattr(analysis, field.name)) for field in fields(analysis)}


def _time_load(data_dir: Path, device_name: str | None) -> dict:
    device = resolve_device(device_name)
    seconds = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        splits = load_mnist(data_dir, device)
        # Wait for queued device work so the time covers the data really being ready.
        float(splits.test_x[-1, -1])
        seconds.append(time.perf_counter() - start)
    return {"first": seconds[0], "best": min(seconds), "device": str(device)}
