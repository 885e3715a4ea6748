"""The upstream trial table and summary markdown of a results dir, rendered from its trial
records (spec section 3): the one writer of ``psa_<model>_trials.md`` and
``psa_<model>_summary.md``; psa.report.inputs reads them back.

Writers emit valid GFM (a 7-cell separator) and print a cell per (arch, trial, mode), ``N/A``
where a trial is missing. Trial tables written from paired records carry the line
``<!-- psa: paired trials -->`` after the title: row i of every mode then shares initial weights
and data order. Upstream tables lack it, and their row i is just the i-th line of each mode's
results, so readers call them unpaired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from psa.arch import parse_key
from psa.atomic import write_text_atomically
from psa.modes import MODE_TITLES, MODES
from psa.store.records import records_are_paired, records_table
from psa.store.results import ResultsStore

PAIRED_MARKER = "<!-- psa: paired trials -->"
NO_TRIALS_LINE = "No successful trials found for this architecture."
ARCH_HEADING = "### Architecture: "
MISSING_CELL = "N/A"
# Summary token for a mode that has neither records nor a reported error (not run yet).
NO_RESULTS = "NO_RESULTS"
MODEL_TITLES = {"resmlp": "ResMLP", "mlp": "SimpleMLP"}
SUMMARY_COLUMNS = ["arch", "parameters", "mode", "mean", "std", "min", "max", "n", "status"]


def std_words(ddof: int) -> str:
    """Which std a table shows, in words: ``population standard deviation (ddof=0)``."""
    kind = {0: "population ", 1: "sample "}.get(ddof, "")
    return f"{kind}standard deviation over the trials (ddof={ddof})"


def std_sentence(ddof: int) -> str:
    """The sentence a table's caption ends with, saying which std it shows."""
    return f"Std is the {std_words(ddof)}."


def model_title(model: str) -> str:
    """``ResMLP`` or ``SimpleMLP``: the titles and figure-file prefixes of a model."""
    try:
        return MODEL_TITLES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODEL_TITLES)}") from None


def _arch_order(frame: pd.DataFrame, arch_order: Iterable | None) -> list[str]:
    present = list(dict.fromkeys(frame["arch"]))
    if arch_order is None:
        return present
    order = list(dict.fromkeys(parse_key(arch).key for arch in arch_order))
    return order + [arch for arch in present if arch not in order]


def render_trials_markdown(
    records: Iterable[Mapping] | pd.DataFrame,
    model: str = "resmlp",
    arch_order: Iterable | None = None,
    paired: bool | None = None,
) -> str:
    """The trial table (spec section 3) as text: one row per trial index, a cell per mode.

    ``paired`` defaults to what the records say (their ``paired`` field).
    """
    frame = records_table(records)
    paired = records_are_paired(frame) if paired is None else paired
    title = model_title(model)
    lines = [f"# Persistent Stochastic Ablation - {title} Raw Trial Data", ""]
    if paired:
        lines += [PAIRED_MARKER, ""]
    lines += ["## Raw Trial Data", ""]
    header = "| Trial | " + " | ".join(MODE_TITLES[mode] for mode in MODES) + " |"
    separator = "|:-----:|" + ":----:|" * len(MODES)
    for arch in _arch_order(frame, arch_order):
        lines += [f"{ARCH_HEADING}{arch}", ""]
        rows = frame[frame["arch"] == arch]
        if rows.empty:
            lines += [NO_TRIALS_LINE, ""]
            continue
        cells = rows.pivot(index="trial", columns="mode", values="val_bounty")
        lines += [header, separator]
        for trial, values in cells.sort_index().iterrows():
            row = [
                MISSING_CELL if pd.isna(values.get(mode)) else f"{values[mode]:.2f}%"
                for mode in MODES
            ]
            lines.append(f"| {trial} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_trials_markdown(
    records: Iterable[Mapping] | pd.DataFrame,
    path: str | Path,
    model: str = "resmlp",
    arch_order: Iterable | None = None,
    paired: bool | None = None,
) -> Path:
    """Write the trial table atomically (a temp file, then os.replace)."""
    return write_text_atomically(path, render_trials_markdown(records, model, arch_order, paired))


def mode_statistics(long: pd.DataFrame, ddof: int = 0) -> pd.DataFrame:
    """Per (arch, mode): mean, std, min, max and n of the numeric accuracies. The std is the
    population one (ddof=0, as upstream's numpy) unless ``ddof`` says otherwise; NaN for
    n <= ddof."""
    numeric = long.dropna(subset=["accuracy"])
    columns = ["arch", "mode", "mean", "std", "min", "max", "n"]
    if numeric.empty:
        return pd.DataFrame(columns=columns)
    grouped = numeric.groupby(["arch", "mode"], sort=False)["accuracy"]
    stats = grouped.agg(
        mean="mean",
        std=lambda values: float(np.std(values, ddof=ddof)) if len(values) > ddof else np.nan,
        min="min",
        max="max",
        n="size",
    )
    return stats.reset_index()[columns]


def render_summary_markdown(
    records: Iterable[Mapping] | pd.DataFrame,
    model: str = "resmlp",
    arch_order: Iterable | None = None,
    errors: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """The summary (spec section 3) as text, with the model's real parameter count.

    ``errors`` maps (arch, mode) to a token (``NO_JOB_FOUND``, ``ERROR: …``) printed instead of the
    statistics. A mode with neither records nor an error prints ``NO_RESULTS``.
    """

    frame = records_table(records)
    errors = {(parse_key(arch).key, mode): token for (arch, mode), token in (errors or {}).items()}
    long = frame.rename(columns={"val_bounty": "accuracy"})
    stats = mode_statistics(long).set_index(["arch", "mode"])
    archs = _arch_order(frame, arch_order)
    archs += [arch for arch, _ in errors if arch not in archs]
    lines = [f"# Persistent Stochastic Ablation - {model_title(model)} Results Summary", ""]
    lines += [f"## Statistical Summary: {std_sentence(0)}", ""]
    for arch in archs:
        parameters = parse_key(arch).parameters(model)
        lines.append(f"Results Shape {{{arch}}} Parameters {{{parameters:,}}}")
        for mode in MODES:
            title = MODE_TITLES[mode]
            if (arch, mode) in errors:
                lines.append(f"* {title}: {errors[arch, mode]}")
            elif (arch, mode) in stats.index:
                row = stats.loc[(arch, mode)]
                lines.append(
                    f"* {title}: Mean={row['mean']:.2f}% | Std={row['std']:.2f}% | "
                    f"Min={row['min']:.2f}% | Max={row['max']:.2f}% (n={int(row['n'])})"
                )
            else:
                lines.append(f"* {title}: {NO_RESULTS}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_summary_markdown(
    records: Iterable[Mapping] | pd.DataFrame,
    path: str | Path,
    model: str = "resmlp",
    arch_order: Iterable | None = None,
    errors: Mapping[tuple[str, str], str] | None = None,
) -> Path:
    """Write the summary atomically (a temp file, then os.replace)."""
    return write_text_atomically(path, render_summary_markdown(records, model, arch_order, errors))


def write_tables(store: ResultsStore, model: str, arch_order: list[str] | None = None) -> None:
    """Render the upstream trial table and summary of a results dir from its records."""
    records = store.records_table(model)
    if records.empty:
        return
    write_trials_markdown(records, store.table_path(model), model=model, arch_order=arch_order)
    write_summary_markdown(records, store.summary_path(model), model=model, arch_order=arch_order)
