"""Shared figure plumbing: headless Agg figures, the log-log design-space axes, atomic saves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from psa.atomic import write_atomically

# Figure objects draw through Agg directly, so no display and no pyplot state are involved.
DPI = 300
AXIS_LIMITS = (0.8, 4000)
MISSING_EDGE = "#9E9E9E"  # hollow grey ring: an architecture without results

MODE_COLOURS = {
    "none": "#A1887F",
    "decay": "#651FFF",
    "dropout": "#E040FB",
    "full": "#FF8A65",
    "hidden": "#FFEB3B",
    "output": "#00B0FF",
}
MODE_LABELS = {
    "none": "Control (None)",
    "decay": "Weight Decay",
    "dropout": "Dropout",
    "full": "Full Ablation",
    "hidden": "Hidden Ablation",
    "output": "Output Ablation",
}
UNTRAINABLE_COLOUR = "#212121"
SQUARE_BAND_START = (8.0, 5.3)  # (depth, width) of the first square's label
SQUARE_BAND_END_WIDTH = 200.0
SPARSE_SQUARES_GAP = 0.08  # decades between squares that leave room to label them in place


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def design_axes(ax: Axes, title: str, limits: tuple[float, float] = AXIS_LIMITS) -> Axes:
    """Log-log axes of depth (x) against width (y)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("Depth L (layers)", fontsize=13)
    ax.set_ylabel("Width W (neurons per layer)", fontsize=13)
    ax.set_title(title, fontsize=15)
    ax.grid(True, which="both", linestyle="--", alpha=0.3)
    return ax


def mark_missing(ax: Axes, depths, widths, size: float = 60) -> None:
    """Architectures without results: hollow grey rings, so no colour of a scale is reused."""
    if len(depths):
        ax.scatter(
            depths,
            widths,
            s=size,
            facecolors="none",
            edgecolors=MISSING_EDGE,
            linewidths=1.2,
            label=f"No results ({len(depths)})",
        )


def save_figure(figure: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Save a PNG atomically (psa.atomic)."""
    return write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=dpi))


def label_design_points(ax: Axes, data: pd.DataFrame) -> None:
    """Label points (columns arch, depth, width, size): wide nets above, deep ones below.

    Many squares crowd the diagonal, so their labels then sit on a straight band in the empty
    wedge below it and above the W*4 row, joined to their points by leader lines.
    """
    text = {"fontsize": 7, "fontfamily": "monospace", "color": "#212121", "zorder": 5}
    radius = np.sqrt(data["size"]) / 2 + 2  # points
    squares = []
    for point, offset in zip(data.itertuples(), radius, strict=True):
        if point.width > point.depth:
            ax.annotate(
                point.arch, (point.depth, point.width), xytext=(0, offset),
                textcoords="offset points", ha="center", va="bottom", **text,
            )  # fmt: skip
        elif point.width < point.depth:
            ax.annotate(
                point.arch, (point.depth, point.width), xytext=(0, -offset),
                textcoords="offset points", ha="center", va="top", **text,
            )  # fmt: skip
        else:
            squares.append(point)
    squares.sort(key=lambda point: point.depth)
    logs = np.log10([point.depth for point in squares])
    if len(squares) < 2 or np.diff(logs).min() >= SPARSE_SQUARES_GAP:
        for point in squares:
            offset = math.sqrt(point.size) / 2 + 2
            ax.annotate(
                point.arch, (point.depth, point.width), xytext=(offset, -offset),
                textcoords="offset points", ha="left", va="top", **text,
            )  # fmt: skip
        return
    band = np.linspace(0, 1, len(squares))[:, None] if len(squares) > 1 else np.zeros((1, 1))
    start = np.log10(SQUARE_BAND_START)
    end = np.log10([ax.get_xlim()[1] / 2.2, SQUARE_BAND_END_WIDTH])  # room for "115*115"
    positions = start + band * (end - start)
    for point, (x, y) in zip(squares, positions, strict=True):
        edge = math.sqrt(point.size) / 2
        ax.annotate(
            point.arch,
            (point.depth, point.width),
            xytext=(10**x, 10**y),
            ha="left",
            va="center",
            arrowprops={"arrowstyle": "-", "color": "#9E9E9E", "linewidth": 0.5, "shrinkB": edge},
            **text,
        )
