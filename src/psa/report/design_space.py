"""The tested design space: every configuration as the box it spans on log-log depth/width axes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from psa.arch import Arch
from psa.report.heatmaps import design_points
from psa.report.labels import Panel, label_panels
from psa.report.palettes import palette
from psa.report.plotting import POINT_AREA, area_scale, design_axes, new_figure, save_figure
from psa.report.style import FigureOptions, axis_limits, print_style
from psa.store.tables import model_title

PAPER_LIMITS = (0.8, 3000)  # upstream's design-space axes


def design_space_path(output_dir: str | Path, model: str, fmt: str = "png") -> Path:
    return Path(output_dir) / f"{model_title(model)}_Testing_Design_Space.{fmt}"


def design_space_figure(
    configs: Iterable[Arch],
    path: str | Path,
    model: str = "resmlp",
    options: FigureOptions | None = None,
) -> pd.DataFrame:
    """Draw each L*W as a translucent box from (1, 1) to (L, W) with a labelled corner point.

    The corner sits exactly at (L, W); upstream drew the box with size L x W from (1, 1), which
    put the corner at (L + 1, W + 1), visibly off on log axes for shallow nets. Returns (and
    writes as CSV) one row per configuration: arch, depth, width, the box corners x0, y0, x1, y1
    and the point's colour, size and label. Configurations with several stacks have no single
    (L, W) and are left out.
    """
    options = options or FigureOptions()
    data = design_points(configs)
    colour = palette(options.palette).boxes
    with print_style():
        figure = new_figure(options.inches("map"))
        limits = axis_limits(options, data["depth"], data["width"])
        if options.limits == "paper":
            limits = PAPER_LIMITS
        title = f"{model_title(model)} Design Space (logarithmic scale)"
        ax = design_axes(figure.subplots(), title, limits)
        data["x0"], data["y0"] = 1.0, 1.0
        data["x1"], data["y1"] = data["depth"].astype(float), data["width"].astype(float)
        data["colour"] = colour
        data["size"] = POINT_AREA * area_scale(options.inches("map")[0])
        labelled = options.show_labels(True)
        data["label"] = data["arch"] if labelled else ""
        # Wide and deep boxes first, squares on top, as upstream layered them.
        order = np.argsort((data["depth"] == data["width"]).to_numpy(), kind="stable")
        for row in data.iloc[order].itertuples():
            ax.add_patch(
                Rectangle(
                    (row.x0, row.y0),
                    row.x1 - row.x0,
                    row.y1 - row.y0,
                    linewidth=0.5,
                    edgecolor=colour,
                    facecolor="cyan",
                    alpha=0.12,
                )
            )
        ax.scatter(data["depth"], data["width"], s=data["size"], c=colour, zorder=4)
        if labelled:
            panel = Panel(ax, np.arange(len(data)))
            data = label_panels(figure, data, options.label_points, [panel])
        save_figure(figure, path, options, data)
    return data
