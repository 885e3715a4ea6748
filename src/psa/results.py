"""A results dir as pandas tables: the documented way to load psa's results in Python.

    import psa.results
    tables = psa.results.load("results")
    tables.trials   # one row per trial: every record field, nested ones flattened
                    # (seeds.run, hyperparameters.lr, ...), the run's provenance.* fields
    tables.loops    # one row per completed meta-loop of a trial (long form)
    tables.runs     # one row per command run that wrote there (its provenance)

``export-results`` writes the same tables as CSV or parquet (and, beside CSV, ``schema.json``: each
column's pandas type, since CSV holds none); ``psa.results.read_export(folder)`` reads them back
with the types ``load`` gives (plain ``pd.read_csv`` works too, but guesses types: a version such
as ``13.2`` becomes a number). Columns of ``loops``: arch, depth,
width (the widest layer), parameters, model, mode, trial, loop, val_accuracy, lkg_accuracy,
promoted, ablation_layer and ablation_neuron (the target ablated before the loop; empty on a
loop that ablated nothing), train_seconds, run_id, provenance (the run that computed the loop).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from psa.arch import parse_key, shape
from psa.store import REQUIRED_LOG_KEYS, ResultsStore
from psa.store.jsonlines import json_lines
from psa.store.provenance import read_provenance

LOOP_COLUMNS = [
    "arch",
    "depth",
    "width",
    "parameters",
    "model",
    "mode",
    "trial",
    "loop",
    "val_accuracy",
    "lkg_accuracy",
    "promoted",
    "ablation_layer",
    "ablation_neuron",
    "train_seconds",
    "run_id",
    "provenance",
]
SHAPE_COLUMNS = ["depth", "width", "parameters"]
SCHEMA_NAME = "schema.json"


@dataclass
class Results:
    trials: pd.DataFrame
    loops: pd.DataFrame
    runs: pd.DataFrame


def load(results_dir: str | Path) -> Results:
    """The trial records, loop logs and run provenance of ``results_dir`` as DataFrames."""
    store = ResultsStore(results_dir)
    return Results(trials_table(store), loops_table(store), runs_table(store))


def schema(results: Results) -> dict[str, dict[str, str]]:
    """Each table's columns and their pandas types, as export-results writes them for CSV."""
    return {
        table.name: {
            str(column): str(dtype) for column, dtype in getattr(results, table.name).dtypes.items()
        }
        for table in fields(results)
    }


def read_export(folder: str | Path, format: str = "csv") -> Results:
    """The tables export-results wrote to ``folder``, with the types ``load`` gives."""
    folder = Path(folder)
    if format == "parquet":
        return Results(*(pd.read_parquet(folder / f"{t.name}.parquet") for t in fields(Results)))
    types = json.loads((folder / SCHEMA_NAME).read_text(encoding="utf-8"))
    return Results(
        *(pd.read_csv(folder / f"{t.name}.csv", dtype=types[t.name]) for t in fields(Results))
    )


def runs_table(store: ResultsStore) -> pd.DataFrame:
    runs = list(read_provenance(store.root).values())
    return pd.DataFrame(runs).infer_objects() if runs else pd.DataFrame(columns=["id"])


def trials_table(store: ResultsStore) -> pd.DataFrame:
    """One row per trial record, nested fields flattened with dots, the shape of its network
    and the fields of the provenance it names as ``provenance.<field>``."""
    records = store.records()
    if not records:
        return pd.DataFrame(columns=["arch", "model", "mode", "trial"])
    frame = pd.json_normalize(records, sep=".")
    shapes = pd.DataFrame(
        [shape(r["arch"], r.get("model", "resmlp")) for r in records], index=frame.index
    )
    position = frame.columns.get_loc("arch") + 1
    for offset, column in enumerate(SHAPE_COLUMNS):
        frame.insert(position + offset, column, shapes[column])
    runs = runs_table(store)
    if "provenance" in frame.columns and len(runs):
        runs = runs.rename(columns={c: f"provenance.{c}" for c in runs.columns if c != "id"})
        frame = frame.merge(runs, how="left", left_on="provenance", right_on="id")
        frame = frame.drop(columns="id")
    return frame.infer_objects()


def loops_table(store: ResultsStore) -> pd.DataFrame:
    """Every loop-log line of the dir in long form (columns LOOP_COLUMNS), by log file then loop."""
    rows = []
    shapes: dict[tuple, dict] = {}
    for path in store.log_files():
        for _, line in json_lines(path, REQUIRED_LOG_KEYS, "log line"):
            arch, model = parse_key(str(line["arch"])).key, line.get("model", "resmlp")
            if (arch, model) not in shapes:
                shapes[arch, model] = shape(arch, model)
            target = line.get("ablation") or {}
            rows.append(
                {
                    "arch": arch,
                    **shapes[arch, model],
                    "model": model,
                    "mode": line["mode"],
                    "trial": int(line["trial"]),
                    "loop": int(line["loop"]),
                    "val_accuracy": float(line["val_accuracy"]),
                    "lkg_accuracy": float(line["lkg_accuracy"]),
                    "promoted": bool(line.get("promoted", False)),
                    "ablation_layer": target.get("layer"),
                    "ablation_neuron": target.get("neuron"),
                    "train_seconds": line.get("train_seconds"),
                    "run_id": line.get("run_id"),
                    "provenance": line.get("provenance"),
                }
            )
    frame = pd.DataFrame(rows, columns=LOOP_COLUMNS)
    frame["ablation_neuron"] = frame["ablation_neuron"].astype("float64")
    # The shipped results (results/precision/fp32) were logged before loop lines named their
    # provenance: no column rather than one of nothing.
    optional = ["train_seconds", "run_id", "provenance"]
    frame = frame.drop(columns=[c for c in optional if frame[c].isna().all()])
    return frame.infer_objects()
