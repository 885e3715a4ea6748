"""Convergence curves: per-loop validation accuracy of each trial, from JSONL or CloudWatch logs.

Two log sources give the same long table (arch, model, mode, trial, loop, current, lkg):
- the per-loop JSON lines of ``train`` and ``sweep`` (``<results-dir>/logs/**/*.jsonl`` or a
  model dir's ``*.jsonl``), one object per loop as in the shared schema;
- CloudWatch logs of SageMaker jobs (``*.log`` under a ``psa-LxW-mode-<timestamp>`` job dir) with
  ``Loop k/N (Global: g) | Current: x% | LKG: y% | Bounty: z%`` lines for any N, where a loop
  number that does not grow starts the next trial.
Trials stay separate (upstream merged them by max); the plot shows each trial's running best
(LKG) or current accuracy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy import stats as scipy_stats

from psa.arch import ArchError, parse_key
from psa.modes import MODES
from psa.report.palettes import palette
from psa.report.plotting import figure_legend, new_figure, save_figure
from psa.report.regimes import REGIMES, ZEROR_VALIDATION, classify_trials
from psa.report.style import CONVERGENCE_EXTRA, SIZES, FigureOptions, print_style
from psa.store import REQUIRED_LOG_KEYS, ResultsFormatError, ResultsStore
from psa.store.jsonlines import json_lines
from psa.store.schema import parse_loop_line
from psa.store.tables import model_title

LOG_COLUMNS = ["arch", "model", "mode", "trial", "loop", "current", "lkg"]
LATE_BREAKTHROUGH_TARGETS = ("18*18", "17*17", "10*10", "4*2")
CURVES = {"lkg": "LKG validation acc. (%)", "current": "Validation accuracy (%)"}
CONFIDENCE = 0.95
# A 95 % band needs enough trials to mean something: at n = 3 the t factor is 4.3 and the band
# of a spread-out mode covers most of 0-100 %, hiding every line. Below this many trials a panel
# shows the trials themselves and their mean, without a band.
BAND_MIN_TRIALS = 5
TEXT_BLOCK_INCHES = 9.0  # the height of a page's text block: a taller figure is split in pages
TWO_COLUMNS_FROM_INCHES = 6.0  # a figure this wide holds two columns of panels
# Line styles (dash patterns in points; () is solid) tell coinciding modes apart: a mode drawn
# exactly over an earlier one leaves it showing through the gaps.
LINE_STYLES = {
    "none": (),
    "decay": (3.0, 3.0),
    "dropout": (1.0, 1.2),
    "full": (5.0, 1.5, 1.0, 1.5),
    "hidden": (2.5, 1.2),
    "output": (7.0, 1.5, 1.0, 1.5, 1.0, 1.5),
}

_JOB = re.compile(rf"^psa-(\d+x\d+(?:-\d+x\d+)*)-({'|'.join(MODES)})-\d{{4}}-\d{{2}}-\d{{2}}-")


def _fail(path: Path, number: int, message: str) -> ResultsFormatError:
    return ResultsFormatError(f"{path.name}:{number}: {message}")


def read_jsonl_log(path: str | Path) -> pd.DataFrame:
    """One per-loop JSONL log; a loop logged twice (a rerun) keeps its last line."""
    path = Path(path)
    rows = []
    for number, line in json_lines(path, REQUIRED_LOG_KEYS, "log line"):
        try:
            arch = parse_key(str(line["arch"])).key
        except ArchError as error:
            raise _fail(path, number, str(error)) from None
        rows.append(
            (
                arch,
                line.get("model", "resmlp"),
                line["mode"],
                int(line["trial"]),
                int(line["loop"]),
                float(line["val_accuracy"]),
                float(line["lkg_accuracy"]),
            )
        )
    frame = pd.DataFrame(rows, columns=LOG_COLUMNS)
    return frame.drop_duplicates(["arch", "model", "mode", "trial", "loop"], keep="last")


def _job_of(path: Path, root: Path) -> re.Match | None:
    for parent in [path.parent, *path.parent.parents]:
        match = _JOB.match(parent.name)
        if match or parent == root:
            return match
    return None


def read_cloudwatch_job(
    log_files: Iterable[Path], arch: str, mode: str, model: str = "resmlp"
) -> pd.DataFrame:
    """Loop lines of one job's log files, in order; a loop number that does not grow is trial 2."""
    rows = []
    trial, previous = 0, math.inf
    for path in sorted(log_files):
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = parse_loop_line(raw)
            if line is None:
                continue
            if line.loop <= previous:
                trial += 1
            previous = line.loop
            rows.append((arch, model, mode, trial, line.loop, line.val_accuracy, line.lkg_accuracy))
    return pd.DataFrame(rows, columns=LOG_COLUMNS)


