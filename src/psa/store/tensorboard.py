"""TensorBoard event files of the loop logs (the optional extra ``tensorboard``).

Layout, under a results dir or a model dir: ``tensorboard/<arch slug>/<mode>/t<i>/`` is one
TensorBoard run per trial, holding one file ``events.out.tfevents.psa``. Its scalars, at step =
meta-loop: ``accuracy/validation`` (the loop's validation accuracy), ``accuracy/lkg`` (the LKG
accuracy after it) and ``promotion`` (1 when the loop's weights became the LKG, else 0). The
event time is the log's ``train_seconds`` summed up to that loop (in a sweep, the seconds of the
whole batch the trial trained in), so TensorBoard's "relative" axis shows training time and a
file's bytes depend only on its log.

The event files are derived from the loop logs and never the other way round: ``rebuild`` writes
every run from the logs (atomically, the same bytes each time, runs without a log removed), and a
live writer (``sweep/train --tensorboard``) first rebuilds its run from the lines its log kept
after a resume, then appends one event per committed loop. A kill mid-append leaves at most a
torn last record, which TensorBoard skips and the next rebuild replaces.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from psa.arch import parse_key
from psa.atomic import write_bytes_atomically
from psa.errors import PsaError, install_hint
from psa.store.jsonlines import json_lines
from psa.store.results import LOOP_LOG_NAME, ResultsStore, run_logs
from psa.store.schema import REQUIRED_LOG_KEYS

TENSORBOARD_DIR = "tensorboard"
EVENT_FILE = "events.out.tfevents.psa"
TAGS = ("accuracy/validation", "accuracy/lkg", "promotion")


class TensorBoardMissing(PsaError):
    """The tensorboard package is not installed."""


def require() -> None:
    """Raise TensorBoardMissing, saying how to install it, unless tensorboard is installed."""
    _protos()


def _protos():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise TensorBoardMissing(
            "TensorBoard output needs the optional extra tensorboard; install it with "
            f"{install_hint('tensorboard')}"
        ) from None
    return event_pb2, summary_pb2, RecordWriter


def run_dir(root: Path, slug: str, mode: str, trial: int) -> Path:
    return Path(root) / TENSORBOARD_DIR / slug / mode / f"t{trial}"


def scalars(line: dict) -> dict[str, float]:
    """The scalars of one loop-log line, by tag."""
    return {
        "accuracy/validation": float(line["val_accuracy"]),
        "accuracy/lkg": float(line["lkg_accuracy"]),
        "promotion": 1.0 if line.get("promoted") else 0.0,
    }


def encode(lines: Iterable[dict], elapsed: float = 0.0, header: bool = True) -> tuple[bytes, float]:
    """The event records of ``lines`` (after a file-version header when ``header``), and the
    training seconds summed up to the last of them."""
    event_pb2, summary_pb2, RecordWriter = _protos()
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    if header:
        writer.write(
            event_pb2.Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString()
        )
    for line in lines:
        elapsed += float(line.get("train_seconds") or 0.0)
        values = [
            summary_pb2.Summary.Value(tag=tag, simple_value=value)
            for tag, value in scalars(line).items()
        ]
        event = event_pb2.Event(
            wall_time=elapsed, step=int(line["loop"]), summary=summary_pb2.Summary(value=values)
        )
        writer.write(event.SerializeToString())
    return buffer.getvalue(), elapsed


def write_run(folder: Path, lines: list[dict]) -> float:
    """Write one run's event file from its log lines (atomically); the seconds it sums up to."""
    data, elapsed = encode(lines)
    write_bytes_atomically(folder / EVENT_FILE, data)
    return elapsed


def rebuild(root: Path, runs: dict[tuple[str, str, int], list[dict]]) -> int:
    """Make ``root/tensorboard`` hold exactly ``runs`` ((arch slug, mode, trial) -> log lines,
    in loop order); the number of runs written."""
    wanted = {run_dir(root, *key): lines for key, lines in runs.items() if lines}
    base = Path(root) / TENSORBOARD_DIR
    for events in sorted(base.glob(f"*/*/t*/{EVENT_FILE}")):
        if events.parent not in wanted:
            shutil.rmtree(events.parent, ignore_errors=True)
    for folder, lines in wanted.items():
        write_run(folder, lines)
    return len(wanted)


def results_dir_runs(store: ResultsStore) -> dict[tuple[str, str, int], list[dict]]:
    """The loop logs of a results dir as runs: (arch slug, mode, trial) -> lines."""
    runs = {}
    for path in store.log_files():
        match = LOOP_LOG_NAME.match(path.relative_to(store.root).as_posix())
        if match:
            slug, mode, trial = match.group(1), match.group(2), int(match.group(3))
            runs[slug, mode, trial] = _in_loop_order(_lines(path))
    return runs


def model_dir_runs(model_dir: Path, checkpoint: Path) -> dict[tuple[str, str, int], list[dict]]:
    """train's run logs beside ``checkpoint`` as runs: one per (arch, mode) it trained."""
    runs: dict[tuple[str, str, int], list[dict]] = {}
    for path in run_logs(model_dir, checkpoint):
        for line in _lines(path):
            key = (parse_key(str(line["arch"])).slug, line["mode"], int(line["trial"]))
            runs.setdefault(key, []).append(line)
    return {key: _in_loop_order(lines) for key, lines in runs.items()}


def _lines(path: Path) -> list[dict]:
    return [line for _, line in json_lines(path, REQUIRED_LOG_KEYS, "log line")]


def _in_loop_order(lines: list[dict]) -> list[dict]:
    return sorted(lines, key=lambda line: int(line["loop"]))


class LiveRun:
    """One trial's event file written as its loops commit: rebuilt from the lines its log holds
    now (so a resumed run repeats and skips no step), then one appended event per loop."""

    def __init__(self, folder: Path, kept: list[dict]):
        self.path = folder / EVENT_FILE
        self.elapsed = write_run(folder, kept)
        self._stream = open(self.path, "ab")  # noqa: SIM115 (closed by close())

    def append(self, line: dict) -> None:
        data, self.elapsed = encode([line], self.elapsed, header=False)
        self._stream.write(data)
        self._stream.flush()

    def close(self) -> None:
        if not self._stream.closed:
            os.fsync(self._stream.fileno())
            self._stream.close()
