"""The compare-modes table as markdown, CSV, JSON or a LaTeX table.

Markdown and LaTeX round for reading (accuracies to 2 decimals, differences and intervals to 3,
p to 3 significant digits); CSV and JSON keep 6 significant digits. Missing values are ``N/A``
in markdown and LaTeX, empty in CSV and ``null`` in JSON.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from psa.report.compare import COLUMNS

FORMATS = ("md", "csv", "json", "latex")
SIGNIFICANT = 6
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no correction"}
EFFECT_SIZE = (
    "Cohen's d_z (paired) or d with the mean of the two variances (Welch), mode - baseline"
)
DEFAULT_LABEL = "tab:compare_modes"


def _significant(value):
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{SIGNIFICANT}g}")
    return value


def _cell(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "N/A"
    return format(value, spec)


def _n(row) -> str:
    return str(row.n_mode) if row.test.startswith("paired") else f"{row.n_mode}/{row.n_baseline}"


def _interval(row, sign: str = "+") -> str:
    if not math.isfinite(row.ci_low):
        return "N/A"
    return f"[{row.ci_low:{sign}.3f}, {row.ci_high:{sign}.3f}]"


def _p(value: float) -> str:
    return _cell(value, ".3g")


def _caption(table: pd.DataFrame) -> str:
    correction = CORRECTION_NAMES[table.attrs["correction"]]
    confidence = f"{table.attrs['confidence'] * 100:g}"
    return (
        f"Each mode against {table.attrs['baseline']}: mean difference of the validation bounty "
        f"(percentage points) with its {confidence}% confidence interval; p adjusted over all "
        f"{int(table['p'].notna().sum())} tests ({correction})"
    )


def render_markdown(table: pd.DataFrame) -> str:
    adjusted = f"p ({table.attrs['correction']})"
    header = ["architecture", "mode", "test", "n", "mean", "baseline mean"]
    header += ["difference", f"{table.attrs['confidence'] * 100:g}% CI", "p", adjusted, "effect"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|:---|:---|:---|---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        cells = [
            row.arch,
            row.mode,
            row.test,
            _n(row),
            _cell(row.mean_mode, ".2f"),
            _cell(row.mean_baseline, ".2f"),
            _cell(row.mean_difference, "+.3f"),
            _interval(row),
            _p(row.p),
            _p(row.p_adjusted),
            _cell(row.effect_size, "+.2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _caption(table) + f". Effect: {EFFECT_SIZE}."]
    return "\n".join(lines) + "\n"


def render_csv(table: pd.DataFrame) -> str:
    rounded = table[COLUMNS].map(_significant)
    return rounded.to_csv(index=False, lineterminator="\n")


def render_json(table: pd.DataFrame) -> str:
    rows = [
        {column: _significant(value) for column, value in zip(COLUMNS, row, strict=True)}
        for row in table[COLUMNS].itertuples(index=False)
    ]
    payload = {
        "baseline": table.attrs["baseline"],
        "correction": table.attrs["correction"],
        "confidence": table.attrs["confidence"],
        "paired": table.attrs["paired"],
        "effect_size": EFFECT_SIZE,
        "comparisons": rows,
    }
    return json.dumps(payload, indent=2) + "\n"


def _latex_number(value: float, spec: str) -> str:
    text = _cell(value, spec)
    if text == "N/A":
        return "--"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = rf"{mantissa} \times 10^{{{int(exponent)}}}"
    return f"${text}$"


def render_latex(table: pd.DataFrame, caption: str | None = None, label: str = DEFAULT_LABEL):
    adjusted = {"holm": "Holm", "bh": "BH", "none": "raw"}[table.attrs["correction"]]
    confidence = f"{table.attrs['confidence'] * 100:g}"
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{caption or _caption(table).replace('%', chr(92) + '%')}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{llrrrrr}",
        r"\toprule",
        r"\textbf{Architecture} & \textbf{Mode} & $n$ & $\Delta$ (pp) & "
        rf"{confidence}\% CI & $p_{{\mathrm{{{adjusted}}}}}$ & $d$ \\",
        r"\midrule",
    ]
    for row in table.itertuples():
        interval = _interval(row)
        cells = [
            f"${row.arch}$",
            rf"\texttt{{{row.mode}}}",
            _n(row),
            _latex_number(row.mean_difference, "+.3f"),
            "--" if interval == "N/A" else f"${interval}$",
            _latex_number(row.p_adjusted, ".3g"),
            _latex_number(row.effect_size, "+.2f"),
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render(table: pd.DataFrame, fmt: str, caption: str | None = None, label: str = DEFAULT_LABEL):
    if fmt == "md":
        return render_markdown(table)
    if fmt == "csv":
        return render_csv(table)
    if fmt == "json":
        return render_json(table)
    if fmt == "latex":
        return render_latex(table, caption, label)
    raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
