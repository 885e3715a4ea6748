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

The columns and their types are fixed (TRIAL_TYPES, LOOP_TYPES, RUN_TYPES), whatever the dir
holds: a value a record or log line lacks is empty (NA), integers are pandas' nullable ``Int64``,
truth values ``boolean``. A record field psa does not know (written by a later version) is kept
as a column after them. ``load`` of several dirs concatenates their tables with a first column
``source``, the dir as given. ``summary(frame, ddof=0)`` gives mean, std, n, min and max per
architecture and mode, and each architecture's regime; the tables psa writes use it.
``comparisons(frame)`` tests each mode against ``none`` per architecture (compare-modes'
table); psa.integrity checks records against loop logs and digests a table's values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from psa.arch import parse_key, shape
from psa.errors import PsaError
from psa.modes import MODES
from psa.provenance import FIELDS as PROVENANCE_FIELDS
from psa.report.regimes import ZEROR_VALIDATION, classify_trials
from psa.store import REQUIRED_LOG_KEYS, ResultsStore
from psa.store.jsonlines import json_lines
from psa.store.provenance import read_provenance
from psa.store.tables import mode_statistics, std_sentence  # noqa: F401 (psa.results API)

INT, FLOAT, BOOL, STR = "Int64", "float64", "boolean", "str"
# The columns that name a trial, first in both the trials and the loops table.
KEY_TYPES = {
    "arch": STR,
    "depth": INT,
    "width": INT,
    "parameters": INT,
    "model": STR,
    "mode": STR,
    "trial": INT,
}
# Every column of a trials table, in order, with its type.
TRIAL_TYPES = {
    **KEY_TYPES,
    "paired": BOOL,
    "meta_loops": INT,
    "loops_run": INT,
    "val_bounty": FLOAT,
    "bounty_loop": INT,
    "test_accuracy": FLOAT,
    "seconds": FLOAT,
    "trials_in_batch": INT,
    "psa_version": STR,
    "git_revision": STR,
    "torch_version": STR,
    "device": STR,
    "seeds.run": INT,
    "seeds.init": INT,
    "seeds.data": INT,
    "seeds.ablation": INT,
    "seeds.base": INT,
    "hyperparameters.lr": FLOAT,
    "hyperparameters.batch_size": INT,
    "hyperparameters.weight_decay": FLOAT,
    "hyperparameters.dropout": FLOAT,
    "hyperparameters.precision": STR,
    "hyperparameters.hidden_targets": STR,
    "hyperparameters.full_sampling": STR,
    "twin_of": STR,  # a decay trial copied from its none twin (psa.sweep.plan.twin_reason)
    "twin_reason": STR,
    "provenance": STR,
}
# The type of each field of a provenance file (psa.provenance.FIELDS): the runs table's columns,
# and the trials table's as provenance.<field>.
PROVENANCE_TYPES = {
    field: INT if field in ("cudnn_version", "torch_threads") else STR
    for field in PROVENANCE_FIELDS
} | {
    field: BOOL
    for field in (
        "deterministic_algorithms",
        "cudnn_deterministic",
        "cudnn_benchmark",
        "cuda_matmul_allow_tf32",
        "cudnn_allow_tf32",
        "git_dirty",
    )
}
RUN_TYPES = {field: PROVENANCE_TYPES[field] for field in PROVENANCE_FIELDS}
TRIAL_TYPES |= {f"provenance.{f}": t for f, t in RUN_TYPES.items() if f != "id"}
LOOP_TYPES = {
    **KEY_TYPES,
    "loop": INT,
    "val_accuracy": FLOAT,
    "lkg_accuracy": FLOAT,
    "promoted": BOOL,
    "ablation_layer": STR,
    "ablation_neuron": INT,
    "train_seconds": FLOAT,
    "run_id": STR,
    "provenance": STR,
}
LOOP_COLUMNS = list(LOOP_TYPES)
SHAPE_COLUMNS = ["depth", "width", "parameters"]
SCHEMA_NAME = "schema.json"
SOURCE = "source"
SUMMARY_COLUMNS = ["model", "arch", "mode", "n", "mean", "std", "min", "max", "regime"]


@dataclass
class Results:
    trials: pd.DataFrame
    loops: pd.DataFrame
    runs: pd.DataFrame


def load(results_dir: str | Path, *more_dirs: str | Path) -> Results:
    """The trial records, loop logs and run provenance of ``results_dir`` as DataFrames; of
    several dirs, their tables one after the other, with a first column ``source`` naming each
    row's dir as given."""
    if not more_dirs:
        store = ResultsStore(results_dir)
        return Results(trials_table(store), loops_table(store), runs_table(store))
    dirs = [str(d) for d in (results_dir, *more_dirs)]
    repeated = sorted({d for d in dirs if dirs.count(d) > 1})
    if repeated:
        raise PsaError(f"{repeated[0]} is given twice; give each results dir once")
    loaded = {d: load(d) for d in dirs}
    return Results(
        *(
            pd.concat(
                [getattr(tables, t.name).assign(**{SOURCE: d}) for d, tables in loaded.items()],
                ignore_index=True,
            ).pipe(lambda frame: frame[[SOURCE, *frame.columns.drop(SOURCE)]])
            for t in fields(Results)
        )
    )


