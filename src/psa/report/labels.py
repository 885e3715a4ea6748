"""``L*W`` point labels that never overlap each other, a marker or the axes' edge.

Labels are placed on the figure's final layout, in display space, against the measured size of
each rendered text. Squares (L = W) crowd the diagonal, so when several of them would collide
they fan out as upstream's Parameter Matching does: stacked rows along a quadratic Bezier curve
in the empty wedge below the diagonal, in as many columns as the height needs, joined to their
points by leader lines. Every other label takes the first free spot around its point (above
wide nets and below deep ones, as upstream, then the other sides), moving outwards with a leader
line when all near spots are taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.text import Annotation

from psa.report.style import FigureError

PAD_POINTS = 2.0  # clearance around every label
LEADER = {"arrowstyle": "-", "color": "#9E9E9E", "linewidth": 0.4, "shrinkA": 0}
TEXT = {"fontfamily": "monospace", "color": "#212121", "zorder": 5}
CROWDED_SQUARES = 4  # squares with a near neighbour before the diagonal fans out
MAX_COLUMNS = 6
RINGS = 40  # how far (in label heights) a label may move out from its point
LEADER_SAMPLES = 64  # points along a leader line checked against markers and labels


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        across = self.x0 < other.x1 and other.x0 < self.x1
        return across and self.y0 < other.y1 and other.y0 < self.y1

    def inside(self, frame: Box) -> bool:
        across = self.x0 >= frame.x0 and self.x1 <= frame.x1
        return across and self.y0 >= frame.y0 and self.y1 <= frame.y1


@dataclass(frozen=True)
class Placement:
    index: int
    x: float  # display position of the text anchor
    y: float
    ha: str
    leader: bool
    box: Box


def settle_layout(ax: Axes):
    """Run the layout engine once and freeze it, so display positions stay put."""
    figure = ax.figure
    figure.draw_without_rendering()
    figure.set_layout_engine("none")
    return figure.canvas.get_renderer()


def _text_sizes(ax: Axes, texts: list[str], fontsize: float, renderer) -> np.ndarray:
    sizes = []
    for text in texts:
        artist = ax.text(0, 0, text, fontsize=fontsize, **TEXT)
        extent = artist.get_window_extent(renderer)
        sizes.append((extent.width, extent.height))
        artist.remove()
    return np.array(sizes).reshape(-1, 2)


class Taken:
    """The boxes already occupied (markers and placed labels), checked all at once."""

    def __init__(self, boxes: list[Box]):
        self.boxes = np.array([(b.x0, b.y0, b.x1, b.y1) for b in boxes]).reshape(-1, 4)

    def copy(self) -> Taken:
        copied = Taken([])
        copied.boxes = self.boxes.copy()
        return copied

    def add(self, box: Box) -> None:
        self.boxes = np.vstack([self.boxes, (box.x0, box.y0, box.x1, box.y1)])

    def free(self, box: Box, frame: Box, extra: list[Box] = ()) -> bool:
        if not box.inside(frame) or any(box.overlaps(other) for other in extra):
            return False
        b = self.boxes
        hits = (box.x0 < b[:, 2]) & (b[:, 0] < box.x1) & (box.y0 < b[:, 3]) & (b[:, 1] < box.y1)
        return not hits.any()


def _directions(depth: float, width: float) -> list[tuple[float, float]]:
    above, below = [(0, 1), (1, 1), (-1, 1)], [(0, -1), (1, -1), (-1, -1)]
    sides = [(1, 0), (-1, 0)]
    if width > depth:
        return above + sides + below
    if width < depth:
        return below + sides + above
    return [(1, -1), (1, 0), (0, -1), (-1, 1), (0, 1), (-1, 0), (1, 1), (-1, -1)]


def _gaps(box: Box, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """How far ``box`` is from the edge of every marker (negative where it covers one)."""
    dx = np.maximum(np.maximum(box.x0 - points[:, 0], points[:, 0] - box.x1), 0.0)
    dy = np.maximum(np.maximum(box.y0 - points[:, 1], points[:, 1] - box.y1), 0.0)
    return np.hypot(dx, dy) - radii


def _greedy(index, points, radii, size, pad, frame, taken, directions) -> Placement | None:
    """The first free spot around point ``index`` whose label reads as that point's."""
    (px, py), (w, h) = points[index], size
    gap = radii[index] + pad / 2
    w, h = w + pad, h + pad  # half a pad of clearance on every side
    for ring in range(RINGS + 1):
        extra = ring * (h + pad)
        for dx, dy in directions:
            norm = math.hypot(dx, dy)
            reach = gap + extra
            cx = px + dx / norm * reach + dx * (w / 2)
            cy = py + dy / norm * reach + dy * (h / 2)
            # Above or below a point near the edge, slide along the edge rather than give up.
            if dx == 0:
                cx = min(max(cx, frame.x0 + w / 2), frame.x1 - w / 2)
            if dy == 0:
                cy = min(max(cy, frame.y0 + h / 2), frame.y1 - h / 2)
            box = Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            if not taken.free(box, frame):
                continue
            others = np.delete(_gaps(box, points, radii), index).min(initial=math.inf)
            # Beside its point, nearer it than any other marker; further out, half a label
            # height clear of every other marker, joined by a leader line that crosses none.
            if ring == 0 and others <= pad / 2:
                continue
            if ring > 0 and (
                others < h / 2 or _leader_hits_marker(points, radii, index, (cx, cy))
            ):
                continue
            return Placement(-1, cx, cy, "center", ring > 0, box)
    return None


