"""The six design-space heatmaps of spec section 5, with the fixes of section 9.

Each ``heatmap_*`` function computes the data it plots, draws it on log-log depth/width axes,
saves the figure with a CSV of that data beside it and returns the data as a DataFrame (one row
per architecture, or per architecture and ablative mode).

Fixes over upstream: "untrainable" is the classifier's rule 1 (not "all means <= 11.02"); Ablation
Effects tests every ablative mode against ``none`` with compare-modes' tests (paired t-test for
paired trials, Welch's otherwise) and p adjusted over the whole grid; architectures without
results are hollow grey rings, so no colour of a scale means "missing".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm, to_hex
from matplotlib.ticker import FixedLocator, FuncFormatter

from psa.arch import Arch
from psa.modes import ABLATIVE_MODES, MODES
from psa.report.compare import compare_modes
from psa.report.inputs import is_paired
from psa.report.labels import Panel, label_panels
from psa.report.palettes import Palette, palette
from psa.report.plotting import (
    CLASS_AREA,
    MODE_LABELS,
    POINT_AREA,
    SIZED_AREAS,
    area_scale,
    design_axes,
    draw_points,
    figure_legend,
    legend_marker,
    missing_style,
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
from psa.report.style import FigureOptions, axis_limits, label_points, print_style
from psa.store.tables import mode_statistics, model_title

HEATMAP_NAMES = (
    "Baseline_Performance",
    "Ablation_Effects",
    "Instability",
    "Winning_Strategy",
    "Parameter_Matching",
    "Regimes",
)
LABELLED_BY_DEFAULT = {"Parameter_Matching", "Regimes"}
SIGNIFICANCE = 0.05
INSTABILITY_MAX = 5.0
BASELINE_SPLIT = 90.0
BASELINE_TICKS = (20, 40, 60, 80, 90, 92, 94, 96, 98, 100)
EFFECT_KEY = (0.25, 0.5, 1.0)  # |effect size| of the marker-size key on Ablation Effects
COLOURBAR = {"shrink": 0.8, "pad": 0.02, "aspect": 30}


def heatmap_path(output_dir: str | Path, model: str, name: str, fmt: str = "png") -> Path:
    return Path(output_dir) / f"{model_title(model)}_Heatmap_{name}.{fmt}"


def design_points(configs: Iterable[Arch]) -> pd.DataFrame:
    """arch, depth, width of every single-stack configuration (others have no L x W position)."""
    rows = [(arch.key, *arch.stacks[0]) for arch in configs if len(arch.stacks) == 1]
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


class _Map:
    """One single-panel map being drawn: its figure, axes, palette and marker scale."""

    def __init__(self, options: FigureOptions, title: str, data: pd.DataFrame):
        self.options = options
        self.palette: Palette = palette(options.palette)
        self.figure = new_figure(options.inches("map"))
        limits = axis_limits(options, data["depth"], data["width"])
        self.ax = design_axes(self.figure.subplots(), title, limits)
        self.scale = area_scale(options.inches("map")[0])

    def status_styles(self, data: pd.DataFrame) -> pd.DataFrame:
        """Colour the untrainable (black) and missing (hollow ring) rows."""
        data = data.copy()
        dead = data["status"] == "untrainable"
        data.loc[dead, "colour"] = self.palette.untrainable
        data.loc[dead, "edge"] = "black"
        data.loc[dead, "marker"] = self.palette.untrainable_marker
        data.loc[dead, "size"] = POINT_AREA * self.scale
        data.loc[dead, "legend"] = f"Untrainable ({int(dead.sum())})"
        missing = data["status"] == "missing"
        if missing.any():
            data.loc[missing] = missing_style(data[missing], POINT_AREA * self.scale)
        return data

    def colourbar(self, cmap, norm, label: str, extend: str = "neither"):
        mappable = ScalarMappable(norm=norm, cmap=cmap)
        bar = self.figure.colorbar(mappable, ax=self.ax, extend=extend, **COLOURBAR)
        bar.set_label(label)
        return bar

    def finish(
        self, data: pd.DataFrame, path: Path, labelled: bool, columns: int = 3
    ) -> pd.DataFrame:
        figure_legend(self.figure, draw_points(self.ax, data), columns)
        data = data.assign(label=data["arch"] if labelled else "")
        if labelled:
            panel = Panel(self.ax, np.arange(len(data)))
            data = label_panels(self.figure, data, self.options.label_points, [panel])
        save_figure(self.figure, path, self.options, data)
        return data


def _hex(cmap, norm, values) -> list[str]:
    return [to_hex(cmap(norm(value))) for value in values]


def heatmap_baseline_performance(
    table: pd.DataFrame, path: Path, model: str, zeror: float, options: FigureOptions
) -> pd.DataFrame:
    """Mean validation bounty of ``none`` on a colour scale from ZeroR to 100 %."""
    data = table[["arch", "depth", "width", "status", "none_mean"]].copy()
    data.loc[(data["status"] == "ok") & data["none_mean"].isna(), "status"] = "missing"
    with print_style():
        drawing = _Map(options, f"{model_title(model)}: Baseline Performance (none)", data)
        cmap = drawing.palette.baseline
        # Half the scale for the last ten points, where most trainable nets differ.
        norm = TwoSlopeNorm(vmin=zeror, vcenter=BASELINE_SPLIT, vmax=100)
        data = data.assign(
            colour=_hex(cmap, norm, data["none_mean"].fillna(100)),
            edge="black",
            marker="o",
            size=POINT_AREA * drawing.scale,
            legend="",
        )
        data = drawing.status_styles(data)
        bar = drawing.colourbar(cmap, norm, "Mean validation bounty of none (%)")
        bar.set_ticks([tick for tick in BASELINE_TICKS if tick >= zeror])
        return drawing.finish(data, path, options.show_labels(False))


def ablation_effects_data(
    table: pd.DataFrame,
    long: pd.DataFrame,
    paired: bool,
    alpha: float = SIGNIFICANCE,
    correction: str = "holm",
) -> pd.DataFrame:
    """One row per (architecture, ablative mode): compare-modes' test of it against ``none``.

    Only architectures that trained are tested and counted in the correction; ``outcome`` is
    beneficial or harmful when the adjusted p is below ``alpha``.
    """
    tested = table.loc[table["status"] == "ok", "arch"]
    compared = compare_modes(
        long, paired, "none", ABLATIVE_MODES, correction, arch_order=tested
    ).drop(columns="baseline")
    frame = table[["arch", "depth", "width", "status"]].merge(
        pd.DataFrame({"mode": ABLATIVE_MODES}), how="cross"
    )
    data = frame.merge(compared, on=["arch", "mode"], how="left")
    outcomes = []
    for row in data.itertuples():
        if row.status != "ok":
            outcomes.append(row.status)
        elif math.isnan(row.p_adjusted):
            few = min(row.n_mode, row.n_baseline) < 2
            outcomes.append("too-few-trials" if few else "no-spread")
        elif row.p_adjusted < alpha:
            outcomes.append("beneficial" if row.mean_difference > 0 else "harmful")
        else:
            outcomes.append("neutral")
    data["outcome"] = outcomes
    data.attrs.update(correction=correction, alpha=alpha, paired=paired)
    return data.drop(columns="status")


def _effect_area(effect: float, difference: float, scale: float) -> float:
    """Marker area grows with |effect size| up to 1 (no spread and a difference: the largest)."""
    smallest, largest = (area * scale for area in SIZED_AREAS)
    if math.isnan(effect):
        capped = 1.0 if difference and not math.isnan(difference) else 0.0
    else:
        capped = min(abs(effect), 1.0)
    return smallest + (largest - smallest) * capped


def heatmap_ablation_effects(
    table: pd.DataFrame,
    long: pd.DataFrame,
    path: Path,
    model: str,
    options: FigureOptions,
    alpha: float = SIGNIFICANCE,
    correction: str = "holm",
) -> pd.DataFrame:
    """Three panels (full, hidden, output): each mode against ``none``, coloured by the test."""
    paired = is_paired(long)
    data = ablation_effects_data(table, long, paired, alpha, correction)
    colours = palette(options.palette)
    width, height = options.inches("panels")
    rows, columns = _panel_grid(width, height)
    with print_style():
        figure = new_figure((width, height))
        grid = figure.subplots(rows, columns, sharex=True, sharey=True).ravel()
        axes, spare = grid[: len(ABLATIVE_MODES)], grid[len(ABLATIVE_MODES) :]
        scale = area_scale(width / columns)
        styles = {
            "beneficial": (colours.beneficial, "black", "o", "Significantly better than none"),
            "harmful": (colours.harmful, "black", "o", "Significantly worse than none"),
            "neutral": (colours.neutral, "black", "o", "No significant difference"),
            "no-spread": (colours.neutral, "black", "D", "Identical to none in every trial"),
            "untrainable": (
                colours.untrainable,
                "black",
                colours.untrainable_marker,
                "Untrainable",
            ),
            "too-few-trials": ("#757575", "none", "x", "Fewer than 2 trials"),
            "missing": ("none", "#9E9E9E", "o", "No results"),
        }
        data["colour"] = [styles[o][0] for o in data["outcome"]]
        data["edge"] = [styles[o][1] for o in data["outcome"]]
        data["marker"] = [styles[o][2] for o in data["outcome"]]
        data["legend"] = [styles[o][3] for o in data["outcome"]]
        sized = data["outcome"].isin(["beneficial", "harmful", "neutral", "no-spread"])
        data["size"] = [
            _effect_area(effect, difference, scale) if is_sized else POINT_AREA * scale
            for effect, difference, is_sized in zip(
                data["effect_size"], data["mean_difference"], sized, strict=True
            )
        ]
        labelled = options.show_labels(True)
        data["label"] = data["arch"] if labelled else ""
        limits = axis_limits(options, data["depth"], data["width"])
        for ax, mode in zip(axes, ABLATIVE_MODES, strict=True):
            design_axes(ax, f"{mode} - none", limits)
            draw_points(ax, data[data["mode"] == mode])
            index = list(axes).index(ax)
            if index % columns:
                ax.set_ylabel("")
            if index + columns < len(axes):  # a panel below shows the depth axis
                ax.set_xlabel("")
            else:
                ax.xaxis.set_tick_params(labelbottom=True)
        test = "paired t-test" if paired else "Welch's t-test"
        adjusted = {"holm": "Holm-adjusted ", "bh": "BH-adjusted ", "none": ""}[correction]
        figure.suptitle(
            f"{model_title(model)}: Ablation Effects against none\n"
            f"({test}, {adjusted}p < {alpha:g})"
        )
        present = [key for key in styles if (data["outcome"] == key).any()]
        handles = [
            legend_marker(styles[key][0], styles[key][3], styles[key][1], styles[key][2])
            for key in present
        ]
        smallest, largest = (area * scale for area in SIZED_AREAS)
        sizes = [
            legend_marker(
                "white",
                f"|d| {'>= ' if effect == 1 else ''}{effect:g}",
                marker="o",
                size=math.sqrt(smallest + (largest - smallest) * effect),
            )
            for effect in EFFECT_KEY
        ]
        if spare.size:  # the 2 x 2 grid's fourth cell holds the key
            spare[0].set_axis_off()
            spare[0].legend(handles=handles + sizes, loc="center", frameon=False)
        else:
            figure_legend(figure, handles + sizes, columns=3 if columns == 1 else 4)
        if labelled:
            panels = [
                Panel(ax, np.flatnonzero(data["mode"] == mode), f"{mode} - none")
                for ax, mode in zip(axes, ABLATIVE_MODES, strict=True)
            ]
            # Each panel is about a column wide: its labels are a column's size.
            data = label_panels(figure, data, label_points(width / columns), panels)
        save_figure(figure, path, options, data)
    return data


def _panel_grid(width: float, height: float) -> tuple[int, int]:
    """Rows and columns of the three ablation panels: stacked on a tall figure, side by side on
    a wide one, else two by two (the fourth cell holding the key), so a page-wide figure has
    panels wide enough to label."""
    if width < height * 0.75:
        return len(ABLATIVE_MODES), 1
    if width >= height * 2.5:
        return 1, len(ABLATIVE_MODES)
    return 2, 2


def heatmap_instability(
    table: pd.DataFrame, path: Path, model: str, options: FigureOptions
) -> pd.DataFrame:
    """The largest per-mode standard deviation (ddof=0) of each architecture, 0 to 5 %."""
    data = table[["arch", "depth", "width", "status"]].copy()
    data["max_std"] = table[[f"{mode}_std" for mode in MODES]].max(axis=1, skipna=True)
    with print_style():
        title = f"{model_title(model)}: Instability (max std over modes)"
        drawing = _Map(options, title, data)
        cmap = drawing.palette.instability
        norm = Normalize(vmin=0, vmax=INSTABILITY_MAX)
        data = data.assign(
            colour=_hex(cmap, norm, data["max_std"].fillna(0).clip(upper=INSTABILITY_MAX)),
            edge="black",
            marker="o",
            size=POINT_AREA * drawing.scale,
            legend="",
        )
        data = drawing.status_styles(data)
        drawing.colourbar(cmap, norm, "Largest std of validation bounty over modes (%)", "max")
        return drawing.finish(data, path, options.show_labels(False))


def heatmap_winning_strategy(
    table: pd.DataFrame, path: Path, model: str, options: FigureOptions
) -> pd.DataFrame:
    """The mode with the highest mean (ties go to the earlier mode of none..output)."""
    data = table[["arch", "depth", "width", "status"]].copy()
    means = table[[f"{mode}_mean" for mode in MODES]]
    data["winner"] = [
        MODES[int(np.nanargmax(row.to_numpy()))] if status == "ok" else status
        for status, (_, row) in zip(data["status"], means.iterrows(), strict=True)
    ]
    with print_style():
        title = f"{model_title(model)}: Winning Strategy (highest mean)"
        drawing = _Map(options, title, data)
        modes = drawing.palette.modes
        counts = data["winner"].value_counts()
        won = data["winner"].isin(MODES)
        data = data.assign(
            colour=[modes.get(winner, "none") for winner in data["winner"]],
            edge="black",
            marker="o",
            size=CLASS_AREA * drawing.scale,
            legend=[
                f"{MODE_LABELS[w]} ({counts[w]})" if w in MODES else "" for w in data["winner"]
            ],
        )
        data = pd.concat([data[won], drawing.status_styles(data[~won])])
        order = {mode: i for i, mode in enumerate(MODES)}
        rank = data["winner"].map(order).fillna(len(MODES))
        data = data.iloc[np.argsort(rank.to_numpy(), kind="stable")]
        return drawing.finish(data, path, options.show_labels(False), columns=3)


def heatmap_parameter_matching(
    points: pd.DataFrame, asymmetric: set[str], path: Path, model: str, options: FigureOptions
) -> pd.DataFrame:
    """Plain-MLP-equivalent parameter counts: colour and area on log scales, shape by matching."""
    data = points.copy()
    data["parameters"] = [
        Arch([(depth, width)]).mlp_parameters
        for depth, width in zip(data["depth"], data["width"], strict=True)
    ]
    data["asymmetric"] = data["arch"].isin(asymmetric)
    with print_style():
        title = f"{model_title(model)}: Parameter Matching & Asymmetries"
        drawing = _Map(options, title, data)
        logs = np.log10(data["parameters"].astype(float))
        span = logs.max() - logs.min()
        smallest, largest = (area * drawing.scale for area in SIZED_AREAS)
        normalised = (logs - logs.min()) / span if span else 0.0
        cmap = drawing.palette.parameters
        norm = LogNorm(vmin=data["parameters"].min(), vmax=data["parameters"].max())
        matched = (~data["asymmetric"]).sum()
        data = data.assign(
            colour=_hex(cmap, norm, data["parameters"]),
            edge="black",
            marker=np.where(data["asymmetric"], "^", "o"),
            size=smallest + (largest - smallest) * normalised,
            legend=np.where(
                data["asymmetric"],
                f"Asymmetric ({int(data['asymmetric'].sum())})",
                f"Matched ({int(matched)})",
            ),
        )
        ax = drawing.ax
        ax.plot(ax.get_xlim(), ax.get_ylim(), "k--", alpha=0.3, linewidth=0.6, zorder=1)
        bar = drawing.colourbar(cmap, norm, "MLP-equivalent parameters")
        ticks = [t for t in (1e3, 1e4, 1e5, 1e6) if norm.vmin <= t <= norm.vmax]
        bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(_short_count))
        bar.ax.yaxis.set_minor_locator(FixedLocator([]))
        return drawing.finish(data, path, options.show_labels(True), columns=2)


def _short_count(value: float, _position=None) -> str:
    return f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}K"


def heatmap_regimes(
    points: pd.DataFrame,
    long: pd.DataFrame,
    path: Path,
    model: str,
    zeror: float,
    options: FigureOptions,
) -> pd.DataFrame:
    """The classifier's regime of every architecture, in the paper's colours."""
    classified = classify_trials(long, zeror, arch_order=points["arch"])
    data = points.merge(classified[["arch", "regime", "rule"]], on="arch", how="left")
    with print_style():
        drawing = _Map(options, f"{model_title(model)}: Regimes", data)
        colours = drawing.palette.regimes
        counts = data["regime"].value_counts()

        def legend(key: str) -> str:
            regime = REGIMES[key]
            numeral = f"{regime.numeral} " if regime.numeral else ""
            return f"{numeral}{regime.label} ({counts[key]})"

        data = data.assign(
            colour=[colours[key] for key in data["regime"]],
            edge="black",
            marker=[
                drawing.palette.untrainable_marker if key == "untrainable" else "o"
                for key in data["regime"]
            ],
            size=CLASS_AREA * drawing.scale,
            legend=[legend(key) for key in data["regime"]],
        )
        order = {key: i for i, key in enumerate(REGIMES)}
        data = data.sort_values("regime", key=lambda s: s.map(order), kind="stable")
        return drawing.finish(data, path, options.show_labels(True), columns=3)


def make_heatmaps(
    long: pd.DataFrame,
    configs: Iterable[Arch],
    asymmetric: Iterable[Arch],
    output_dir: str | Path,
    model: str = "resmlp",
    zeror: float = ZEROR_VALIDATION,
    alpha: float = SIGNIFICANCE,
    options: FigureOptions | None = None,
    correction: str = "holm",
) -> dict[str, pd.DataFrame]:
    """Write the six heatmaps; return each one's data by name (e.g. ``"Ablation_Effects"``)."""
    options = options or FigureOptions()
    points = design_points(configs)
    mirrored = {arch.key for arch in asymmetric}
    table = architecture_summary(points, long, zeror)
    path = {name: heatmap_path(output_dir, model, name, options.fmt) for name in HEATMAP_NAMES}
    return {
        "Baseline_Performance": heatmap_baseline_performance(
            table, path["Baseline_Performance"], model, zeror, options
        ),
        "Ablation_Effects": heatmap_ablation_effects(
            table, long, path["Ablation_Effects"], model, options, alpha, correction
        ),
        "Instability": heatmap_instability(table, path["Instability"], model, options),
        "Winning_Strategy": heatmap_winning_strategy(
            table, path["Winning_Strategy"], model, options
        ),
        "Parameter_Matching": heatmap_parameter_matching(
            points, mirrored, path["Parameter_Matching"], model, options
        ),
        "Regimes": heatmap_regimes(points, long, path["Regimes"], model, zeror, options),
    }
