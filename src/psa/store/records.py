"""Trial records read and checked: a file's records as dicts (read_record_file), records as a
table with one row per (arch, model, mode, trial) and canonical arch keys (records_table), and
that table in the long form of the upstream trial table (trials_long_form)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from psa.arch import ArchError, parse_key
from psa.modes import MODES
from psa.store.jsonlines import ResultsFormatError, fail, json_lines
from psa.store.schema import REQUIRED_RECORD_KEYS

LONG_COLUMNS = ["arch", "trial", "mode", "accuracy", "status"]


def records_table(
    records: Iterable[Mapping] | pd.DataFrame, model: str | None = None
) -> pd.DataFrame:
    """Trial records (dicts or a DataFrame) as a table: one row per record, the JSON keys as
    columns, canonical arch keys; ``model`` keeps only that model's. A repeated (arch, mode,
    trial) keeps the last record, as a rerun appended to trials.jsonl. ``attrs`` holds
    ``paired`` (every record says its trial shares init and data order across modes) and
    ``archs`` (in record order)."""
    frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    paired_attr = frame.attrs.get("paired")
    if "val_bounty" not in frame.columns and "accuracy" in frame.columns:
        frame = frame.rename(columns={"accuracy": "val_bounty"})
    if frame.empty:
        return _with_attrs(pd.DataFrame(columns=list(REQUIRED_RECORD_KEYS)))
    missing = [key for key in REQUIRED_RECORD_KEYS if key not in frame.columns]
    if missing:
        raise ResultsFormatError(f"trial records lack {', '.join(missing)}")
    unknown = sorted(set(frame["mode"]) - set(MODES))
    if unknown:
        raise ResultsFormatError(
            f"trial records name unknown modes {unknown}; modes are {list(MODES)}"
        )
    frame["arch"] = [parse_key(arch).key for arch in frame["arch"]]
    frame["trial"] = frame["trial"].astype(int)
    frame["val_bounty"] = frame["val_bounty"].astype(float)
    key = (
        ["arch", "model", "mode", "trial"]
        if "model" in frame.columns
        else ["arch", "mode", "trial"]
    )
    frame = frame.drop_duplicates(key, keep="last").reset_index(drop=True)
    if paired_attr is not None:
        frame.attrs["paired"] = paired_attr
    if model is not None and "model" in frame.columns:
        frame = frame[frame["model"] == model].reset_index(drop=True)
    return _with_attrs(frame)


def _with_attrs(frame: pd.DataFrame) -> pd.DataFrame:
    frame.attrs.update(paired=records_are_paired(frame), archs=list(dict.fromkeys(frame["arch"])))
    return frame


def records_are_paired(frame: pd.DataFrame) -> bool:
    """True when every record says its trial shares init and data order across modes."""
    if "paired" in frame.columns:
        return bool(len(frame)) and bool(frame["paired"].fillna(False).astype(bool).all())
    return bool(frame.attrs.get("paired", False))


def read_record_file(path: Path) -> list[dict]:
    """The records of one JSON-lines file (trials.jsonl, a batch's own), checked, canonical keys."""
    records = []
    for number, record in json_lines(path, REQUIRED_RECORD_KEYS, "record"):
        if record["mode"] not in MODES:
            raise fail(path, number, f"unknown mode {record['mode']!r}")
        try:
            record["arch"] = parse_key(str(record["arch"])).key
            record["val_bounty"] = float(record["val_bounty"])
            record["trial"] = int(record["trial"])
        except (ArchError, TypeError, ValueError) as error:
            raise fail(path, number, f"bad record: {error}") from None
        records.append(record)
    return records


def trials_long_form(frame: pd.DataFrame) -> pd.DataFrame:
    """A records table in the long form the trial-table reader returns (accuracy = val bounty)."""
    long = frame.rename(columns={"val_bounty": "accuracy"}).assign(status="ok")[LONG_COLUMNS]
    long = long.reset_index(drop=True)
    long.attrs.update(paired=records_are_paired(frame), archs=list(dict.fromkeys(frame["arch"])))
    loops = frame["meta_loops"].dropna().unique() if "meta_loops" in frame.columns else []
    if len(loops) == 1:
        long.attrs["meta_loops"] = int(loops[0])
    return long
