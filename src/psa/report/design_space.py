"""The tested design space: every configuration as the box it spans on log-log depth/width axes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from psa.arch import Stack
from psa.markdown import model_title
from psa.report.heatmaps import design_points
from psa.report.plotting import DPI, design_axes, label_design_points, new_figure, save_figure

LIMITS = (0.8, 3000)
POINT_SIZE = 30.0


def design_space_path(output_dir: str | Path, model: str) -> Path:
    return Path(output_dir) / f"{model_title(model)}_Testing_Design_Space.png"


def design_space_figure(
    configs: Iterable[list[Stack]], path: str | Path, model: str = "resmlp", dpi: int = DPI
) -> pd.DataFrame:
    """Draw each L*W as a translucent box from (1, 1) to (L, W) with a labelled corner point.

    The corner sits exactly at (L, W); upstream drew the box with size L x W from (1, 1), which
    put the corner at (L + 1, W + 1), visibly off on log axes for shallow nets. Returns one row
    per configuration: arch, depth, width and the box corners x0, y0, x1, y1. Configurations
    with several stacks have no single (L, W) and are left out.
    """
    data = design_points(configs)
    data["x0"], data["y0"] = 1.0, 1.0
    data["x1"], data["y1"] = data["depth"].astype(float), data["width"].astype(float)
    data["size"] = POINT_SIZE
    figure = new_figure(12, 10)
    ax = design_axes(
        figure.subplots(), f"{model_title(model)} Design Space (logarithmic scale)", LIMITS
    )
    # Wide and deep boxes first, squares on top, as upstream layered them.
    order = np.argsort((data["depth"] == data["width"]).to_numpy(), kind="stable")
    for row in data.iloc[order].itertuples():
        ax.add_patch(
            Rectangle(
                (row.x0, row.y0),
                row.x1 - row.x0,
                row.y1 - row.y0,
                linewidth=0.8,
                edgecolor="#1565C0",
                facecolor="cyan",
                alpha=0.12,
            )
        )
    ax.scatter(data["depth"], data["width"], s=POINT_SIZE, c="#1565C0", zorder=4)
    label_design_points(ax, data)
    save_figure(figure, path, dpi)
    return data.drop(columns="size")