def read_loop_logs(logs_dir: str | Path, model: str = "resmlp") -> pd.DataFrame:
    """Every per-loop record under ``logs_dir`` (a results dir, its logs/, a model or job dir).

    JSONL lines name their model; CloudWatch jobs are taken to be of ``model``.
    Raises ResultsFormatError when nothing readable is there or a line is malformed.
    """
    root = Path(logs_dir)
    if not root.is_dir():
        raise ResultsFormatError(
            f"logs directory {root} does not exist; pass --logs-dir a results dir or logs dir"
        )
    store = ResultsStore(root)
    if store.record_files() and store.log_files():
        root, paths = store.logs_dir, store.log_files()
    else:
        paths = sorted(root.rglob("*.jsonl"))
    frames = [read_jsonl_log(path) for path in paths if path not in store.record_files()]
    jobs: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(root.rglob("*.log")):
        job = _job_of(path, root)
        if job:
            arch = parse_key(job.group(1).replace("x", "*").replace("-", ", ")).key
            jobs.setdefault((arch, job.group(2)), []).append(path)
    frames += [
        read_cloudwatch_job(files, arch, mode, model) for (arch, mode), files in jobs.items()
    ]
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        raise ResultsFormatError(
            f"no per-loop logs under {logs_dir}: expected *.jsonl lines from train/sweep or "
            "CloudWatch *.log files in psa-LxW-mode-<timestamp> job dirs"
        )
    logs = pd.concat(frames, ignore_index=True)
    # Resumed runs log to new files; a loop logged twice keeps the later file's line.
    logs = logs.drop_duplicates(["arch", "model", "mode", "trial", "loop"], keep="last")
    return logs.sort_values(["arch", "mode", "trial", "loop"], kind="stable").reset_index(drop=True)


def trial_bounties(logs: pd.DataFrame) -> pd.DataFrame:
    """Each logged trial's validation bounty (its best LKG) in the long trial form."""
    grouped = logs.groupby(["arch", "mode", "trial"], sort=False)["lkg"].max().reset_index()
    long = grouped.rename(columns={"lkg": "accuracy"}).assign(status="ok")
    return long[["arch", "trial", "mode", "accuracy", "status"]]


def convergence_path(
    output_dir: str | Path, model: str, late_breakthroughs: bool, fmt: str = "png"
) -> Path:
    name = "Late_Breakthroughs" if late_breakthroughs else "Convergence"
    return Path(output_dir) / f"{model_title(model)}_Plot_{name}.{fmt}"


def mean_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-based confidence interval of the mean of ``values`` (NaN for fewer than two)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return (math.nan, math.nan)
    centre = float(values.mean())
    half = float(
        scipy_stats.t.ppf((1 + confidence) / 2, len(values) - 1)
        * values.std(ddof=1)
        / math.sqrt(len(values))
    )
    return (centre - half, centre + half)


def identical_modes(logs: pd.DataFrame, curve: str) -> dict[str, str]:
    """Modes whose every trial's curve equals that of an earlier mode: {mode: earlier mode}."""
    curves = {
        mode: rows.pivot(index="loop", columns="trial", values=curve)
        for mode, rows in logs.groupby("mode", sort=False)
    }
    same: dict[str, str] = {}
    present = [mode for mode in MODES if mode in curves]
    for index, mode in enumerate(present):
        for earlier in present[:index]:
            if earlier not in same and curves[mode].equals(curves[earlier]):
                same[mode] = earlier
                break
    return same


def plotted_series(logs: pd.DataFrame, curve: str, show: str) -> pd.DataFrame:
    """What one panel draws: per mode each trial (or the best one) and, for several trials, their
    mean with its 95 % confidence band. Columns mode, series, loop, value, ci_low, ci_high."""
    series = []
    for mode in [mode for mode in MODES if mode in set(logs["mode"])]:
        rows = logs[logs["mode"] == mode]
        by_trial = rows.pivot(index="loop", columns="trial", values=curve)
        trials = [by_trial.max().idxmax()] if show == "best" else list(by_trial.columns)
        for trial in trials:
            series.append(_series(by_trial[trial].dropna(), mode, str(trial)))
        if len(trials) > 1:
            mean = _series(by_trial.mean(axis=1, skipna=True), mode, "mean")
            if len(trials) >= BAND_MIN_TRIALS:
                bands = [mean_interval(values) for _, values in by_trial.iterrows()]
                mean["ci_low"] = [band[0] for band in bands]
                mean["ci_high"] = [band[1] for band in bands]
            series.append(mean)
    frame = pd.concat(series, ignore_index=True)
    for column in ("ci_low", "ci_high"):
        if column not in frame:
            frame[column] = math.nan
    return frame