def _fan(squares, points, radii, sizes, pad, frame, taken, diagonal_x) -> list[Placement] | None:
    """Rows along a Bezier curve below the diagonal; None when no column count fits.

    Row r sits r label heights above the first row; its x follows a quadratic Bezier from just
    right of the diagonal to the right edge, bowing away from the diagonal; with several
    columns each row holds that many consecutive squares side by side.
    """
    order = sorted(squares, key=lambda i: points[i][1])
    width = float(sizes[order, 0].max())
    height = float(sizes[order, 1].max())
    step = height + pad
    column_step = width + 2 * pad
    for columns in range(1, MAX_COLUMNS + 1):
        rows = math.ceil(len(order) / columns)
        x2 = frame.x1 - pad - (columns - 1) * column_step - width
        y0 = frame.y0 + pad + height / 2
        while y0 + (rows - 1) * step + height / 2 <= frame.y1:
            placed = _fan_rows(order, columns, y0, step, column_step, x2, points, radii, sizes,
                               pad, frame, taken, diagonal_x)  # fmt: skip
            if placed is not None:
                return placed
            y0 += step
    return None


def _fan_rows(
    order, columns, y0, step, column_step, x2, points, radii, sizes, pad, frame, taken, diagonal_x
):
    rows = math.ceil(len(order) / columns)
    top = y0 + (rows - 1) * step
    x0 = diagonal_x(y0 + step) + 2 * pad
    if x2 <= x0:
        return None
    placed: list[Placement] = []
    for rank, index in enumerate(order):
        row, column = divmod(rank, columns)
        y = y0 + row * step
        t = math.sqrt((y - y0) / (top - y0)) if top > y0 else 0.0
        x = x0 + (x2 - x0) * (1 - (1 - t) ** 2) + column * column_step
        w, h = sizes[index]
        box = Box(x - pad / 2, y - (h + pad) / 2, x + w + pad / 2, y + (h + pad) / 2)
        if box.x0 <= diagonal_x(box.y1) + pad:
            return None
        if not taken.free(box, frame, [p.box for p in placed]):
            return None
        if _leader_hits_marker(points, radii, index, (x, y)):
            return None
        placed.append(Placement(index, x, y, "left", True, box))
    return placed


def _leader_hits_marker(points, radii, index, end) -> bool:
    """Whether a leader line from point ``index`` to ``end`` passes through another marker, one
    that overlaps the point's own (as squares crowd the diagonal) aside: no line avoids it."""
    start = points[index]
    t = np.linspace(0.0, 1.0, LEADER_SAMPLES)[:, None]
    line = start + (np.asarray(end) - start) * t
    apart = np.hypot(*(points - start).T) > radii + radii[index]
    others = np.flatnonzero(apart)
    reach = np.hypot(line[:, None, 0] - points[others, 0], line[:, None, 1] - points[others, 1])
    return bool((reach <= radii[others]).any())


def _crowded_squares(squares, points, sizes) -> list[int]:
    """The run of squares, by depth, from the first to the last one with a near neighbour."""
    order = sorted(squares, key=lambda i: points[i][1])
    near = [
        math.dist(points[a], points[b]) < 2 * max(sizes[a][1], sizes[b][1])
        for a, b in zip(order, order[1:], strict=False)
    ]
    if sum(near) + 1 < CROWDED_SQUARES:
        return []
    first = near.index(True)
    last = len(near) - 1 - near[::-1].index(True)
    return order[first : last + 2]