def summary(
    frame: pd.DataFrame,
    ddof: int = 0,
    column: str | None = None,
    zeror: float = ZEROR_VALIDATION,
) -> pd.DataFrame:
    """Per architecture and mode: n, mean, std, min and max of ``column`` (default the validation
    bounty: ``val_bounty``, or the readers' ``accuracy``) and the architecture's regime
    (psa.report.regimes, on the validation bounties with ZeroR ``zeror``).

    ``ddof`` is the std's delta degrees of freedom: 0 (the default) the population std, as
    upstream's numpy and every table psa writes; 1 the sample std, as pandas' ``std()``. A group
    of n <= ddof trials has no std (NaN). ``frame`` is a trials table of ``load`` (or the long
    form of psa.report.inputs); with a ``source`` or ``model`` column each of them is summarised
    on its own. Rows come by architecture in the frame's order, then by mode; ``attrs["ddof"]``
    says which std it is, and ``std_sentence(ddof)`` says it in a caption's words.
    """
    column = column or ("val_bounty" if "val_bounty" in frame.columns else "accuracy")
    bounty = "val_bounty" if "val_bounty" in frame.columns else "accuracy"
    keys = [key for key in (SOURCE, "model") if key in frame.columns]
    parts = []
    groups = frame.groupby(keys, sort=False, dropna=False) if keys else [((), frame)]
    for values, rows in groups:
        archs = list(dict.fromkeys(rows["arch"]))
        long = rows.rename(columns={column: "accuracy"})[["arch", "mode", "accuracy"]]
        stats = mode_statistics(long.astype({"accuracy": float}), ddof)
        regimes = classify_trials(
            rows.rename(columns={bounty: "accuracy"})[["arch", "mode", "accuracy"]].astype(
                {"accuracy": float}
            ),
            zeror,
            archs,
        ).set_index("arch")["regime"]
        stats["regime"] = stats["arch"].map(regimes)
        stats["arch"] = pd.Categorical(stats["arch"], archs)
        stats["mode"] = pd.Categorical(stats["mode"], [m for m in MODES])
        stats = stats.sort_values(["arch", "mode"]).astype({"arch": STR, "mode": STR})
        for key, value in zip(keys, values if keys else (), strict=True):
            stats.insert(keys.index(key), key, value)
        parts.append(stats)
    columns = keys + [c for c in SUMMARY_COLUMNS if c != "model"]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    table = table[columns].reset_index(drop=True)
    table.attrs.update(frame.attrs)
    table.attrs["ddof"] = ddof
    return table


def comparisons(
    frame: pd.DataFrame, baseline: str = "none", correction: str = "holm"
) -> pd.DataFrame:
    """Each mode against ``baseline`` per architecture, as compare-modes prints it
    (psa.report.compare.COLUMNS): the paired t-test for psa's paired trials, Welch's otherwise,
    p adjusted over every comparison of ``frame`` (``correction``: holm, bh or none)."""
    from psa.report.compare import compare_modes
    from psa.store.records import records_are_paired

    long = frame.rename(columns={"val_bounty": "accuracy"})[["arch", "trial", "mode", "accuracy"]]
    long = long.astype({"trial": int, "accuracy": float})
    return compare_modes(long, records_are_paired(frame), baseline, correction=correction)


def typed(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """``frame`` with exactly the columns of ``types`` first, in order and of their types (NA
    where it lacks one), then any other column it has."""
    for column in types:
        if column not in frame.columns:
            frame[column] = pd.NA
    extra = [column for column in frame.columns if column not in types]
    frame = frame[[*types, *extra]]
    return frame.astype(types)


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
    """One row per provenance file of the dir (columns RUN_TYPES)."""
    return typed(pd.DataFrame(list(read_provenance(store.root).values())), RUN_TYPES)


def trials_table(store: ResultsStore) -> pd.DataFrame:
    """One row per trial record, nested fields flattened with dots, the shape of its network
    and the fields of the provenance it names as ``provenance.<field>`` (columns TRIAL_TYPES)."""
    records = store.records()
    frame = pd.json_normalize(records, sep=".") if records else pd.DataFrame()
    if records:
        shapes = pd.DataFrame(
            [shape(r["arch"], r.get("model", "resmlp")) for r in records], index=frame.index
        )
        frame[SHAPE_COLUMNS] = shapes[SHAPE_COLUMNS]
    if "provenance" in frame.columns:
        runs = runs_table(store)
        runs = runs.rename(columns={c: f"provenance.{c}" for c in runs.columns if c != "id"})
        frame = frame.merge(runs, how="left", left_on="provenance", right_on="id")
        frame = frame.drop(columns="id")
    return typed(frame, TRIAL_TYPES)


def loops_table(store: ResultsStore) -> pd.DataFrame:
    """Every loop-log line of the dir in long form (columns LOOP_TYPES), by log file then loop."""
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
                    "promoted": line.get("promoted"),
                    "ablation_layer": target.get("layer"),
                    "ablation_neuron": target.get("neuron"),
                    "train_seconds": line.get("train_seconds"),
                    "run_id": line.get("run_id"),
                    "provenance": line.get("provenance"),
                }
            )
    return typed(pd.DataFrame(rows, columns=LOOP_COLUMNS), LOOP_TYPES)
