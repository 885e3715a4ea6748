"""The report's inputs: trial records and the upstream trial-table and summary markdown, read as
pandas frames (psa.store.tables writes the markdown).

Readers accept upstream's quirks: the malformed 6-cell separator, ``N/A`` and error tokens per
cell (a row is never dropped), headers with a subset of the modes, and "No successful trials
found for this architecture.". Every reader returns a pandas DataFrame; ``frame.attrs`` carries
``paired`` (whether the trial rows are paired across modes) and ``archs`` (every architecture in
file order, including those without data).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from psa.arch import ArchError, parse_key
from psa.modes import MODE_TITLES, MODES
from psa.store import ResultsFormatError, ResultsStore, read_records_table
from psa.store.jsonlines import fail
from psa.store.records import LONG_COLUMNS, trials_long_form
from psa.store.tables import (
    ARCH_HEADING,
    MISSING_CELL,
    NO_TRIALS_LINE,
    PAIRED_MARKER,
    SUMMARY_COLUMNS,
    mode_statistics,
)

_TITLE_TO_MODE = {title.lower(): mode for mode, title in MODE_TITLES.items()}
_SEPARATOR = re.compile(r"^\|[\s:\-|]+$")
_ERROR_TOKEN = re.compile(r"^(?:[A-Z][A-Z0-9_]*|(?:CLIENT_)?ERROR:.*)$")
_PERCENT = re.compile(r"^(-?[0-9]+(?:\.[0-9]+)?)\s*%?$")
_TRIAL_INDEX = re.compile(r"^[0-9]+$")
_SHAPE = re.compile(r"^Results Shape \{([^}]+)\} Parameters \{([0-9][0-9,]*)\}\s*$")
_MODE_LINE = re.compile(r"^\*\s+(\w+):\s*(.*?)\s*$")
_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?)"
_STATS = re.compile(
    rf"^Mean={_NUMBER}%\s*\|\s*Std={_NUMBER}%\s*\|\s*Min={_NUMBER}%\s*\|\s*Max={_NUMBER}%"
    r"\s*\(n=([0-9]+)\)$"
)


def _split_row(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") else body
    return [cell.strip() for cell in body.split("|")]


def _parse_cell(text: str) -> tuple[float, str] | None:
    if text == MISSING_CELL:
        return math.nan, MISSING_CELL
    match = _PERCENT.match(text)
    if match:
        return float(match.group(1)), "ok"
    if _ERROR_TOKEN.match(text):
        return math.nan, text
    return None


def _header_modes(cells: list[str], path: str | Path, number: int) -> list[str]:
    if not cells or cells[0].lower() != "trial":
        raise fail(path, number, "a table must start with a '| Trial | None | ... |' header")
    modes = []
    for title in cells[1:]:
        if title.lower() not in _TITLE_TO_MODE:
            known = ", ".join(MODE_TITLES.values())
            raise fail(path, number, f"unknown mode column {title!r}; expected some of {known}")
        modes.append(_TITLE_TO_MODE[title.lower()])
    return modes


def parse_trials_markdown(text: str, path: str | Path = "<trials>") -> pd.DataFrame:
    """Parse trial-table text into long form (arch, trial, mode, accuracy, status).

    ``accuracy`` is NaN where a cell is ``N/A`` or an error token; ``status`` is ``ok``, ``N/A`` or
    the token.
    """
    rows: list[tuple] = []
    archs: list[str] = []
    paired = False
    arch: str | None = None
    modes: list[str] | None = None
    seen_trials: set[tuple[str, int]] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(ARCH_HEADING.strip()):
            key = line[len(ARCH_HEADING.strip()) :].strip()
            try:
                arch = parse_key(key).key
            except ArchError as error:
                raise fail(path, number, f"bad architecture heading: {error}") from None
            if arch in archs:
                raise fail(path, number, f"architecture {arch} appears twice")
            archs.append(arch)
            modes = None
        elif line == PAIRED_MARKER:
            paired = True
        elif line.startswith("#") or (line.startswith("<!--") and line.endswith("-->")):
            continue
        elif line == NO_TRIALS_LINE:
            if arch is None:
                raise fail(path, number, "'No successful trials' before any architecture heading")
        elif line.startswith("|"):
            if arch is None:
                raise fail(path, number, "table row before any '### Architecture:' heading")
            if _SEPARATOR.match(line) and "-" in line:
                if modes is None:
                    raise fail(path, number, "table separator without a header row above it")
                continue
            cells = _split_row(line)
            if modes is None:
                modes = _header_modes(cells, path, number)
                continue
            if len(cells) != len(modes) + 1:
                raise fail(
                    path, number, f"row has {len(cells)} cells, the header has {len(modes) + 1}"
                )
            if not _TRIAL_INDEX.match(cells[0]):
                raise fail(path, number, f"trial index {cells[0]!r} is not a positive integer")
            trial = int(cells[0])
            if (arch, trial) in seen_trials:
                raise fail(path, number, f"trial {trial} of {arch} appears twice")
            seen_trials.add((arch, trial))
            for mode, cell in zip(modes, cells[1:], strict=True):
                parsed = _parse_cell(cell)
                if parsed is None:
                    raise fail(
                        path,
                        number,
                        f"cell {cell!r} ({MODE_TITLES[mode]}) is not a percentage, "
                        f"{MISSING_CELL} or an error token",
                    )
                rows.append((arch, trial, mode, *parsed))
        else:
            raise fail(path, number, f"unrecognised line {line[:60]!r}")
    frame = pd.DataFrame(rows, columns=LONG_COLUMNS)
    frame["trial"] = frame["trial"].astype(int)
    frame["accuracy"] = frame["accuracy"].astype(float)
    frame.attrs.update(paired=paired, archs=archs)
    return frame


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsFormatError(f"cannot read results file {path}: {error}") from None


def read_trials_markdown(path: str | Path) -> pd.DataFrame:
    """Read a trial table (psa's or upstream's) into long form; see parse_trials_markdown."""
    return parse_trials_markdown(_read_text(path), path)


def parse_summary_markdown(text: str, path: str | Path = "<summary>") -> pd.DataFrame:
    """Parse summary text into (arch, parameters, mode, mean, std, min, max, n, status)."""
    rows: list[tuple] = []
    archs: list[str] = []
    arch: str | None = None
    parameters = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("<!--"):
            continue
        shape = _SHAPE.match(line)
        if shape:
            try:
                arch = parse_key(shape.group(1)).key
            except ArchError as error:
                raise fail(path, number, f"bad architecture in 'Results Shape': {error}") from None
            archs.append(arch)
            parameters = int(shape.group(2).replace(",", ""))
            continue
        entry = _MODE_LINE.match(line)
        if not entry:
            raise fail(path, number, f"unrecognised line {line[:60]!r}")
        if arch is None:
            raise fail(path, number, "mode line before any 'Results Shape {...}' line")
        title, content = entry.groups()
        if title.lower() not in _TITLE_TO_MODE:
            raise fail(path, number, f"unknown mode {title!r}")
        mode = _TITLE_TO_MODE[title.lower()]
        stats = _STATS.match(content)
        if stats:
            mean, std, low, high = (float(value) for value in stats.groups()[:4])
            rows.append((arch, parameters, mode, mean, std, low, high, int(stats.group(5)), "ok"))
        elif content.startswith("Mean="):
            raise fail(path, number, f"malformed statistics {content[:60]!r}")
        elif content:
            rows.append((arch, parameters, mode, *[math.nan] * 4, 0, content))
        else:
            raise fail(path, number, f"mode {title} has neither statistics nor an error token")
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame.attrs.update(archs=archs)
    return frame


def read_summary_markdown(path: str | Path) -> pd.DataFrame:
    """Read a summary file; error modes keep their token in ``status`` and NaN statistics."""
    return parse_summary_markdown(_read_text(path), path)


def read_trials(source: str | Path, model: str | None = None) -> pd.DataFrame:
    """Trials in long form from a trial table (.md), a trials.jsonl or a results dir.

    A results dir is read from its records, or else from its ``psa_<model>_trials.md``.
    """
    path = Path(source)
    if path.is_dir() and not ResultsStore(path).record_files():
        table = ResultsStore(path).table_path(model or "resmlp")
        if not table.exists():
            raise ResultsFormatError(
                f"results dir {path} holds neither trial records nor {table.name}"
            )
        return read_trials_markdown(table)
    if path.is_dir() or path.suffix == ".jsonl":
        return trials_long_form(read_records_table(path, model))
    return read_trials_markdown(path)


def is_paired(frame: pd.DataFrame) -> bool:
    """Whether a frame from one of the readers holds trials paired across modes."""
    return bool(frame.attrs.get("paired", False))


def wide_trials(long: pd.DataFrame, arch: str) -> pd.DataFrame:
    """One architecture's trials as a table: index trial, a column per mode (NaN where missing)."""
    rows = long[long["arch"] == arch]
    table = rows.pivot(index="trial", columns="mode", values="accuracy")
    return table.reindex(columns=list(MODES)).sort_index()


def is_summary_file(source: str | Path) -> bool:
    """Whether ``source`` is a summary markdown file (its statistics are already computed)."""
    path = Path(source)
    if not path.is_file() or path.suffix == ".jsonl":
        return False
    return any(line.startswith("Results Shape {") for line in _read_text(path).splitlines())


def read_mode_statistics(source: str | Path, model: str | None = None) -> pd.DataFrame:
    """Per (arch, mode) mean, std, min, max, n from a summary, a trial table or trial records.

    A summary's error modes are left out. ``attrs`` keeps ``archs`` and, for records,
    ``meta_loops``.
    """
    path = Path(source)
    if path.is_file() and path.suffix != ".jsonl":
        text = _read_text(path)
        if any(line.startswith("Results Shape {") for line in text.splitlines()):
            summary = parse_summary_markdown(text, path)
            stats = summary[summary["status"] == "ok"].drop(columns=["parameters", "status"])
            stats = stats.reset_index(drop=True)
            stats.attrs.update(archs=summary.attrs["archs"])
            return stats
        long = parse_trials_markdown(text, path)
    else:
        long = read_trials(path, model)
    stats = mode_statistics(long)
    stats.attrs.update(long.attrs)
    return stats
