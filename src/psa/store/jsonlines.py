"""JSON-lines files: read them (knowing a torn last line from damage), append to them durably.

An append is one ``write`` of whole lines followed by an fsync, so a kill can only cut the last
line short, never leave half a line in the middle. A last line without its newline that is not a
JSON object is therefore an incomplete append: readers drop it with a one-line warning on stderr
(and ``repair`` rewrites the file atomically without it); any other bad line is damage and raises
ResultsFormatError naming file and line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from psa.atomic import fsync_directory, write_bytes_atomically
from psa.errors import PsaError


class ResultsFormatError(PsaError, ValueError):
    """A results file that does not follow the trial-table, summary or records format."""


def fail(path: str | Path, number: int, message: str) -> ResultsFormatError:
    return ResultsFormatError(f"{Path(path).name}:{number}: {message}")


def encode(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode("utf-8")


def split_lines(path: str | Path) -> tuple[list[str], bool]:
    """The complete lines of a file (blank ones too), and whether a torn last line was dropped."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ResultsFormatError(f"cannot read results file {path}: {error}") from None
    head, newline, last = data.rpartition(b"\n")
    try:
        lines = head.decode("utf-8").split("\n") if newline else []
    except UnicodeDecodeError as error:
        raise ResultsFormatError(f"cannot read results file {path}: {error}") from None
    # A kill mid-append can cut the last line anywhere, a multi-byte character included.
    tail = last.decode("utf-8", "replace")
    if tail.strip():
        if not _is_object(tail):
            print(
                f"psa: warning: {path}: dropped an incomplete last line (an append cut short "
                "by a kill)",
                file=sys.stderr,
            )
            return lines, True
        lines.append(tail)  # only the newline was lost: the record itself is whole
    return lines, False


def json_lines(path: str | Path, required: Iterable[str], what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file; a line that is not
    a JSON object or lacks a ``required`` key raises ResultsFormatError naming file and line.
    A torn last line is dropped with a warning."""
    lines, _ = split_lines(path)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        yield number, parse_line(path, number, raw, required, what)


def parse_line(path: str | Path, number: int, raw: str, required: Iterable[str], what: str) -> dict:
    try:
        line = json.loads(raw)
    except json.JSONDecodeError as error:
        raise fail(path, number, f"not a JSON object ({error.msg})") from None
    if not isinstance(line, dict):
        raise fail(path, number, "not a JSON object")
    missing = [key for key in required if key not in line]
    if missing:
        raise fail(path, number, f"{what} lacks {', '.join(missing)}")
    return line


def repair(
    path: Path, required: Iterable[str], what: str, keep: Callable[[dict], bool] = lambda _: True
) -> list[dict]:
    """The file's objects that ``keep`` accepts; the file is rewritten atomically when a torn last
    line or an unkept line had to go, and deleted when nothing is left."""
    if not path.exists():
        return []
    lines, torn = split_lines(path)
    objects = [
        parse_line(path, number, raw, required, what)
        for number, raw in enumerate(lines, start=1)
        if raw.strip()
    ]
    kept = [line for line in objects if keep(line)]
    if torn or len(kept) != len(objects):
        if kept:
            write_bytes_atomically(path, encode(kept))
        else:
            path.unlink()
            fsync_directory(path.parent)
    return kept


def _is_object(raw: str) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except json.JSONDecodeError:
        return False


class LineLog:
    """An append-only JSON-lines file with one writer. It comes into being with its first line
    (written atomically, so there is never an empty or half-created log); every later append is
    one write of whole lines, then an fsync."""

    def __init__(self, path: Path):
        self.path = path
        self._descriptor: int | None = None

    def append(self, *records: dict) -> None:
        data = encode(records)
        if self._descriptor is None:
            if not self.path.exists():
                write_bytes_atomically(self.path, data)
                self._descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
                return
            self._descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._write(data)
        os.fsync(self._descriptor)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._descriptor, view) :]

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> LineLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
