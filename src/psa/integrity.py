"""Whether a results dir is whole and unaltered, as tables of psa.results can tell.

``integrity(trials, loops)`` checks each trial's record against its loop log: the log holds
loops 1..meta_loops once each, every line's LKG is the best validation accuracy up to it (a loop
is promoted exactly when it beats the LKG before it), and the record's validation bounty, bounty
loop and loops run are the log's. A sweep writes them so; an edit of one and not the other, a
lost or repeated line, or a record of a trial never logged breaks it. ``digest(frame, columns)``
is the SHA-256 of chosen columns of every row, in no particular row order, so a claims file can
pin every value of a dir (a test accuracy no other claim reads, an architecture no claim names).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers

import pandas as pd

KEY = ["model", "arch", "mode", "trial"]
INTEGRITY_COLUMNS = [
    *KEY,
    "recorded",
    "loops_logged",
    "log_complete",
    "log_consistent",
    "agrees",
    "problem",
]
# Accuracies are hundredths of a percent; two that differ by less than this are the same.
SAME = 1e-9


def integrity(trials: pd.DataFrame, loops: pd.DataFrame) -> pd.DataFrame:
    """One row per trial that has a record or a loop log (columns INTEGRITY_COLUMNS): whether it
    is recorded, how many loops its log holds, whether that log is complete (loops 1..meta_loops
    once each, all the record asked for run) and consistent (LKG and promotions follow from the
    validation accuracies), whether the record agrees with it, and the first problem found."""
    records = {key: row for key, row in zip(_keys(trials), trials.itertuples(), strict=True)}
    logs = {key: lines.sort_values("loop") for key, lines in loops.groupby(KEY, sort=False)}
    rows = [
        _check(key, records.get(key), logs.get(key)) for key in dict.fromkeys([*records, *logs])
    ]
    table = pd.DataFrame(rows, columns=INTEGRITY_COLUMNS)
    return table.astype(
        {
            "trial": "Int64",
            "loops_logged": "Int64",
            "recorded": "boolean",
            "log_complete": "boolean",
            "log_consistent": "boolean",
            "agrees": "boolean",
            "problem": "str",
        }
    )


def _keys(trials: pd.DataFrame) -> list[tuple]:
    return [tuple(row) for row in trials[KEY].itertuples(index=False)]


def _check(key: tuple, record, lines: pd.DataFrame | None) -> dict:
    lines = lines if lines is not None else pd.DataFrame(columns=["loop"])
    problems = []
    consistent = _consistency_problem(lines)
    complete = _completeness_problem(record, lines)
    agreement = _agreement_problem(record, lines)
    for problem in (complete, consistent, agreement):
        if problem and problem not in problems:
            problems.append(problem)
    return dict(
        zip(KEY, key, strict=True),
        recorded=record is not None,
        loops_logged=len(lines),
        log_complete=complete is None,
        log_consistent=consistent is None,
        agrees=agreement is None,
        problem="; ".join(problems) or None,
    )


def _completeness_problem(record, lines: pd.DataFrame) -> str | None:
    if record is None:
        return "no trial record"
    if lines.empty:
        return "no loop log"
    wanted = _integer(record.meta_loops)
    logged = [int(loop) for loop in lines["loop"]]
    if wanted is None or logged != list(range(1, wanted + 1)):
        return f"its log holds loops {_ranges(logged)}, not 1-{wanted}"
    if _integer(record.loops_run) != wanted:
        return f"{record.loops_run} of its {wanted} loops ran"
    return None


def _consistency_problem(lines: pd.DataFrame) -> str | None:
    best = -math.inf
    for line in lines.itertuples():
        promoted = line.val_accuracy > best
        if not pd.isna(line.promoted) and bool(line.promoted) != promoted:
            marked = bool(line.promoted)
            return f"loop {line.loop} is marked promoted={marked}, its accuracy says {promoted}"
        best = max(best, line.val_accuracy)
        if abs(line.lkg_accuracy - best) > SAME:
            return f"loop {line.loop} has LKG {line.lkg_accuracy}, its best accuracy so far {best}"
    return None


def _agreement_problem(record, lines: pd.DataFrame) -> str | None:
    if record is None or lines.empty:
        return "no trial record" if record is None else "no loop log"
    final = lines["lkg_accuracy"].iloc[-1]
    reached = int(lines.loc[(lines["lkg_accuracy"] - final).abs() <= SAME, "loop"].iloc[0])
    last = int(lines["loop"].iloc[-1])
    if pd.isna(record.val_bounty) or abs(record.val_bounty - final) > SAME:
        return f"its record's validation bounty {record.val_bounty} is not its log's LKG {final}"
    if _integer(record.bounty_loop) != reached:
        return f"its record's bounty loop {record.bounty_loop} is not its log's {reached}"
    if _integer(record.loops_run) != last:
        return f"its record ran {record.loops_run} loops, its log {last}"
    return None


def _integer(value) -> int | None:
    return None if pd.isna(value) else int(value)


def _ranges(loops: list[int]) -> str:
    if not loops:
        return "none"
    if loops == list(range(loops[0], loops[-1] + 1)):
        return f"{loops[0]}-{loops[-1]}"
    return ",".join(map(str, loops))


def digest(frame: pd.DataFrame, columns: list[str]) -> str:
    """The SHA-256 (hex) of ``columns`` of every row of ``frame``: each row as a JSON list of its
    values (empty ones null, numbers as numbers), the rows sorted, one per line. Row order and
    the column's pandas type do not change it; any value does."""
    rows = sorted(
        json.dumps([_plain(value) for value in row])
        for row in frame[columns].itertuples(index=False)
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _plain(value):
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)