def place_labels(ax: Axes, data: pd.DataFrame, fontsize: float) -> list[Annotation]:
    """Label each row (columns arch, depth, width, size = marker area in points^2)."""
    if data.empty:
        return []
    renderer = settle_layout(ax)
    scale = ax.figure.dpi / 72
    pad = PAD_POINTS * scale
    points = ax.transData.transform(data[["depth", "width"]].to_numpy(float))
    radii = np.sqrt(data["size"].to_numpy(float)) / 2 * scale
    sizes = _text_sizes(ax, list(data["arch"]), fontsize, renderer)
    frame = Box(*ax.bbox.extents)
    markers = [Box(x - r, y - r, x + r, y + r) for (x, y), r in zip(points, radii, strict=True)]
    taken = Taken(markers)
    to_data = ax.transData.inverted()

    def diagonal_x(y: float) -> float:
        value = to_data.transform((points[0][0], y))[1]
        return float(ax.transData.transform((value, value))[0])

    squares = [i for i, row in enumerate(data.itertuples()) if row.depth == row.width]
    placements: list[Placement] = []
    crowded = _crowded_squares(squares, points, sizes)
    fanned = (
        _fan(crowded, points, radii, sizes, pad, frame, taken, diagonal_x) if crowded else None
    )
    for placement in fanned or []:
        placements.append(placement)
        taken.add(placement.box)
    done = {placement.index for placement in placements}
    crowding = [
        sum(math.dist(points[i], other) < 4 * sizes[i][1] for other in points)
        for i in range(len(data))
    ]
    rest = sorted(set(range(len(data))) - done)
    orders = [sorted(rest, key=lambda i: -crowding[i]), rest, rest[::-1]]
    tries = [
        _place_in_order(order, data, points, radii, sizes, pad, frame, taken) for order in orders
    ]
    placed = [attempt for attempt in tries if attempt[0] is not None]
    if not placed:
        raise FigureError(
            f"no room to label {tries[0][1]} at this size; use a larger --size or --no-labels"
        )
    # The order that needs the fewest leader lines, then the least distance from the points.
    best = min(placed, key=lambda attempt: attempt[1])[0]
    placements += best
    return [_draw(ax, data.iloc[p.index], p, radii[p.index] / scale, fontsize) for p in placements]


def _place_in_order(order, data, points, radii, sizes, pad, frame, taken: Taken):
    """Greedy placements in ``order`` and their cost, or (None, the arch that found no room)."""
    taken = taken.copy()
    placements, leaders, distance = [], 0, 0.0
    for index in order:
        row = data.iloc[index]
        directions = _directions(row["depth"], row["width"])
        found = _greedy(index, points, radii, sizes[index], pad, frame, taken, directions)
        if found is None:
            return None, row["arch"]
        placements.append(Placement(index, found.x, found.y, found.ha, found.leader, found.box))
        taken.add(found.box)
        leaders += found.leader
        distance += math.dist(points[index], (found.x, found.y))
    return placements, (leaders, distance)


def _draw(ax: Axes, row, placement: Placement, radius_points: float, fontsize: float) -> Annotation:
    target = ax.transData.inverted().transform((placement.x, placement.y))
    arrow = {**LEADER, "shrinkB": radius_points} if placement.leader else None
    annotation = ax.annotate(
        row["arch"],
        (row["depth"], row["width"]),
        xytext=tuple(target),
        textcoords="data",
        ha=placement.ha,
        va="center",
        fontsize=fontsize,
        arrowprops=arrow,
        annotation_clip=False,
        **TEXT,
    )
    annotation.set_in_layout(False)
    return annotation


def label_or_note(ax: Axes, data: pd.DataFrame, options) -> pd.DataFrame:
    """Label the points; when they do not fit and labels were only the figure's default, draw
    none and say so in ``attrs["note"]`` (an explicit ``--labels`` raises FigureError)."""
    try:
        place_labels(ax, data, options.label_points)
    except FigureError as error:
        if options.labels:
            raise
        data = data.assign(label="")
        data.attrs["note"] = f"drawn without point labels: {error}"
    return data
