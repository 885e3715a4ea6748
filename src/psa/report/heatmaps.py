"""The six design-space heatmaps of spec section 5, with the fixes of section 9.

Each ``heatmap_*`` function computes the data it plots, draws it on log-log depth/width axes,
saves the PNG and returns that data as a DataFrame (one row per architecture, or per
architecture and ablative mode), so tests can check numbers rather than pixels.

Fixes over upstream: "untrainable" is the classifier's rule 1 (not "all means <= 11.02"); Ablation
Effects tests every ablative mode against ``none`` with a paired t-test when the trials are paired
and Welch's t-test otherwise; architectures without results are hollow grey rings, so no colour
of a scale means "missing".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LinearSegmentedColormap, LogNorm, Normalize, TwoSlopeNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter
from scipy import stats as scipy_stats

from psa.arch import Stack, format_arch
from psa.markdown import is_paired, mode_statistics, model_title, wide_trials
from psa.model import mlp_equivalent_parameter_count
from psa.modes import ABLATIVE_MODES, MODES
from psa.report.plotting import (
    AXIS_LIMITS,
    DPI,
    MODE_COLOURS,
    MODE_LABELS,
    UNTRAINABLE_COLOUR,
    design_axes,
    label_design_points,
    mark_missing,
    new_figure,
    save_figure,
)
from psa.report.regimes import (
    REGIMES,
    ZEROR_VALIDATION,
    architecture_stats,
    classify_trials,
    is_untrainable,
)

HEATMAP_NAMES = (
    "Baseline_Performance",
    "Ablation_Effects",
    "Instability",
    "Winning_Strategy",
    "Parameter_Matching",
    "Regimes",
)
SIGNIFICANCE = 0.05
BENEFICIAL, HARMFUL, NEUTRAL = "#4CAF50", "#E53935", "#A1887F"
BASELINE_COLOURS = ["#1565C0", "#4CAF50"]
INSTABILITY_COLOURS = ["#1B5E20", "#7CB342", "#FFEB3B", "#FF8A65", "#E53935"]
PARAMETER_COLOURS = ["#000000", "#FF0000", "#FF8000", "#FFFF00", "#00FF00", "#00FFFF"]
INSTABILITY_MAX = 5.0
BASELINE_SPLIT = 90.0
BASELINE_TICKS = (20, 40, 60, 80, 90, 92, 94, 96, 98, 100)
POINT_SIZE = 60
SMALLEST, LARGEST = 7.5, 469.0  # marker areas (points^2) of the sized maps


def heatmap_path(output_dir: str | Path, model: str, name: str) -> Path:
    return Path(output_dir) / f"{model_title(model)}_Heatmap_{name}.png"


def design_points(configs: Iterable[list[Stack]]) -> pd.DataFrame:
    """arch, depth, width of every single-stack configuration (others have no L x W position)."""
    rows = [
        (format_arch(stacks), stacks[0][0], stacks[0][1]) for stacks in configs if len(stacks) == 1
    ]
    points = pd.DataFrame(rows, columns=["arch", "depth", "width"])
    return points.drop_duplicates("arch").reset_index(drop=True)


def architecture_summary(
    points: pd.DataFrame, long: pd.DataFrame, zeror: float = ZEROR_VALIDATION
) -> pd.DataFrame:
    """Per point: status (ok, untrainable, missing) and each mode's mean and std (NaN if none)."""
    stats = mode_statistics(long)
    table = points.copy()
    for measure in ("mean", "std"):
        wide = stats.pivot(index="arch", columns="mode", values=measure) if len(stats) else None
        for mode in MODES:
            column = f"{mode}_{measure}"
            if wide is None or mode not in wide.columns:
                table[column] = math.nan
            else:
                table[column] = table["arch"].map(wide[mode]).astype(float)
    statuses = []
    for arch in table["arch"]:
        exact = architecture_stats(long, arch)
        statuses.append(
            "missing" if not exact else "untrainable" if is_untrainable(exact, zeror) else "ok"
        )
    table["status"] = statuses
    return table


def _draw_status(ax, table: pd.DataFrame) -> None:
    dead = table[table["status"] == "untrainable"]
    if len(dead):
        label = f"Untrainable ({len(dead)})"
        ax.scatter(dead["depth"], dead["width"], c=UNTRAINABLE_COLOUR, s=POINT_SIZE, label=label)
    missing = table[table["status"] == "missing"]
    mark_missing(ax, missing["depth"], missing["width"], POINT_SIZE)


def _colourbar(figure, ax, cmap, norm, label: str, extend: str = "neither"):
    mappable = _scalar_mappable(cmap, norm)
    bar = figure.colorbar(mappable, ax=ax, shrink=0.85, pad=0.02, extend=extend)
    bar.set_label(label, fontsize=13)
    bar.ax.tick_params(labelsize=11)
    return bar


