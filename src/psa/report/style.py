"""How a figure is printed: file format, print size, fonts, axis limits, palette and labels.

Sizes are the printed size in inches (``column`` 3.5 in wide, ``page`` 7 in wide, or ``W,H``);
fonts are fixed in points so they read the same on paper at that size (7 pt text, 6 pt ticks,
5.5 pt point labels at column width). The format comes from ``--format`` or else the suffix of
the output file (PNG when it has none).
"""

from __future__ import annotations

import argparse
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psa.arguments import MAX_DPI, bounded_int
from psa.errors import PsaError, UsageError

FORMATS = ("png", "pdf", "svg")
SIZE_NAMES = ("column", "page")
LIMITS = ("paper", "data")
PALETTES = ("upstream", "colorblind")
PAPER_LIMITS = (0.8, 4000.0)
LARGEST_INCHES = 40.0
DATA_MARGIN = 0.12  # decades of log axis left around the outermost points with --limits data
# (width, height) in inches per figure kind; "panel" heights are per convergence panel.
SIZES = {
    "column": {"map": (3.5, 3.6), "panels": (3.5, 8.4), "convergence": (3.5, 2.3)},
    "page": {"map": (7.0, 6.0), "panels": (7.0, 6.6), "convergence": (7.0, 2.8)},
}
CONVERGENCE_EXTRA = 0.7  # inches for the title and the legend under the panels
FONTS = {
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "legend.title_fontsize": 6.5,
    "figure.titlesize": 8,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "lines.linewidth": 1.0,
    "pdf.fonttype": 42,  # TrueType in PDF, so text stays text in LaTeX
    "svg.fonttype": "none",
    "svg.hashsalt": "psa",  # stable element ids, so a redrawn figure gives the same file
}
LABEL_POINTS = {"column": 5.5, "page": 6.0}


class FigureError(PsaError, ValueError):
    """A figure that cannot be made as asked (format, size); the message says what to do."""


class FigureFlagsError(FigureError, UsageError):
    """Figure flags that cannot go together (``--format pdf --output-file fig.png``): exit 2."""


def parse_size(text: str) -> str | tuple[float, float]:
    """``column``, ``page`` or ``W,H`` in inches (each above 0 and at most 40)."""
    value = text.strip().lower()
    if value in SIZE_NAMES:
        return value
    parts = value.split(",")
    try:
        width, height = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size {text!r} is not column, page or W,H in inches; give e.g. --size 3.5,3"
        ) from None
    if not all(math.isfinite(x) and 0 < x <= LARGEST_INCHES for x in (width, height)):
        raise argparse.ArgumentTypeError(
            f"size {text!r} is out of range; give widths and heights above 0 and at most "
            f"{LARGEST_INCHES:g} inches"
        )
    return (width, height)


def figure_format(output_file: Path | None, fmt: str | None) -> str:
    """The format asked for by ``--format``, else by the output file's suffix, else PNG."""
    suffix = output_file.suffix.lower().lstrip(".") if output_file is not None else ""
    if suffix and suffix not in FORMATS:
        raise FigureFlagsError(
            f"--output-file {output_file} has suffix .{suffix}; use .png, .pdf or .svg"
        )
    if fmt and suffix and fmt != suffix:
        raise FigureFlagsError(
            f"--format {fmt} disagrees with --output-file {output_file}; drop one of them"
        )
    return fmt or suffix or "png"


@dataclass(frozen=True)
class FigureOptions:
    """Everything about how a figure is printed (not what it shows)."""

    fmt: str = "png"
    size: str | tuple[float, float] = "page"
    limits: str = "paper"
    palette: str = "upstream"
    labels: bool | None = None  # None: the figure's own default
    dpi: int = 300

    def inches(self, kind: str, panels: int = 1) -> tuple[float, float]:
        """Figure size of a ``map``, a row or column of ``panels``, or ``convergence`` plots."""
        if isinstance(self.size, tuple):
            return self.size
        width, height = SIZES[self.size][kind]
        if kind == "convergence":
            return width, height * panels + CONVERGENCE_EXTRA
        return width, height

    @property
    def label_points(self) -> float:
        return label_points(self.inches("map")[0])

    def show_labels(self, default: bool) -> bool:
        return default if self.labels is None else self.labels


def label_points(width_inches: float) -> float:
    """The point labels' font size on a plot ``width_inches`` wide: a column's below a page."""
    return LABEL_POINTS["column" if width_inches < SIZES["page"]["map"][0] else "page"]


@contextmanager
def print_style():
    """Fonts and line widths for print; every figure is built and saved inside this."""
    import matplotlib as mpl

    with mpl.rc_context(FONTS):
        yield


def axis_limits(options: FigureOptions, depths, widths) -> tuple[float, float]:
    """The same limits on both axes: upstream's 0.8-4000, or fitted to the points shown."""
    values = [float(v) for v in [*depths, *widths] if v and math.isfinite(float(v))]
    if options.limits == "paper" or not values:
        return PAPER_LIMITS
    low, high = math.log10(min(values)), math.log10(max(values))
    margin = max(DATA_MARGIN * max(high - low, 1.0), 0.1)
    return 10 ** (low - margin), 10 ** (high + margin)


def add_figure_flags(parser: argparse.ArgumentParser, labels_default: str | None = None) -> None:
    """--format, --size, --limits, --palette, --dpi and (for maps) --labels/--no-labels."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="file format (default: the suffix of --output-file, else png)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default="page",
        help="printed size: column (3.5 in wide), page (7 in wide) or W,H in inches",
    )
    parser.add_argument(
        "--limits",
        choices=LIMITS,
        default="paper",
        help="axes: upstream's 0.8-4000 (paper) or fitted to the architectures shown (data)",
    )
    parser.add_argument(
        "--palette",
        choices=PALETTES,
        default="upstream",
        help="upstream's colours, or colour-blind safe ones (seaborn colorblind, "
        "perceptually uniform colour maps)",
    )
    if labels_default is not None:
        parser.add_argument(
            "--labels",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"label the points L*W, as many as fit; a note names the rest "
            f"(default: {labels_default})",
        )
    parser.add_argument(
        "--dpi",
        type=bounded_int(
            MAX_DPI,
            "dots per inch psa draws (the highest resolution journals ask for; a PNG's pixels "
            "are held in memory at once)",
        ),
        default=300,
        help=f"resolution of PNGs, at most {MAX_DPI}",
    )


def figure_options(args: argparse.Namespace, output_file: Path | None = None) -> FigureOptions:
    return FigureOptions(
        fmt=figure_format(output_file, args.format),
        size=args.size,
        limits=args.limits,
        palette=args.palette,
        labels=getattr(args, "labels", None),
        dpi=args.dpi,
    )
