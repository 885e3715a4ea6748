"""Shared figure plumbing: headless figures, the log-log design-space axes, point layers, saves.

A figure's points are drawn from one tidy table (a row per point: arch, depth, width, the
values shown, and the ``colour``, ``edge``, ``marker``, ``size`` and ``legend`` they are drawn
with), and that same table is written as CSV beside the figure, so the CSV holds exactly what
is plotted.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from psa.atomic import write_atomically, write_text_atomically
from psa.report.style import FigureOptions

MISSING_EDGE = "#9E9E9E"  # hollow grey ring: an architecture without results
MODE_LABELS = {
    "none": "Control (None)",
    "decay": "Weight Decay",
    "dropout": "Dropout",
    "full": "Full Ablation",
    "hidden": "Hidden Ablation",
    "output": "Output Ablation",
}
POINT_COLUMNS = ["colour", "edge", "marker", "size", "legend", "label"]
# Marker areas (points^2) on a 7 in wide map; narrower maps scale them down linearly.
POINT_AREA = 22.0
CLASS_AREA = 30.0
SIZED_AREAS = (6.0, 170.0)
EDGE_WIDTH = 0.4
UNFILLED_MARKERS = ("x", "+")
VARIED_COLOUR = "#BDBDBD"  # legend entry of a group whose points differ in colour
LEGEND_COLUMN_INCHES = 1.75  # room for one legend column such as "I Beneficial Regularization"


def new_figure(size: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no display, no pyplot state); other formats at save."""
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def design_axes(ax: Axes, title: str, limits: tuple[float, float]) -> Axes:
    """Log-log axes of depth (x) against width (y)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("Depth L (layers)")
    ax.set_ylabel("Width W (neurons per layer)")
    ax.set_title(title)
    ax.grid(True, which="major", linestyle="--", linewidth=0.4, alpha=0.4)
    return ax


def area_scale(ax_width_inches: float) -> float:
    """Marker areas relative to a 7 in wide map."""
    return min(max(ax_width_inches / 7.0, 0.35), 2.0)


def missing_style(frame: pd.DataFrame, area: float) -> pd.DataFrame:
    """Architectures without results: hollow grey rings, so no colour of a scale is reused."""
    return frame.assign(
        colour="none",
        edge=MISSING_EDGE,
        marker="o",
        size=area,
        legend=f"No results ({len(frame)})",
    )


def draw_points(ax: Axes, rows: pd.DataFrame, zorder: int = 3) -> list[Line2D]:
    """One scatter per (marker, legend) group, drawn from the rows' own style columns.

    Returns a legend entry per named group: its colour when the group has one, else grey.
    """
    handles = []
    for (marker, legend), group in rows.groupby(["marker", "legend"], sort=False, dropna=False):
        hollow = (group["colour"] == "none").all()
        unfilled = marker in UNFILLED_MARKERS
        ax.scatter(
            group["depth"],
            group["width"],
            s=group["size"].to_numpy(float),
            c=None if hollow else list(group["colour"]),
            facecolors="none" if hollow else None,
            edgecolors=None if unfilled else list(group["edge"]),
            marker=marker,
            linewidths=1.0 if hollow else EDGE_WIDTH,
            zorder=zorder,
        )
        if legend:
            colours = group["colour"].unique()
            colour = colours[0] if len(colours) == 1 else VARIED_COLOUR
            handles.append(legend_marker(colour, legend, group["edge"].iloc[0], marker))
    return handles


def legend_marker(
    colour: str, label: str, edge: str = "black", marker: str = "o", size: float = 5
) -> Line2D:
    return Line2D(
        [],
        [],
        marker=marker,
        linestyle="",
        markersize=size,
        markerfacecolor=colour,
        markeredgecolor=edge,
        markeredgewidth=EDGE_WIDTH,
        label=label,
    )


def figure_legend(figure: Figure, handles: list, columns: int = 3) -> None:
    """A legend under the plots, outside every axes, so it never covers a point or label."""
    if handles:
        fits = max(1, int(figure.get_figwidth() // LEGEND_COLUMN_INCHES))
        figure.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(columns, fits, len(handles)),
            frameon=False,
        )


def csv_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".csv")


def save_figure(
    figure: Figure, path: str | Path, options: FigureOptions, data: pd.DataFrame
) -> Path:
    """Write the figure in its format, then the table of what it plots beside it (.csv)."""
    metadata = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[options.fmt]

    def write(stream) -> None:
        figure.savefig(stream, format=options.fmt, dpi=options.dpi, metadata=metadata)

    write_atomically(path, write)
    write_text_atomically(csv_path(path), data.to_csv(index=False, lineterminator="\n"))
    return Path(path)
