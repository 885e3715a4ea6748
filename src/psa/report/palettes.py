"""The two palettes of every figure: upstream's colours, or colour-blind safe ones.

``colorblind`` takes its categorical colours from seaborn's colorblind palette (after Okabe and
Ito) and its continuous maps from perceptually uniform ones (viridis, seaborn's flare and crest),
and draws untrainable architectures as black crosses, so no colour scale's dark end is read as
"untrainable".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import seaborn as sns
from matplotlib.colors import Colormap, LinearSegmentedColormap

from psa.report.regimes import REGIMES


@dataclass(frozen=True)
class Palette:
    name: str
    modes: dict[str, str]  # markers of the Winning Strategy map
    lines: dict[str, str]  # convergence lines
    beneficial: str
    harmful: str
    neutral: str
    regimes: dict[str, str]
    baseline: Colormap
    instability: Colormap
    parameters: Colormap
    untrainable: str
    untrainable_marker: str
    boxes: str  # design-space boxes and points


def _ramp(name: str, colours: list[str]) -> Colormap:
    return LinearSegmentedColormap.from_list(name, colours, N=256)


@cache
def palette(name: str) -> Palette:
    if name == "upstream":
        return Palette(
            name="upstream",
            modes={
                "none": "#A1887F",
                "decay": "#651FFF",
                "dropout": "#E040FB",
                "full": "#FF8A65",
                "hidden": "#FFEB3B",
                "output": "#00B0FF",
            },
            # The map colours, darkened where a thin line on white would vanish.
            lines={
                "none": "#6D4C41",
                "decay": "#651FFF",
                "dropout": "#D500F9",
                "full": "#F4511E",
                "hidden": "#F9A825",
                "output": "#0091EA",
            },
            beneficial="#4CAF50",
            harmful="#E53935",
            neutral="#A1887F",
            regimes={key: regime.colour for key, regime in REGIMES.items()},
            baseline=_ramp("baseline", ["#1565C0", "#4CAF50"]),
            instability=_ramp(
                "instability", ["#1B5E20", "#7CB342", "#FFEB3B", "#FF8A65", "#E53935"]
            ),
            parameters=_ramp(
                "parameters", ["#000000", "#FF0000", "#FF8000", "#FFFF00", "#00FF00", "#00FFFF"]
            ),
            untrainable="#212121",
            untrainable_marker="o",
            boxes="#1565C0",
        )
    if name == "colorblind":
        blue, orange, green, vermillion, purple, _, _, grey, _, sky = sns.color_palette(
            "colorblind"
        ).as_hex()
        modes = {
            "none": "#000000",
            "decay": blue,
            "dropout": sky,
            "full": orange,
            "hidden": green,
            "output": purple,
        }
        return Palette(
            name="colorblind",
            modes=modes | {"none": grey},
            lines=modes,
            beneficial=blue,
            harmful=vermillion,
            neutral=grey,
            regimes={
                "beneficial-regularization": green,
                "optimally-sized": vermillion,
                "chaotic-optimization": blue,
                "untrainable": "#000000",
                "unknown": grey,
            },
            baseline=sns.color_palette("viridis", as_cmap=True),
            instability=sns.color_palette("flare", as_cmap=True),
            parameters=sns.color_palette("crest", as_cmap=True),
            untrainable="#000000",
            untrainable_marker="X",
            boxes=blue,
        )
    raise ValueError(f"palette must be upstream or colorblind, not {name!r}")
