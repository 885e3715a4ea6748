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
from matplotlib.ticker import MaxNLocator

from psa.arch import ArchError, canonical_arch
from psa.markdown import model_title
from psa.modes import MODES
from psa.report.plotting import DPI, new_figure, save_figure
from psa.report.regimes import REGIMES, ZEROR_VALIDATION, classify_trials
from psa.store import REQUIRED_LOG_KEYS, ResultsFormatError, ResultsStore
from psa.store.jsonlines import json_lines

LOG_COLUMNS = ["arch", "model", "mode", "trial", "loop", "current", "lkg"]
LATE_BREAKTHROUGH_TARGETS = ("18*18", "17*17", "10*10", "4*2")
CURVES = {"lkg": "Running best (LKG) validation accuracy (%)", "current": "Validation accuracy (%)"}
# Line colours per mode: the heatmaps' palette, darkened where a thin line on white would vanish.
LINE_COLOURS = {
    "none": "#6D4C41",
    "decay": "#651FFF",
    "dropout": "#D500F9",
    "full": "#F4511E",
    "hidden": "#F9A825",
    "output": "#0091EA",
}

_JOB = re.compile(rf"^psa-(\d+x\d+(?:-\d+x\d+)*)-({'|'.join(MODES)})-\d{{4}}-\d{{2}}-\d{{2}}-")
_LOOP = re.compile(r"Loop (\d+)/(\d+) \(Global: \d+\) \| Current: ([\d.]+)% \| LKG: ([\d.]+)%")


def _fail(path: Path, number: int, message: str) -> ResultsFormatError:
    return ResultsFormatError(f"{path.name}:{number}: {message}")


def read_jsonl_log(path: str | Path) -> pd.DataFrame:
    """One per-loop JSONL log; a loop logged twice (a rerun) keeps its last line."""
    path = Path(path)
    rows = []
    for number, line in json_lines(path, REQUIRED_LOG_KEYS, "log line"):
        try:
            arch = canonical_arch(str(line["arch"]))
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
            match = _LOOP.search(raw)
            if not match:
                continue
            loop = int(match.group(1))
            if loop <= previous:
                trial += 1
            previous = loop
            current, lkg = float(match.group(3)), float(match.group(4))
            rows.append((arch, model, mode, trial, loop, current, lkg))
    return pd.DataFrame(rows, columns=LOG_COLUMNS)


def read_loop_logs(logs_dir: str | Path, model: str = "resmlp") -> pd.DataFrame:
    """Every per-loop record under ``logs_dir`` (a results dir, its logs/, a model or job dir).

    JSONL lines name their model; CloudWatch jobs are taken to be of ``model``.
    Raises ResultsFormatError when nothing readable is there or a line is malformed.
    """
    root = Path(logs_dir)
    if not root.is_dir():
        raise ResultsFormatError(f"logs directory {root} does not exist")
    store = ResultsStore(root)
    if store.record_files() and store.log_files():
        root, paths = root / "logs", store.log_files()
    else:
        paths = sorted(root.rglob("*.jsonl"))
    frames = [read_jsonl_log(path) for path in paths if path not in store.record_files()]
    jobs: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(root.rglob("*.log")):
        job = _job_of(path, root)
        if job:
            arch = canonical_arch(job.group(1).replace("x", "*").replace("-", ", "))
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


def convergence_path(output_dir: str | Path, model: str, late_breakthroughs: bool) -> Path:
    name = "Late_Breakthroughs" if late_breakthroughs else "Convergence"
    return Path(output_dir) / f"{model_title(model)}_Plot_{name}.png"


def _plotted(logs: pd.DataFrame, curve: str, show: str) -> pd.DataFrame:
    """The series to draw per mode: every trial plus their mean, or the trial with the best peak."""
    series = []
    for mode, rows in logs.groupby("mode", sort=False):
        by_trial = rows.pivot(index="loop", columns="trial", values=curve)
        if show == "best":
            best = by_trial.max().idxmax()
            series.append(_series(by_trial[best], mode, str(best)))
            continue
        for trial in by_trial.columns:
            series.append(_series(by_trial[trial].dropna(), mode, str(trial)))
        if by_trial.shape[1] > 1:
            series.append(_series(by_trial.mean(axis=1, skipna=True), mode, "mean"))
    return pd.concat(series, ignore_index=True)


def _series(values: pd.Series, mode: str, label: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"mode": mode, "series": label, "loop": values.index, "value": values.to_numpy()}
    )


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
    dpi: int = DPI,
) -> pd.DataFrame:
    """One panel per target architecture, a line per trial and mode (or the best trial per mode).

    ``bounties`` (long trial form) decides each panel's regime badge; by default the trials'
    bounties come from the logs themselves. Returns the plotted series: arch, mode, series
    (trial number or "mean"), loop, value.
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {sorted(CURVES)}")
    bounties = trial_bounties(logs) if bounties is None else bounties
    regimes = classify_trials(bounties, zeror, arch_order=targets).set_index("arch")["regime"]
    figure = new_figure(12, 4.8 * len(targets))
    axes = np.atleast_1d(figure.subplots(len(targets), 1, squeeze=False)[:, 0])
    drawn = []
    for ax, arch in zip(axes, targets, strict=True):
        data = _plotted(logs[logs["arch"] == arch], curve, show)
        for mode in MODES:
            for label, line in data[data["mode"] == mode].groupby("series", sort=False):
                is_mean = label == "mean"
                single = show == "best" or data[data["mode"] == mode]["series"].nunique() == 1
                ax.plot(
                    line["loop"],
                    line["value"],
                    color=LINE_COLOURS[mode],
                    linewidth=2.2 if is_mean or single else 0.8,
                    alpha=1.0 if is_mean or single else 0.35,
                    label=mode if is_mean or single else None,
                )
        low, high = data["value"].min(), data["value"].max()
        pad = max(0.05 * (high - low), 0.5)
        ax.set_ylim(max(low - pad, 0), min(high + pad, 100))
        if ax.get_ylim()[0] <= zeror <= ax.get_ylim()[1]:
            ax.axhline(zeror, color="black", linestyle="--", linewidth=1, label=f"ZeroR {zeror:g}%")
        regime = REGIMES[regimes[arch]]
        # The regime badge is a left title, so it never covers a curve.
        ax.set_title(
            f"Regime: {regime.label}",
            loc="left",
            fontsize=11,
            color="white",
            bbox={"boxstyle": "round", "facecolor": regime.colour, "edgecolor": "none"},
        )
        ax.set_title(f"{model_title(model)} {arch}", fontsize=14)
        ax.set_xlabel("Meta-loop", fontsize=12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(CURVES[curve], fontsize=12)
        ax.grid(True, linestyle="--", alpha=0.4)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=11, title="Mode")
        drawn.append(data.assign(arch=arch))
    shown = "best trial per mode" if show == "best" else "each trial (thin) and their mean (bold)"
    figure.suptitle(title or f"Convergence: {shown}", fontsize=15)
    save_figure(figure, path, dpi)
    return pd.concat(drawn, ignore_index=True)[["arch", "mode", "series", "loop", "value"]]
