"""``export-results``, ``export-tensorboard`` and ``results-value``: a results dir as tables, as
TensorBoard runs, and as one number."""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
from pathlib import Path

import pandas as pd

from psa.arguments import add_shipped_flag, refuse_shipped
from psa.atomic import write_atomically
from psa.checkpoint import DEFAULT_NAME
from psa.cli import CommandParser
from psa.errors import PsaError, UsageError, command_hint, install_hint
from psa.store import ResultsStore

FORMATS = ("csv", "parquet")
STATS = ("mean", "std", "min", "max", "median", "sum", "count", "first")
STATS = (*STATS, "digest")
TABLES = ("trials", "loops", "summary", "comparisons", "integrity")
# What a --where query may hold: columns compared with values, combined with and/or/not and
# arithmetic. pandas evaluates calls, attributes and @variables too, which would let a query (one
# in a claims file from elsewhere, say) run code.
QUERY_NODES = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
    ast.Name, ast.Load, ast.Constant, ast.List, ast.Tuple,
)  # fmt: skip
BACKQUOTED = re.compile(r"`[^`]*`")


class ExportError(PsaError):
    """A results dir or request that cannot be exported; the message says what to do."""


def existing_results_dir(store: ResultsStore, what: str) -> None:
    if not store.root.is_dir():
        raise UsageError(f"{store.root} does not exist; give the --results-dir a sweep wrote")
    if not store.record_files() and not store.log_files():
        raise ExportError(
            f"{store.root} holds no trial records or loop logs; give the --results-dir a sweep "
            f"wrote to {what}"
        )


def results_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="export-results",
        description="Write a results dir as tables: trials (one row per trial, every setting and "
        "provenance field a column), loops (one row per meta-loop of a trial) and runs (one row "
        "per command run). Python: psa.results.load(DIR) returns the same DataFrames.",
    )
    parser.add_argument("--results-dir", type=Path, required=True, help="the results dir to read")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="csv",
        help="csv, or parquet (needs the optional extra parquet: pyarrow)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where trials.<format>, loops.<format> and runs.<format> go (default: "
        "RESULTS_DIR/export)",
    )
    add_shipped_flag(parser, "--output-dir")
    return parser


def results_main(argv: list[str] | None = None) -> None:
    args = results_parser().parse_args(argv)
    refuse_shipped("--output-dir", args.output_dir, args.add_to_shipped)
    from psa import results

    store = ResultsStore(args.results_dir)
    existing_results_dir(store, "export")
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError(
                "--format parquet needs pyarrow, the optional extra parquet; install it with "
                f"{install_hint('parquet')}, or use --format csv"
            ) from None
    output = args.output_dir or store.root / "export"
    tables = results.load(store.root)
    for name in ("trials", "loops", "runs"):
        frame = getattr(tables, name)
        path = output / f"{name}.{args.format}"
        if args.format == "csv":
            data = frame.to_csv(index=False).encode("utf-8")
            write_atomically(path, lambda stream, data=data: stream.write(data))
        else:
            write_atomically(
                path, lambda stream, frame=frame: frame.to_parquet(stream, index=False)
            )
        print(f"{path}: {len(frame)} rows, {len(frame.columns)} columns")
    if args.format == "csv":
        text = json.dumps(results.schema(tables), indent=2) + "\n"
        write_atomically(output / results.SCHEMA_NAME, lambda stream: stream.write(text.encode()))


def tensorboard_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="export-tensorboard",
        description="Write TensorBoard event files of the loop logs: one run per "
        "<arch>/<mode>/t<trial> with the trial's HParams (arch, depth, width, parameters, model, "
        "mode, trial, seeds.*, hyperparameters.*), scalars accuracy/validation, accuracy/lkg and "
        "promotion at step = meta-loop, and accuracy/test at the last loop of a recorded trial. "
        "Rerun after a resume or a merge: the runs are rebuilt from the logs and records. "
        f"View with: {command_hint('tensorboard')} --logdir DIR/tensorboard",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--results-dir", type=Path, help="a sweep's results dir")
    where.add_argument(
        "--model-dir", type=Path, help="a train model dir (its run logs and checkpoint)"
    )
    add_shipped_flag(parser, "--results-dir")
    return parser


def tensorboard_main(argv: list[str] | None = None) -> None:
    args = tensorboard_parser().parse_args(argv)
    refuse_shipped("--results-dir", args.results_dir, args.add_to_shipped)
    from psa.store import tensorboard

    if args.results_dir is not None:
        store = ResultsStore(args.results_dir)
        existing_results_dir(store, "export")
        root, runs = store.root, tensorboard.results_dir_runs(store)
    else:
        root = args.model_dir
        if not root.is_dir():
            raise UsageError(f"{root} does not exist; give the --model-dir train wrote")
        runs = tensorboard.model_dir_runs(root, root / DEFAULT_NAME)
        if not runs:
            raise ExportError(f"{root} holds no train run logs; give the --model-dir train wrote")
    count = tensorboard.rebuild(root, runs)
    print(
        f"{count} runs in {root / tensorboard.TENSORBOARD_DIR}; view with: "
        f"{command_hint('tensorboard')} --logdir {root / tensorboard.TENSORBOARD_DIR}"
    )