def _scalar_mappable(cmap, norm):
    from matplotlib.cm import ScalarMappable

    mappable = ScalarMappable(norm=norm, cmap=cmap)
    mappable.set_array([])
    return mappable


def heatmap_baseline_performance(
    table: pd.DataFrame, path: Path, model: str, zeror: float, dpi: int = DPI
) -> pd.DataFrame:
    """Mean validation bounty of ``none`` on a blue-to-green scale from ZeroR to 100 %."""
    data = table[["arch", "depth", "width", "status", "none_mean"]].copy()
    data.loc[data["status"] == "ok", "status"] = np.where(
        data.loc[data["status"] == "ok", "none_mean"].isna(), "missing", "ok"
    )
    figure = new_figure(12, 10)
    ax = design_axes(figure.subplots(), f"{model_title(model)}: Baseline Performance (none)")
    cmap = LinearSegmentedColormap.from_list("baseline", BASELINE_COLOURS, N=256)
    # Half the scale for the last ten points, where most trainable nets differ.
    norm = TwoSlopeNorm(vmin=zeror, vcenter=BASELINE_SPLIT, vmax=100)
    ok = data[data["status"] == "ok"]
    ax.scatter(
        ok["depth"], ok["width"], c=ok["none_mean"], cmap=cmap, norm=norm, s=POINT_SIZE, zorder=3
    )
    _draw_status(ax, data)
    bar = _colourbar(figure, ax, cmap, norm, "Mean validation bounty of none (%)")
    bar.set_ticks([tick for tick in BASELINE_TICKS if tick >= zeror])
    _legend(ax)
    save_figure(figure, path, dpi)
    return data


def _legend(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=11, framealpha=0.9, **kwargs)


