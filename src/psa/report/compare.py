"""Each mode against a baseline mode, per architecture: difference, interval, test, adjusted p.

For paired trials (trial t of every mode shares initial weights and batch order, as sweep's do)
the test is the paired t-test on the per-trial differences; otherwise (upstream tables) it is
Welch's t-test. p values are adjusted over every comparison of the grid at once (Holm or
Benjamini-Hochberg); a comparison without a p value (fewer than two trials, or no spread at all)
is left out of that family and keeps NaN.

Effect sizes are Cohen's d_z for paired trials (mean difference over the standard deviation of
the differences) and Cohen's d with the mean of the two variances for Welch's test; both are
signed like the difference (mode minus baseline), infinite for a difference without any spread
(scipy's t is then infinite and p is 0) and NaN for identical trials (no test at all).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from psa.arch import parse_key
from psa.modes import MODES
from psa.report.inputs import wide_trials

CORRECTIONS = ("holm", "bh", "none")
CONFIDENCE = 0.95
PAIRED_TEST, WELCH_TEST = "paired t", "Welch t"
COLUMNS = [
    "arch",
    "mode",
    "baseline",
    "test",
    "n_mode",
    "n_baseline",
    "mean_mode",
    "mean_baseline",
    "mean_difference",
    "ci_low",
    "ci_high",
    "t",
    "df",
    "p",
    "p_adjusted",
    "effect_size",
]


def compare_pair(
    baseline: pd.Series, treated: pd.Series, paired: bool, confidence: float = CONFIDENCE
) -> dict:
    """One comparison of ``treated`` against ``baseline`` (trial-indexed Series, NaN = missing)."""
    if paired:
        both = pd.concat([baseline, treated], axis=1, keys=["b", "t"]).dropna()
        base, mode = both["b"].to_numpy(float), both["t"].to_numpy(float)
    else:
        base, mode = baseline.dropna().to_numpy(float), treated.dropna().to_numpy(float)
    row = {
        "test": PAIRED_TEST if paired else WELCH_TEST,
        "n_mode": len(mode),
        "n_baseline": len(base),
        "mean_mode": float(mode.mean()) if len(mode) else math.nan,
        "mean_baseline": float(base.mean()) if len(base) else math.nan,
    }
    row["mean_difference"] = row["mean_mode"] - row["mean_baseline"]
    undefined = dict.fromkeys(("ci_low", "ci_high", "t", "df", "p", "effect_size"), math.nan)
    if len(mode) < 2 or len(base) < 2:
        return row | undefined
    if paired:
        spread = float(np.std(mode - base, ddof=1))
    else:
        spread = math.sqrt((np.var(mode, ddof=1) + np.var(base, ddof=1)) / 2)
    if spread == 0 and row["mean_difference"] == 0:
        return row | undefined  # identical trials: nothing to test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if paired:
            result = scipy_stats.ttest_rel(mode, base)
        else:
            result = scipy_stats.ttest_ind(mode, base, equal_var=False)
        interval = result.confidence_interval(confidence)
    return row | {
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "t": float(result.statistic),
        "df": float(result.df),
        "p": float(result.pvalue),
        "effect_size": (
            row["mean_difference"] / spread
            if spread
            else math.copysign(math.inf, row["mean_difference"])
        ),
    }


def adjust_p(p_values: Sequence[float], correction: str = "holm") -> np.ndarray:
    """p values adjusted over the family of every finite one; NaN stays NaN.

    ``holm``: Holm's step-down family-wise correction; ``bh``: Benjamini-Hochberg false
    discovery rate; ``none``: unchanged. An adjusted p is never below its raw p nor above 1.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, not {correction!r}")
    values = np.asarray(p_values, dtype=float)
    adjusted = values.copy()
    finite = np.flatnonzero(np.isfinite(values))
    m = len(finite)
    if correction == "none" or m == 0:
        return adjusted
    order = finite[np.argsort(values[finite], kind="stable")]
    ranked = values[order]
    ranks = np.arange(1, m + 1)
    if correction == "holm":
        steps = np.maximum.accumulate((m - ranks + 1) * ranked)
    else:
        steps = np.minimum.accumulate((m / ranks * ranked)[::-1])[::-1]
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def compare_modes(
    long: pd.DataFrame,
    paired: bool,
    baseline: str = "none",
    modes: Iterable[str] | None = None,
    correction: str = "holm",
    arch_order: Iterable[str] | None = None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Every (architecture, mode) against ``baseline``; one row each, in ``COLUMNS``.

    ``long`` is the readers' long form (arch, trial, mode, accuracy). ``modes`` defaults to
    every mode but the baseline; ``arch_order`` to the architectures of ``long``. An
    architecture without trials gets rows with n = 0 and NaN statistics.
    """
    if baseline not in MODES:
        raise ValueError(f"baseline must be one of {MODES}, not {baseline!r}")
    modes = [mode for mode in (modes or MODES) if mode != baseline]
    archs = (
        list(dict.fromkeys(long["arch"]))
        if arch_order is None
        else list(dict.fromkeys(parse_key(arch).key for arch in arch_order))
    )
    rows = []
    for arch in archs:
        wide = wide_trials(long, arch)
        for mode in modes:
            result = compare_pair(wide[baseline], wide[mode], paired, confidence)
            rows.append({"arch": arch, "mode": mode, "baseline": baseline} | result)
    table = pd.DataFrame(rows, columns=[column for column in COLUMNS if column != "p_adjusted"])
    table.insert(COLUMNS.index("p_adjusted"), "p_adjusted", adjust_p(table["p"], correction))
    for column in ("n_mode", "n_baseline"):
        table[column] = table[column].astype(int)
    table.attrs.update(
        baseline=baseline, correction=correction, confidence=confidence, paired=paired
    )
    return table