def value_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="results-value",
        description="Print one value computed from a results dir's tables (as "
        "psa.results.load and psa.results.summary return them): a statistic of a column over "
        "the rows a filter keeps. check-reproduction's claims use it.",
    )
    parser.add_argument("--results-dir", type=Path, required=True, help="the results dir to read")
    parser.add_argument(
        "--table",
        choices=TABLES,
        default="trials",
        help="trials, loops, summary (per arch and mode: n, mean, std, min, max of the "
        "validation bounty, and the arch's regime), comparisons (each mode against none per "
        "arch, as compare-modes) or integrity (per trial: whether its record agrees with its "
        "complete, consistent loop log)",
    )
    parser.add_argument(
        "--where",
        default=None,
        help="a pandas query keeping rows, e.g. \"arch == '4*17' and mode == 'none'\" "
        "(backquote names with dots: `hyperparameters.lr`); default: every row",
    )
    parser.add_argument(
        "--column",
        default="val_bounty",
        help="the column; for --stat digest, comma-separated columns",
    )
    parser.add_argument(
        "--stat",
        choices=STATS,
        default="mean",
        help="the statistic; first prints the first kept row's value, a word where it is one; "
        "digest the SHA-256 of the columns' values over the kept rows (in any row order)",
    )
    parser.add_argument(
        "--ddof",
        type=int,
        choices=(0, 1),
        default=0,
        help="delta degrees of freedom of --stat std and of the summary table's std: 0 the "
        "population std, as psa's tables (default), 1 the sample std, as pandas'",
    )
    return parser


def value_main(argv: list[str] | None = None) -> None:
    args = value_parser().parse_args(argv)
    print(format_value(compute_value(args)))


_tables: dict[tuple, object] = {}  # (dir, table, its files' sizes and times) -> the table


def cached_table(store: ResultsStore, table: str, ddof: int = 0):
    """A table of the dir, read once per process while its files stay as they are (the claims
    of check-reproduction ask one dir many times)."""
    from psa import results

    if table == "summary":
        return results.summary(cached_table(store, "trials"), ddof=ddof)
    if table == "comparisons":
        return results.comparisons(cached_table(store, "trials"))
    if table == "integrity":
        from psa.integrity import integrity

        return integrity(cached_table(store, "trials"), cached_table(store, "loops"))
    files = store.log_files() if table == "loops" else store.record_files()
    files += sorted((store.root / "provenance").glob("*.json"))
    signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    key = (str(store.root.resolve()), table, signature)
    if key not in _tables:
        if len(_tables) > 8:
            _tables.clear()
        _tables[key] = getattr(results, f"{table}_table")(store)
    return _tables[key]


def refuse_code_in_query(where: str, table: str) -> None:
    """UsageError unless ``where`` only compares columns with values (QUERY_NODES)."""
    # pandas reads @name as a variable of the caller: parsed without the @, it is a plain name.
    plain = BACKQUOTED.sub("column", where).replace("@", "")
    try:
        tree = ast.parse(plain.strip(), mode="eval")
    except SyntaxError:
        return  # pandas names what is wrong with it
    found = next((node for node in ast.walk(tree) if not isinstance(node, QUERY_NODES)), None)
    if found is not None:
        raise UsageError(
            f"--where {where!r} is not a query of the {table} table: it may only compare "
            f"columns with values (and, or, not, in, arithmetic); remove its {type(found).__name__}"
        )


def compute_value(args: argparse.Namespace) -> float | str:
    store = ResultsStore(args.results_dir)
    existing_results_dir(store, "read")
    frame = cached_table(store, args.table, args.ddof)
    if args.where:
        refuse_code_in_query(args.where, args.table)
        try:
            frame = frame.query(args.where, engine="python", local_dict={}, global_dict={})
        except Exception as error:  # pandas raises many kinds for a bad expression
            raise UsageError(
                f"--where {args.where!r} is not a query of the {args.table} "
                f"table ({type(error).__name__}: {error})"
            ) from None
    columns = args.column.split(",") if args.stat == "digest" else [args.column]
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise UsageError(
            f"the {args.table} table has no column {missing[0]!r}; its columns are "
            f"{', '.join(map(str, frame.columns))}"
        )
    if args.stat == "digest":
        from psa.integrity import digest

        return digest(frame, columns)
    column = frame[args.column]
    if args.stat == "count":
        return float(column.count())
    if column.empty:
        raise UsageError(f"--where {args.where!r} keeps no row of the {args.table} table")
    if args.stat == "first":
        return plain_value(column.iloc[0])
    try:
        numbers = column.astype(float)
    except (TypeError, ValueError):
        raise UsageError(
            f"column {args.column!r} holds words; only --stat count or first reads it"
        ) from None
    if args.stat == "std":
        return float(numbers.std(ddof=args.ddof))
    return float(getattr(numbers, args.stat)())


def plain_value(value) -> float | str:
    """A table cell as a number (NaN when empty), or as the word it is."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, str):
        return value
    return float(value)


def format_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return "nan" if math.isnan(value) else f"{value:.10g}"