def _series(values: pd.Series, mode: str, label: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"mode": mode, "series": label, "loop": values.index, "value": values.to_numpy()}
    )


def _draw_panel(ax, data: pd.DataFrame, trials: pd.DataFrame, curve: str, colours) -> None:
    """Thin per-trial lines, then the mean (with its band from BAND_MIN_TRIALS trials on, drawn
    by seaborn), in each mode's line style."""
    emphasised = data.groupby("mode")["series"].transform(
        lambda s: s.eq("mean") | (s.nunique() == 1)
    )
    thin = data[~emphasised & (data["series"] != "mean")]
    modes = list(dict.fromkeys(data["mode"]))
    palette = {mode: colours[mode] for mode in modes}
    dashes = {mode: LINE_STYLES[mode] or "" for mode in modes}
    means = data[data["series"] == "mean"]
    banded = set(means.loc[means["ci_low"].notna(), "mode"])
    if len(thin):
        # Without bands the trials are what a reader reads the spread from: draw them stronger.
        strong = not banded
        sns.lineplot(
            data=thin, x="loop", y="value", hue="mode", units="series", estimator=None,
            palette=palette, linewidth=0.7 if strong else 0.5, alpha=0.6 if strong else 0.35,
            legend=False, ax=ax,
        )  # fmt: skip
    single = data[emphasised & ~data["mode"].isin(banded)]
    for (mode, _), line in single.groupby(["mode", "series"], sort=False):
        ax.plot(
            line["loop"], line["value"], color=colours[mode], linewidth=1.3,
            dashes=LINE_STYLES[mode] or (None, None),
        )  # fmt: skip
    several = trials[trials["mode"].isin(banded)]
    if len(several):
        sns.lineplot(
            data=several, x="loop", y=curve, hue="mode", style="mode", palette=palette,
            dashes=dashes, estimator="mean", errorbar=mean_interval, linewidth=1.3,
            err_kws={"alpha": 0.18, "linewidth": 0}, legend=False, ax=ax,
        )  # fmt: skip


