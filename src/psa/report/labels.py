"""``L*W`` point labels that never overlap each other, a marker, a leader line or the axes' edge.

Labels are placed on the figure's final layout, in display space, against the measured size of
each rendered text. A leader line runs from its point to its label's anchor (the centre, or the
near end of a fanned label; matplotlib draws the part outside the label) and passes through no
other label, across no other leader line and through no marker but its own point's (and those
overlapping it, which no line avoids); no label sits on another's leader line.

Squares (L = W) crowd the diagonal, so when several of them would collide they fan out as
upstream's Parameter Matching does: one label a row along a quadratic Bezier curve in the empty
wedge below the diagonal, joined to their points by leader lines. A run too long for one fan
puts every other square in a mirrored fan above the diagonal, a longer one every second or third
square, the rest then going one by one. Every other label takes the first free spot around its
point (above wide nets and below deep ones, as upstream, then the other sides), moving outwards
with a leader line when all near spots are taken; points with results go before hollow rings.
A label that finds no room is left out: the points are labelled as far as they fit, and a note
under the figure and ``attrs["note"]`` of the returned table name the rest.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Annotation

PAD_POINTS = 2.0  # clearance around every label
LEADER = {"arrowstyle": "-", "color": "#9E9E9E", "linewidth": 0.4, "shrinkA": 0}
TEXT = {"fontfamily": "monospace", "color": "#212121", "zorder": 5}
NOTE = {"color": "#616161", "ha": "left", "va": "bottom", "multialignment": "left"}
CROWDED_SQUARES = 4  # squares with a near neighbour before the diagonal fans out
MAX_STRIDE = 3  # a fan that holds no more than every third square of a crowded run is none
RINGS = 6  # how far (in label heights) a label may move out from its point
SWAP_NEIGHBOURS = 4  # labelled neighbours a left-out point may move to make room
FAN_REACH = (0.0, 0.2, 0.45, 0.7, 1.0)  # fractions of the way from the diagonal to the edge
FAN_TRIES = 300  # fans tried, shortest leader lines first, before the squares go one by one
FAN_LEADER = 0.3  # the longest leader line of a fan, as a share of the plot's width
TOUCH = 1e-6  # display units: rows that touch do not overlap for rounding
NOTE_LINES = 3  # a longer list of unlabelled points is given as a count under the figure
LAYOUT_PASSES = 3  # the note under the figure changes the layout the labels were placed on


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def row(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    def turned(self) -> Box:
        """The box turned half a turn about the origin (the mirror fan's space)."""
        return Box(-self.x1, -self.y1, -self.x0, -self.y0)


@dataclass(frozen=True)
class Placement:
    index: int
    x: float  # display position of the text anchor, where a leader line ends
    y: float
    ha: str
    leader: bool
    box: Box

    @property
    def anchor(self) -> tuple[float, float]:
        """The anchor as a fraction of the text's extent (matplotlib's ``relpos``)."""
        return {"left": 0.0, "center": 0.5, "right": 1.0}[self.ha], 0.5


def crossings(segments: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether each segment (x0, y0, x1, y1) passes through the inside of each box
    (x0, y0, x1, y1): a (segments, boxes) array; touching an edge is no crossing."""
    segments = np.asarray(segments, float).reshape(-1, 1, 4)
    boxes = np.asarray(boxes, float).reshape(1, -1, 4)
    start, delta = segments[..., :2], segments[..., 2:] - segments[..., :2]
    low = np.zeros((segments.shape[0], boxes.shape[1]))
    high = np.ones_like(low)
    for axis in (0, 1):
        d = delta[..., axis]
        near = boxes[..., axis] - start[..., axis]
        far = boxes[..., axis + 2] - start[..., axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = near / d, far / d
        parallel = np.broadcast_to(d == 0, low.shape)
        outside = parallel & ((near >= 0) | (far <= 0))
        low = np.where(parallel, low, np.maximum(low, np.minimum(t0, t1)))
        high = np.where(parallel, high, np.minimum(high, np.maximum(t0, t1)))
        high = np.where(outside, -1.0, high)
    return low < high


def segments_cross(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Whether each segment of ``first`` crosses each of ``second`` (rows x0, y0, x1, y1): a
    (first, second) array; segments that only touch or run parallel do not cross."""
    a = np.asarray(first, float).reshape(-1, 1, 4)
    b = np.asarray(second, float).reshape(1, -1, 4)
    r, s = a[..., 2:] - a[..., :2], b[..., 2:] - b[..., :2]
    gap = b[..., :2] - a[..., :2]

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    denominator = cross(r, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        t, u = cross(gap, s) / denominator, cross(gap, r) / denominator
    return (denominator != 0) & (t > 0) & (t < 1) & (u > 0) & (u < 1)


def settle_layout(figure: Figure):
    """Run the layout engine once (if it is not frozen yet) and freeze it, so display positions
    stay put."""
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
    """What a new label must keep clear of: markers and placed labels (boxes), and the leader
    lines of placed labels (segments from a point to its label's anchor)."""

    def __init__(self, markers: list[Box]):
        self.boxes = np.array([box.row for box in markers]).reshape(-1, 4)
        self.labels = np.empty((0, 4))
        self.leaders = np.empty((0, 4))

    def copy(self) -> Taken:
        copied = Taken([])
        copied.boxes, copied.labels, copied.leaders = self.boxes, self.labels, self.leaders
        return copied

    def add(self, placement: Placement, point) -> None:
        self.add_all([placement], [point])

    def add_all(self, placements: Sequence[Placement], points) -> None:
        """Take the labels of ``placements`` (of ``points``, one each) and their leader lines."""
        if not placements:
            return
        rows = np.array([placement.box.row for placement in placements])
        self.boxes = np.vstack([self.boxes, rows])
        self.labels = np.vstack([self.labels, rows])
        leaders = [
            (*point, p.x, p.y) for p, point in zip(placements, points, strict=True) if p.leader
        ]
        self.leaders = np.vstack([self.leaders, np.reshape(leaders, (-1, 4))])

    def clear(self, boxes: np.ndarray, frame: Box) -> np.ndarray:
        """Which of the candidate ``boxes`` (rows x0, y0, x1, y1) lie inside the frame and on
        no box taken: the cheap part of ``free``."""
        inside = (boxes[:, 0] >= frame.x0) & (boxes[:, 2] <= frame.x1)
        inside &= (boxes[:, 1] >= frame.y0) & (boxes[:, 3] <= frame.y1)
        b, c = self.boxes[None], boxes[:, None]
        on = (c[..., 0] < b[..., 2] - TOUCH) & (b[..., 0] < c[..., 2] - TOUCH)
        on &= (c[..., 1] < b[..., 3] - TOUCH) & (b[..., 1] < c[..., 3] - TOUCH)
        return inside & ~on.any(axis=1)

    def free(self, boxes: np.ndarray, frame: Box, leaders: np.ndarray | None = None) -> np.ndarray:
        """Which of the candidate ``boxes`` fit: inside the frame, on nothing taken, crossed by
        no leader line, and (with ``leaders``, a segment each or NaN for none) with a leader
        line through no label and across no other leader line."""
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        fits = self.clear(boxes, frame)
        rest = np.flatnonzero(fits)
        fits[rest] = ~crossings(self.leaders, boxes[rest]).any(axis=0)
        if leaders is not None:
            leaders = np.asarray(leaders, float).reshape(-1, 4)[rest]
            fits[rest] &= ~crossings(leaders, self.labels).any(axis=1)
            fits[rest] &= ~segments_cross(leaders, self.leaders).any(axis=1)
        return fits


def _directions(depth: float, width: float) -> list[tuple[float, float]]:
    """Where a label goes, first to last: above wide nets and below deep ones (as upstream),
    below-right of squares, then the other sides, then the directions between them."""
    above, below = [(0, 1), (1, 1), (-1, 1)], [(0, -1), (1, -1), (-1, -1)]
    sides = [(1, 0), (-1, 0)]
    if width > depth:
        principal = above + sides + below
    elif width < depth:
        principal = below + sides + above
    else:
        principal = [(1, -1), (1, 0), (0, -1), (-1, 1), (0, 1), (-1, 0), (1, 1), (-1, -1)]
    corners = [(x, y) for x in (1, -1) for y in (1, -1)]
    return principal + [(2 * x, y) for x, y in corners] + [(x, 2 * y) for x, y in corners]


def _gaps(boxes: np.ndarray, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """How far each box is from the edge of every marker (negative where it covers one)."""
    b = np.asarray(boxes, float).reshape(-1, 1, 4)
    dx = np.maximum(np.maximum(b[..., 0] - points[:, 0], points[:, 0] - b[..., 2]), 0.0)
    dy = np.maximum(np.maximum(b[..., 1] - points[:, 1], points[:, 1] - b[..., 3]), 0.0)
    return np.hypot(dx, dy) - radii


def _greedy(index, points, radii, size, pad, frame, taken, directions, rings) -> Placement | None:
    """The first free spot around point ``index`` whose label reads as that point's: ring by
    ring outwards (``rings`` of them, 0 beside the point), each in the order of ``directions``."""
    (px, py), (w, h) = points[index], size
    w, h = w + pad, h + pad  # half a pad of clearance on every side
    rings, (dx, dy) = np.repeat(rings, len(directions)), np.tile(directions, (len(rings), 1)).T
    norm = np.hypot(dx, dy)
    reach = radii[index] + pad / 2 + rings * (h + pad)
    cx = px + dx / norm * reach + np.sign(dx) * (w / 2)
    cy = py + dy / norm * reach + np.sign(dy) * (h / 2)
    # Above or below a point near the edge, slide along the edge rather than give up.
    cx = np.where(dx == 0, np.clip(cx, frame.x0 + w / 2, frame.x1 - w / 2), cx)
    cy = np.where(dy == 0, np.clip(cy, frame.y0 + h / 2, frame.y1 - h / 2), cy)
    boxes = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    near = np.flatnonzero(taken.clear(boxes, frame))  # most spots fail here: check the rest
    boxes, cx, cy, led = boxes[near], cx[near], cy[near], rings[near] > 0
    leaders = np.column_stack([np.full_like(cx, px), np.full_like(cy, py), cx, cy])
    fits = taken.free(boxes, frame, np.where(led[:, None], leaders, np.nan))
    # Beside its point, nearer it than any other marker; further out, half a label height
    # clear of every other marker, joined by a leader line that crosses none.
    gaps = _gaps(boxes, points, radii)
    others = np.delete(gaps, index, axis=1).min(axis=1, initial=math.inf)
    texts = boxes + np.array([pad, pad, -pad, -pad]) / 2
    text_gaps = _gaps(texts, points, radii)
    nearest = np.delete(text_gaps, index, axis=1).min(axis=1, initial=math.inf)
    beside = (others > pad / 2) & (nearest > text_gaps[:, index])
    fits &= np.where(led, others >= h / 2, beside)
    fits &= ~(led & _leaders_hit_markers(points, radii, index, np.column_stack([cx, cy]), pad / 2))
    if not fits.any():
        return None
    k = int(np.argmax(fits))
    return Placement(index, float(cx[k]), float(cy[k]), "center", bool(led[k]), Box(*boxes[k]))


@dataclass(frozen=True)
class FanSpace:
    """Display space as a fan sees it: below the diagonal as it is, or turned half a turn, so
    that the wedge above the diagonal lies below it and one fan serves both."""

    turned: bool
    points: np.ndarray
    frame: Box
    diagonal_x: Callable[[float], float]

    @classmethod
    def of(cls, turned, points, frame, diagonal_x) -> FanSpace:
        if not turned:
            return cls(False, points, frame, diagonal_x)
        return cls(True, -points, frame.turned(), lambda y: -diagonal_x(-y))

    @property
    def figure_frame(self) -> Box:
        return self.frame.turned() if self.turned else self.frame

    def placement(self, index: int, x: float, y: float, box: Box) -> Placement:
        """A row's label (anchored at its left in this space) as drawn on the figure."""
        if not self.turned:
            return Placement(index, x, y, "left", True, box)
        return Placement(index, -x, -y, "right", True, box.turned())


def _fan(squares, points, radii, sizes, pad, frame, taken, diagonal_x) -> list[Placement]:
    """One fan below the diagonal; else every other square in a fan below it and the others in
    a mirrored fan above it; else, where the run is too long for that, every second (third,
    ...) square, leaving the rest to find room one by one. Empty when no fan fits at all."""
    order = sorted(squares, key=lambda i: points[i][1])
    below = FanSpace.of(False, points, frame, diagonal_x)
    above = FanSpace.of(True, points, frame, diagonal_x)
    splits = [[(below, order)]]
    for stride in range(1, MAX_STRIDE + 1):
        splits.append([(below, order[0 :: 2 * stride]), (above, order[stride :: 2 * stride])])
        splits.append([(above, order[0 :: 2 * stride]), (below, order[stride :: 2 * stride])])
    for split in splits:
        fanned, trial = [], taken.copy()
        for space, members in split:
            placed = _fan_column(members, space, radii, sizes, pad, trial, points)
            if placed is None:
                break
            for placement in placed:
                trial.add(placement, points[placement.index])
            fanned += placed
        else:
            return fanned
    return []


def _fan_column(members, space: FanSpace, radii, sizes, pad, taken, points):
    """Rows along a Bezier curve below the diagonal (of ``space``), lowest square lowest.

    Row r sits r label heights above the first row, its label starting at x on a quadratic
    Bezier from the first row's x to the last row's: towards the right edge (as upstream),
    straight up (a column no leader line can cross) or anything between. Of the rows and curves
    that fit, the one with the shortest leader lines is taken.
    """
    order = sorted(members, key=lambda i: space.points[i][1])
    height = float(sizes[order, 1].max())
    step = height + pad / 2 + TOUCH  # rows of text, as lines of a paragraph
    frame = space.frame
    edge = frame.x1 - pad - float(sizes[order, 0].max())
    candidates = []
    y0 = frame.y0 + pad + height / 2
    while y0 + (len(order) - 1) * step + height / 2 <= frame.y1:
        first = space.diagonal_x(y0 + step) + 2 * pad
        last = space.diagonal_x(y0 + len(order) * step) + 2 * pad
        candidates += [(y0, x0, x2) for x0, x2 in _fan_ends(first, last, edge)]
        y0 += step
    longest = FAN_LEADER * (frame.x1 - frame.x0)
    for y0, x0, x2 in _shortest_leaders_first(candidates, space.points[order], step, longest):
        placed = _fan_rows(order, y0, step, x0, x2, space, radii, sizes, pad, taken, points)
        if placed is not None:
            return placed
    return None


def _fan_ends(first: float, last: float, edge: float) -> list[tuple[float, float]]:
    """Where a fan's first and last rows may start: each from as near as the diagonal lets it
    to the edge."""
    ends = {
        (first + (edge - first) * a, last + (edge - last) * b) for a in FAN_REACH for b in FAN_REACH
    }
    return [(x0, x2) for x0, x2 in ends if x0 <= edge and x2 <= edge]


def _fan_curve(rows: int, y0, step, x0, x2) -> tuple[np.ndarray, np.ndarray]:
    """The anchors (x, y) of a fan's rows; y0, x0, x2 may be arrays (one fan per row of them)."""
    y0, x0, x2 = (np.atleast_1d(np.asarray(value, float))[:, None] for value in (y0, x0, x2))
    t = np.sqrt(np.arange(rows) / (rows - 1)) if rows > 1 else np.zeros(1)
    return x0 + (x2 - x0) * (1 - (1 - t) ** 2), y0 + np.arange(rows) * step


def _shortest_leaders_first(candidates, points: np.ndarray, step: float, longest: float):
    """The first FAN_TRIES candidate fans whose leader lines are all at most ``longest``,
    shortest in all first."""
    if not candidates:
        return []
    y0, x0, x2 = np.array(candidates).T
    xs, ys = _fan_curve(len(points), y0, step, x0, x2)
    lengths = np.hypot(xs - points[:, 0], ys - points[:, 1])
    total = np.where(lengths.max(axis=1) <= longest, lengths.sum(axis=1), np.inf)
    order = np.argsort(total, kind="stable")[:FAN_TRIES]
    return [candidates[i] for i in order if np.isfinite(total[i])]


def _fan_rows(order, y0, step, x0, x2, space: FanSpace, radii, sizes, pad, taken, points):
    xs, ys = _fan_curve(len(order), y0, step, x0, x2)
    boxes = [
        Box(x - pad / 2, y - (h + pad / 2) / 2, x + w + pad / 2, y + (h + pad / 2) / 2)
        for x, y, (w, h) in zip(xs[0], ys[0], sizes[order], strict=True)
    ]
    placements = [
        space.placement(index, x, y, box)
        for index, x, y, box in zip(order, xs[0], ys[0], boxes, strict=True)
    ]
    rows = np.array([placement.box.row for placement in placements])
    if not taken.clear(rows, space.figure_frame).all():  # most fans fail here: cheap first
        return None
    taken = taken.copy()
    placed: list[Placement] = []
    for index, box, placement in zip(order, boxes, placements, strict=True):
        if box.x0 <= space.diagonal_x(box.y1) + pad:
            return None
        leader = [(*points[index], placement.x, placement.y)]
        if not taken.free([placement.box.row], space.figure_frame, leader)[0]:
            return None
        if _leaders_hit_markers(points, radii, index, (placement.x, placement.y), pad / 2)[0]:
            return None
        placed.append(placement)
        taken.add(placement, points[index])
    return placed


def _leaders_hit_markers(points, radii, index, ends, clearance) -> np.ndarray:
    """Whether leader lines from point ``index`` to each of ``ends`` pass through another
    marker or within ``clearance`` of it, one that overlaps the point's own (as squares crowd
    the diagonal) aside: no line avoids it."""
    start = points[index]
    apart = np.hypot(*(points - start).T) > radii + radii[index]
    others, reach = points[apart] - start, radii[apart] + clearance
    delta = np.asarray(ends, float).reshape(-1, 2) - start
    length = np.maximum((delta**2).sum(axis=1), TOUCH)[:, None]
    t = np.clip(delta @ others.T / length, 0.0, 1.0)
    nearest = t[..., None] * delta[:, None, :]
    return (np.hypot(*np.moveaxis(others[None] - nearest, -1, 0)) <= reach).any(axis=1)


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


def place_labels(
    ax: Axes, data: pd.DataFrame, fontsize: float, renderer
) -> tuple[list[Annotation], list[int]]:
    """Label each row (columns arch, depth, width, size = marker area in points^2) that finds
    room on the settled layout; returns the labels drawn and the positions of rows left out."""
    if data.empty:
        return [], []
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
    crowded = _crowded_squares(squares, points, sizes)
    placements = (
        _fan(crowded, points, radii, sizes, pad, frame, taken, diagonal_x) if crowded else []
    )
    for placement in placements:
        taken.add(placement, points[placement.index])
    rest = sorted(set(range(len(data))) - {placement.index for placement in placements})
    placements += _place_rest(rest, data, points, radii, sizes, pad, frame, taken)
    drawn = [_draw(ax, data.iloc[p.index], p, radii[p.index] / scale, fontsize) for p in placements]
    labelled = {p.index for p in placements}
    return drawn, [i for i in range(len(data)) if i not in labelled]


def _place_rest(rest, data, points, radii, sizes, pad, frame, taken) -> list[Placement]:
    """The greedy placements of the ``rest`` of the points in the best of a few orders: the
    one that labels the most points with results (hollow rings, points without, go last), then
    the most points, then needs the fewest leader lines, then the least distance.

    The orders are the most crowded points first, the table's order and its reverse; then
    the points left out get room where a neighbour's label can move.
    """
    hollow = data["colour"].eq("none").to_numpy() if "colour" in data else np.zeros(len(data))
    crowding = [
        sum(math.dist(points[i], other) < 4 * sizes[i][1] for other in points) for i in rest
    ]
    by_crowding = [i for _, i in sorted(zip(crowding, rest, strict=True), key=lambda c: -c[0])]
    directions = [
        np.array(_directions(d, w), float) for d, w in data[["depth", "width"]].to_numpy(float)
    ]

    def attempt(order):
        order = sorted(order, key=lambda i: hollow[i])
        return _place_in_order(order, directions, hollow, points, radii, sizes, pad, frame, taken)

    best = min((attempt(order) for order in (by_crowding, rest, rest[::-1])), key=lambda a: a[1])
    placed = {p.index for p in best[0]}
    missed = sorted((i for i in rest if i not in placed), key=lambda i: hollow[i])
    return _swap_in(missed, best[0], directions, points, radii, sizes, pad, frame, taken)


def _swap_in(missed, placements, directions, points, radii, sizes, pad, frame, taken):
    """Label left-out points by moving a neighbour's label: for each left-out point (those with
    results first) and each of its nearest labelled neighbours, the point takes a spot with the
    neighbour's label lifted, and the neighbour's label must then find another."""
    placements = list(placements)
    everywhere = np.arange(RINGS + 1)

    def spot(index, others):
        trial = taken.copy()
        trial.add_all(others, points[[other.index for other in others]])
        found = _greedy(
            index, points, radii, sizes[index], pad, frame, trial, directions[index], everywhere
        )
        return found, trial

    for index in missed:
        near = sorted(placements, key=lambda p: math.dist(points[p.index], points[index]))
        for neighbour in near[:SWAP_NEIGHBOURS]:
            others = [p for p in placements if p is not neighbour]
            found, _ = spot(index, others)
            if found is None:
                continue
            moved, _ = spot(neighbour.index, [*others, found])
            if moved is not None:
                placements = [*others, found, moved]
                break
    return placements


def _place_in_order(order, directions, hollow, points, radii, sizes, pad, frame, taken: Taken):
    """Greedy placements in ``order``, their cost (points with results left out, points left
    out, leaders, distance) and the order. Every point that has room beside it gets it before
    any takes a spot further out with a leader line."""
    taken = taken.copy()
    placements, left = [], list(order)
    for rings in (np.arange(1), np.arange(1, RINGS + 1)):
        missed = []
        for index in left:
            size = sizes[index]
            found = _greedy(index, points, radii, size, pad, frame, taken, directions[index], rings)
            if found is None:
                missed.append(index)
                continue
            placements.append(found)
            taken.add(found, points[index])
        left = missed
    leaders = sum(p.leader for p in placements)
    distance = sum(math.dist(points[p.index], (p.x, p.y)) for p in placements)
    cost = (sum(not hollow[i] for i in left), len(left), leaders, distance)
    return placements, cost, order


def _draw(ax: Axes, row, placement: Placement, radius_points: float, fontsize: float) -> Annotation:
    target = ax.transData.inverted().transform((placement.x, placement.y))
    arrow = None
    if placement.leader:
        arrow = {**LEADER, "shrinkB": radius_points, "relpos": placement.anchor}
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


@dataclass(frozen=True)
class Panel:
    """The rows of a table drawn on one axes, and the name a note gives them ("" for a map)."""

    ax: Axes
    rows: np.ndarray  # positions in the table
    name: str = ""


def label_panels(
    figure: Figure, data: pd.DataFrame, fontsize: float, panels: Sequence[Panel]
) -> pd.DataFrame:
    """Label as many points of every panel as fit; the rest keep an empty ``label``, and a note
    under the figure and ``attrs["note"]`` (for stderr) name them.

    The note needs a strip at the bottom of the figure, which changes the layout the labels
    were placed on, so they are placed again on the layout with that strip.
    """
    reserved = 0
    for attempt in range(LAYOUT_PASSES):
        renderer = settle_layout(figure)
        drawn, missing = [], []
        for panel in panels:
            annotations, left = place_labels(panel.ax, data.iloc[panel.rows], fontsize, renderer)
            drawn += annotations
            missing.append((panel.name, panel.rows[left]))
        note = _figure_note(data, missing, figure, fontsize, reserved)
        lines = note.count("\n") + 1 if note else 0
        if lines <= reserved or attempt == LAYOUT_PASSES - 1:
            break
        for annotation in drawn:
            annotation.remove()
        reserved = lines  # never less, so that the passes end
        _reserve_strip(figure, _strip_height(figure, fontsize, lines))
    if note:
        figure.text(0.01, PAD_POINTS / 72 / figure.get_figheight(), note, fontsize=fontsize, **NOTE)
    data = data.copy()
    left_out = [position for _, positions in missing for position in positions]
    data.iloc[left_out, data.columns.get_loc("label")] = ""
    if left_out:
        data.attrs["note"] = (
            f"{len(left_out)} of {sum(len(p.rows) for p in panels)} point labels left out for "
            f"want of room at this size ({_listing(data, missing)}); a larger --size fits more"
        )
    return data


def _strip_height(figure: Figure, fontsize: float, lines: int) -> float:
    """The share of the figure's height that ``lines`` lines of the note need."""
    return (lines * fontsize * 1.2 + 2 * PAD_POINTS) / 72 / figure.get_figheight()


def _reserve_strip(figure: Figure, height: float) -> None:
    """Lay the figure out above a strip ``height`` (a share of the figure) at its bottom: the
    plots and their margins (a legend below them included) above it, the strip for the note."""
    for legend in figure.legends:
        legend.set_bbox_to_anchor(None)  # so that the layout leaves room for it
    figure.set_layout_engine("constrained", rect=(0, height, 1, 1 - height))
    figure.draw_without_rendering()
    figure.set_layout_engine("none")
    for legend in figure.legends:  # figure legends sit at the bottom of the figure: lift them
        legend.set_bbox_to_anchor((0, height, 1, 1 - height), transform=figure.transFigure)


def _listing(data: pd.DataFrame, missing) -> str:
    parts = []
    for name, positions in missing:
        if len(positions):
            archs = ", ".join(data["arch"].iloc[positions])
            parts.append(f"{name}: {archs}" if name else archs)
    return "; ".join(parts)


def _figure_note(data: pd.DataFrame, missing, figure: Figure, fontsize: float, room: int):
    """The note under the figure: the points left unlabelled, by name where that takes at most
    NOTE_LINES lines (and, once the layout has room for some lines, no more than that)."""
    count = sum(len(positions) for _, positions in missing)
    if not count:
        return None
    columns = int(figure.get_figwidth() * 72 / (fontsize * 0.6))
    named = textwrap.fill(f"Not labelled for want of room: {_listing(data, missing)}", columns)
    lines = named.count("\n") + 1
    if lines <= NOTE_LINES and (not room or lines <= room):
        return named
    return f"{count} points not labelled for want of room (their CSV rows have an empty label)"