def _effect(wide: pd.DataFrame, mode: str, paired: bool) -> dict:
    """Difference of ``mode`` against ``none``: mean, effect size, p value and the test used."""
    if paired:
        pairs = wide[["none", mode]].dropna()
        differences = pairs[mode] - pairs["none"]
        n = len(pairs)
        result = {"test": "paired t", "n_none": n, "n_mode": n}
        if n < 2:
            return {**result, "mean_difference": math.nan, "effect_size": math.nan, "p": math.nan}
        spread = float(np.std(differences, ddof=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(scipy_stats.ttest_rel(pairs[mode], pairs["none"]).pvalue)
        mean = float(differences.mean())
    else:
        control, treated = wide["none"].dropna(), wide[mode].dropna()
        result = {"test": "Welch t", "n_none": len(control), "n_mode": len(treated)}
        if len(control) < 2 or len(treated) < 2:
            return {**result, "mean_difference": math.nan, "effect_size": math.nan, "p": math.nan}
        spread = math.sqrt((np.var(control, ddof=1) + np.var(treated, ddof=1)) / 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(scipy_stats.ttest_ind(treated, control, equal_var=False).pvalue)
        mean = float(treated.mean() - control.mean())
    effect = abs(mean) / spread if spread > 0 else (math.inf if mean else 0.0)
    return {**result, "mean_difference": mean, "effect_size": effect, "p": p}


def ablation_effects_data(
    table: pd.DataFrame, long: pd.DataFrame, paired: bool, alpha: float = SIGNIFICANCE
) -> pd.DataFrame:
    """One row per (architecture, ablative mode): the test of that mode against ``none``."""
    rows = []
    for point in table.itertuples():
        wide = wide_trials(long, point.arch)
        for mode in ABLATIVE_MODES:
            row = {"arch": point.arch, "depth": point.depth, "width": point.width, "mode": mode}
            row |= _effect(wide, mode, paired)
            if point.status != "ok":
                outcome = point.status
            elif math.isnan(row["mean_difference"]):
                outcome = "too-few-trials"
            elif row["p"] < alpha:
                outcome = "beneficial" if row["mean_difference"] > 0 else "harmful"
            else:
                outcome = "neutral"
            row["outcome"] = outcome
            effect = row["effect_size"]
            capped = 0.0 if math.isnan(effect) else min(effect, 1.0)
            row["size"] = SMALLEST + (LARGEST - SMALLEST) * capped
            rows.append(row)
    return pd.DataFrame(rows)


def heatmap_ablation_effects(
    table: pd.DataFrame,
    long: pd.DataFrame,
    path: Path,
    model: str,
    alpha: float = SIGNIFICANCE,
    dpi: int = DPI,
) -> pd.DataFrame:
    """Three panels (full, hidden, output): each mode against ``none``, coloured by the test."""
    paired = is_paired(long)
    data = ablation_effects_data(table, long, paired, alpha)
    figure = new_figure(25, 9)
    axes = figure.subplots(1, len(ABLATIVE_MODES), sharey=True)
    test = "paired t-test" if paired else "Welch's t-test"
    figure.suptitle(
        f"{model_title(model)}: Ablation Effects against none ({test}, p < {alpha:g}); "
        "marker area grows with |effect size| up to 1",
        fontsize=16,
    )
    colours = {"beneficial": BENEFICIAL, "harmful": HARMFUL, "neutral": NEUTRAL}
    for ax, mode in zip(axes, ABLATIVE_MODES, strict=True):
        design_axes(ax, f"{mode} - none")
        rows = data[data["mode"] == mode]
        for outcome, colour in colours.items():
            chosen = rows[rows["outcome"] == outcome]
            ax.scatter(
                chosen["depth"],
                chosen["width"],
                s=chosen["size"],
                c=colour,
                alpha=0.8,
                edgecolors="black",
                linewidths=0.4,
                zorder=3,
            )
        dead = rows[rows["outcome"] == "untrainable"]
        ax.scatter(dead["depth"], dead["width"], c=UNTRAINABLE_COLOUR, s=POINT_SIZE)
        few = rows[rows["outcome"] == "too-few-trials"]
        ax.scatter(few["depth"], few["width"], marker="x", c="#757575", s=POINT_SIZE)
        missing = rows[rows["outcome"] == "missing"]
        mark_missing(ax, missing["depth"], missing["width"], POINT_SIZE)
        if ax is not axes[0]:
            ax.set_ylabel("")
    legend = [
        _legend_marker(BENEFICIAL, "Significantly better than none"),
        _legend_marker(HARMFUL, "Significantly worse than none"),
        _legend_marker(NEUTRAL, "No significant difference"),
        _legend_marker(UNTRAINABLE_COLOUR, "Untrainable"),
        Line2D([], [], marker="x", linestyle="", color="#757575", label="Fewer than 2 trials"),
        _legend_marker("none", "No results", edge="#9E9E9E"),
    ]
    figure.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize=12)
    save_figure(figure, path, dpi)
    return data


def _legend_marker(colour: str, label: str, edge: str = "black", marker: str = "o") -> Line2D:
    return Line2D(
        [],
        [],
        marker=marker,
        linestyle="",
        markersize=10,
        markerfacecolor=colour,
        markeredgecolor=edge,
        label=label,
    )


def heatmap_instability(
    table: pd.DataFrame, path: Path, model: str, dpi: int = DPI
) -> pd.DataFrame:
    """The largest per-mode standard deviation (ddof=0) of each architecture, 0 to 5 %."""
    data = table[["arch", "depth", "width", "status"]].copy()
    data["max_std"] = table[[f"{mode}_std" for mode in MODES]].max(axis=1, skipna=True)
    figure = new_figure(12, 10)
    ax = design_axes(figure.subplots(), f"{model_title(model)}: Instability (max std over modes)")
    cmap = LinearSegmentedColormap.from_list("instability", INSTABILITY_COLOURS, N=256)
    norm = Normalize(vmin=0, vmax=INSTABILITY_MAX)
    ok = data[data["status"] == "ok"]
    ax.scatter(
        ok["depth"], ok["width"], c=ok["max_std"], cmap=cmap, norm=norm, s=POINT_SIZE, zorder=3
    )
    _draw_status(ax, data)
    _colourbar(figure, ax, cmap, norm, "Largest std of validation bounty over modes (%)", "max")
    _legend(ax)
    save_figure(figure, path, dpi)
    return data


def heatmap_winning_strategy(
    table: pd.DataFrame, path: Path, model: str, dpi: int = DPI
) -> pd.DataFrame:
    """The mode with the highest mean (ties go to the earlier mode of none..output)."""
    data = table[["arch", "depth", "width", "status"]].copy()
    means = table[[f"{mode}_mean" for mode in MODES]]
    data["winner"] = [
        MODES[int(np.nanargmax(row.to_numpy()))] if status == "ok" else status
        for status, (_, row) in zip(data["status"], means.iterrows(), strict=True)
    ]
    figure = new_figure(12, 10)
    ax = design_axes(figure.subplots(), f"{model_title(model)}: Winning Strategy (highest mean)")
    for mode in MODES:
        chosen = data[data["winner"] == mode]
        if len(chosen):
            ax.scatter(
                chosen["depth"],
                chosen["width"],
                c=MODE_COLOURS[mode],
                s=120,
                edgecolors="black",
                linewidths=0.5,
                label=f"{MODE_LABELS[mode]} ({len(chosen)})",
                zorder=3,
            )
    _draw_status(ax, data.rename(columns={"winner": "_"}))
    _legend(ax, title="Winning mode")
    save_figure(figure, path, dpi)
    return data


def heatmap_parameter_matching(
    points: pd.DataFrame, asymmetric: set[str], path: Path, model: str, dpi: int = DPI
) -> pd.DataFrame:
    """Plain-MLP-equivalent parameter counts: colour and area on log scales, shape by matching."""
    data = points.copy()
    data["parameters"] = [
        mlp_equivalent_parameter_count([(depth, width)])
        for depth, width in zip(data["depth"], data["width"], strict=True)
    ]
    data["asymmetric"] = data["arch"].isin(asymmetric)
    logs = np.log10(data["parameters"].astype(float))
    span = logs.max() - logs.min()
    data["size"] = SMALLEST + (LARGEST - SMALLEST) * ((logs - logs.min()) / span if span else 0.0)
    figure = new_figure(12, 10)
    ax = design_axes(figure.subplots(), f"{model_title(model)}: Parameter Matching & Asymmetries")
    cmap = LinearSegmentedColormap.from_list("parameters", PARAMETER_COLOURS, N=256)
    norm = LogNorm(vmin=data["parameters"].min(), vmax=data["parameters"].max())
    for mirrored, marker, label in ((False, "o", "Matched"), (True, "^", "Asymmetric")):
        chosen = data[data["asymmetric"] == mirrored]
        ax.scatter(
            chosen["depth"],
            chosen["width"],
            c=chosen["parameters"],
            cmap=cmap,
            norm=norm,
            s=chosen["size"],
            marker=marker,
            edgecolors="black",
            linewidths=0.5,
            label=label,
            zorder=3,
        )
    ax.plot(AXIS_LIMITS, AXIS_LIMITS, "k--", alpha=0.3, linewidth=1, zorder=1)
    label_design_points(ax, data)
    bar = _colourbar(figure, ax, cmap, norm, "MLP-equivalent parameters")
    ticks = [t for t in (1e3, 1e4, 1e5, 1e6) if norm.vmin <= t <= norm.vmax]
    bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
    bar.ax.yaxis.set_major_formatter(FuncFormatter(_short_count))
    bar.ax.yaxis.set_minor_locator(FixedLocator([]))
    _legend(ax, markerscale=0.6)
    save_figure(figure, path, dpi)
    return data


def _short_count(value: float, _position=None) -> str:
    return f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}K"


def heatmap_regimes(
    points: pd.DataFrame,
    long: pd.DataFrame,
    path: Path,
    model: str,
    zeror: float,
    dpi: int = DPI,
) -> pd.DataFrame:
    """The classifier's regime of every architecture, in the paper's colours."""
    classified = classify_trials(long, zeror, arch_order=points["arch"])
    data = points.merge(classified[["arch", "regime", "rule"]], on="arch", how="left")
    figure = new_figure(12, 10)
    ax = design_axes(figure.subplots(), f"{model_title(model)}: Regimes")
    for key, regime in REGIMES.items():
        chosen = data[data["regime"] == key]
        if len(chosen):
            numeral = f"{regime.numeral} " if regime.numeral else ""
            ax.scatter(
                chosen["depth"],
                chosen["width"],
                c=regime.colour,
                s=120,
                edgecolors="black",
                linewidths=0.5,
                label=f"{numeral}{regime.label} ({len(chosen)})",
                zorder=3,
            )
    _legend(ax, title="Regime")
    save_figure(figure, path, dpi)
    return data


def make_heatmaps(
    long: pd.DataFrame,
    configs: Iterable[list[Stack]],
    asymmetric: Iterable[list[Stack]],
    output_dir: str | Path,
    model: str = "resmlp",
    zeror: float = ZEROR_VALIDATION,
    alpha: float = SIGNIFICANCE,
    dpi: int = DPI,
) -> dict[str, pd.DataFrame]:
    """Write the six heatmaps; return each one's data by name (e.g. ``"Ablation_Effects"``)."""
    points = design_points(configs)
    mirrored = {format_arch(stacks) for stacks in asymmetric}
    table = architecture_summary(points, long, zeror)
    path = {name: heatmap_path(output_dir, model, name) for name in HEATMAP_NAMES}
    return {
        "Baseline_Performance": heatmap_baseline_performance(
            table, path["Baseline_Performance"], model, zeror, dpi
        ),
        "Ablation_Effects": heatmap_ablation_effects(
            table, long, path["Ablation_Effects"], model, alpha, dpi
        ),
        "Instability": heatmap_instability(table, path["Instability"], model, dpi),
        "Winning_Strategy": heatmap_winning_strategy(table, path["Winning_Strategy"], model, dpi),
        "Parameter_Matching": heatmap_parameter_matching(
            points, mirrored, path["Parameter_Matching"], model, dpi
        ),
        "Regimes": heatmap_regimes(points, long, path["Regimes"], model, zeror, dpi),
    }