def convergence_figure(
    logs: pd.DataFrame,
    targets: list[str],
    path: str | Path,
    model: str = "resmlp",
    curve: str = "lkg",
    show: str = "all",
    zeror: float = ZEROR_VALIDATION,
    bounties: pd.DataFrame | None = None,
    title: str | None = None,
    options: FigureOptions | None = None,
) -> pd.DataFrame:
    """One panel per target architecture: per mode every trial (thin), their mean (bold) with a
    95 % confidence band from BAND_MIN_TRIALS trials on, or only the best trial per mode
    (``show="best"``). At page width the panels stand in two columns; panels that would make a
    figure taller than a page's text block go on further pages, ``<name>-2.<format>`` and so
    on, each with its CSV (their paths in the result's ``attrs["paths"]``).

    Modes are told apart by colour and line style, so a mode drawn exactly over another stays
    visible; a panel names such identical modes. ``bounties`` (long trial form) decides each
    panel's regime badge (default: the trials' bounties in the logs). Returns (and writes as CSV)
    the plotted series: arch, mode, series (trial number or "mean"), loop, value, ci_low, ci_high,
    colour, dashes and identical_to.
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {sorted(CURVES)}")
    options = options or FigureOptions()
    bounties = trial_bounties(logs) if bounties is None else bounties
    regimes = classify_trials(bounties, zeror, arch_order=targets).set_index("arch")["regime"]
    pages = _pages(targets, options)
    tables, paths = [], []
    for number, page in enumerate(pages, start=1):
        page_path = Path(path) if number == 1 else _page_path(Path(path), number)
        tables.append(
            _convergence_page(
                logs, page, page_path, model, curve, show, zeror, regimes, title, options,
            )  # fmt: skip
        )
        paths.append(page_path)
    table = pd.concat(tables, ignore_index=True)
    table.attrs["paths"] = paths
    return table


def _columns(width: float, panels: int) -> int:
    return 2 if width >= TWO_COLUMNS_FROM_INCHES and panels > 1 else 1


def _pages(targets: list[str], options: FigureOptions) -> list[list[str]]:
    """The targets of each page: all on one for a size given in inches, else as many rows of
    panels as a page's text block holds."""
    if isinstance(options.size, tuple):
        return [targets]
    width, panel_height = SIZES[options.size]["convergence"]
    rows = max(1, int((TEXT_BLOCK_INCHES - CONVERGENCE_EXTRA) // panel_height))
    per_page = rows * _columns(width, len(targets))
    return [targets[start : start + per_page] for start in range(0, len(targets), per_page)]


def _page_path(path: Path, number: int) -> Path:
    return path.with_name(f"{path.stem}-{number}{path.suffix}")


def _figure_size(options: FigureOptions, panels: int) -> tuple[float, float]:
    if isinstance(options.size, tuple):
        return options.size
    width, panel_height = SIZES[options.size]["convergence"]
    rows = math.ceil(panels / _columns(width, panels))
    return width, panel_height * rows + CONVERGENCE_EXTRA


def _convergence_page(
    logs, targets, path, model, curve, show, zeror, regimes, title, options
) -> pd.DataFrame:
    colours = palette(options.palette).lines
    badges = palette(options.palette).regimes
    drawn = []
    with print_style():
        size = _figure_size(options, len(targets))
        columns = _columns(size[0], len(targets))
        figure = new_figure(size)
        grid = figure.subplots(math.ceil(len(targets) / columns), columns, squeeze=False).ravel()
        axes, spare = grid[: len(targets)], grid[len(targets) :]
        for ax in spare:
            ax.set_axis_off()
        for ax, arch in zip(axes, targets, strict=True):
            rows = logs[logs["arch"] == arch]
            data = plotted_series(rows, curve, show)
            same = identical_modes(rows, curve)
            _draw_panel(ax, data, rows, curve, colours)
            low = np.nanmin(data[["value", "ci_low"]].to_numpy())
            high = np.nanmax(data[["value", "ci_high"]].to_numpy())
            pad = max(0.05 * (high - low), 0.5)
            ax.set_ylim(max(low - pad, 0), min(high + pad, 100))
            if ax.get_ylim()[0] <= zeror <= ax.get_ylim()[1]:
                ax.axhline(zeror, color="black", linestyle=":", linewidth=0.8)
            regime = REGIMES[regimes[arch]]
            # The regime badge is a left title, so it never covers a curve.
            ax.set_title(
                f"{regime.label}",
                loc="left",
                color="white",
                fontsize="small",
                bbox={
                    "boxstyle": "round,pad=0.25",
                    "facecolor": badges[regime.key],
                    "linewidth": 0,
                },
            )
            # Identical modes are named under the panel's title, clear of every curve.
            note = f"\n{_identical_note(same)}" if same else ""
            ax.set_title(f"{model_title(model)} {arch}{note}", loc="right")
            below = list(axes).index(ax) + columns < len(axes)
            ax.set_xlabel("" if below else "Meta-loop")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(CURVES[curve] if list(axes).index(ax) % columns == 0 else "")
            ax.grid(True, linestyle="--", linewidth=0.4, alpha=0.4)
            drawn.append(
                data.assign(
                    arch=arch,
                    colour=[colours[mode] for mode in data["mode"]],
                    dashes=[_dash_text(LINE_STYLES[mode]) for mode in data["mode"]],
                    identical_to=[same.get(mode, "") for mode in data["mode"]],
                )
            )
        table = pd.concat(drawn, ignore_index=True)
        modes = [mode for mode in MODES if mode in set(table["mode"])]
        handles = [
            Line2D([], [], color=colours[mode], dashes=LINE_STYLES[mode] or (None, None),
                   linewidth=1.3, label=mode)
            for mode in modes
        ]  # fmt: skip
        if any(ax.get_ylim()[0] <= zeror <= ax.get_ylim()[1] for ax in axes):
            handles.append(Line2D([], [], color="black", linestyle=":", linewidth=0.8,
                                  label=f"ZeroR {zeror:g}%"))  # fmt: skip
        banded = table["ci_low"].notna().any()
        if show == "all" and banded:
            handles.append(Patch(facecolor="#9E9E9E", alpha=0.35, label="95% CI of the mean"))
        figure_legend(figure, handles, columns=4)
        shown = (
            "best trial per mode"
            if show == "best"
            else "trials, mean and 95% CI"
            if banded
            else f"trials and their mean (a 95% CI from {BAND_MIN_TRIALS} trials on)"
        )
        figure.suptitle(title or f"Convergence: {shown}")
        columns = ["arch", "mode", "series", "loop", "value", "ci_low", "ci_high"]
        table = table[columns + ["colour", "dashes", "identical_to"]]
        save_figure(figure, path, options, table)
    return table


def _identical_note(same: dict[str, str]) -> str:
    """``decay identical to none`` or ``decay, dropout identical to none``, per earlier mode."""
    groups: dict[str, list[str]] = {}
    for mode, other in same.items():
        groups.setdefault(other, []).append(mode)
    return "; ".join(f"{', '.join(modes)} identical to {other}" for other, modes in groups.items())


def _dash_text(dashes: tuple[float, ...]) -> str:
    return "solid" if not dashes else " ".join(f"{d:g}" for d in dashes)
