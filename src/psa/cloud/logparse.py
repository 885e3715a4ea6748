"""Per-loop data from downloaded training-job logs, for the convergence figures.

Two kinds of job log are understood:
- psa's jobs echo every per-loop and per-trial record as a JSON line
  (psa.commands.sagemaker_job), which names its architecture, mode and trial;
- upstream's jobs print ``Loop k/N (Global: g) | Current: x% | LKG: y% | Bounty: z%`` for any N,
  and ``Final Test Accuracy: t%`` after each trial; the job name ``psa-LxW-mode-<timestamp>`` gives
  the architecture and mode, and a loop number that does not increase starts the next trial.
Trials are kept apart (upstream merged them by taking the max per loop).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from psa.arch import Arch, ArchError, parse_key
from psa.modes import MODES
from psa.store.schema import (
    REQUIRED_LOG_KEYS,
    REQUIRED_RECORD_KEYS,
    parse_loop_line,
    parse_test_line,
)

MISSING = "N/A"
_TIMESTAMP = re.compile(r"^\[[^\]]*\]\s?")
_UPSTREAM_JOB = re.compile(r"^[A-Za-z0-9]+-(\d+)x(\d+)-([a-z]+)-", re.ASCII)
_LOOP_KEYS = frozenset(REQUIRED_LOG_KEYS)
_TRIAL_KEYS = frozenset(REQUIRED_RECORD_KEYS)


@dataclass
class TrialLog:
    """One trial's per-loop records (schema of the per-loop JSON lines) and its test accuracy."""

    arch: Arch
    mode: str
    trial: int
    model: str
    run_id: str
    loops: dict[int, dict] = field(default_factory=dict)
    test_accuracy: float | None = None
    from_text: bool = False  # read from upstream's text lines, not from psa's JSON records

    @property
    def key(self) -> tuple[Arch, str, int]:
        return (self.arch, self.mode, self.trial)


def _message(line: str) -> str:
    return _TIMESTAMP.sub("", line.rstrip("\n"), count=1)


def _json_object(message: str) -> dict | None:
    if not message.startswith("{"):
        return None
    try:
        value = json.loads(message)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _canonical(record: dict) -> tuple[Arch, str, int] | None:
    try:
        arch = parse_key(str(record["arch"]))
        trial = int(record["trial"])
    except (ArchError, TypeError, ValueError):
        return None
    if record["mode"] not in MODES:
        return None
    return arch, record["mode"], trial


def parse_job_log(job: str, lines: Iterable[str], model: str = "resmlp") -> list[TrialLog]:
    """The trials one job's log lines describe; JSON records win over text when both occur."""
    from_json: dict[tuple[Arch, str, int], TrialLog] = {}
    from_text: list[TrialLog] = []
    upstream, upstream_arch = _UPSTREAM_JOB.match(job), None
    if upstream is not None:
        try:
            upstream_arch = Arch([(int(upstream.group(1)), int(upstream.group(2)))])
        except ArchError:  # no network psa could train: not an upstream job's name
            upstream = None
    current: TrialLog | None = None
    last_loop = 0
    for line in lines:
        message = _message(line)
        record = _json_object(message)
        if record is not None:
            if record.keys() >= _LOOP_KEYS or record.keys() >= _TRIAL_KEYS:
                key = _canonical(record)
                if key is None:
                    continue
                trial = from_json.setdefault(
                    key, TrialLog(*key, record.get("model", model), record.get("run_id", job))
                )
                if record.keys() >= _LOOP_KEYS:
                    trial.loops[int(record["loop"])] = {**record, "arch": key[0].key}
                elif record.get("test_accuracy") is not None:
                    trial.test_accuracy = float(record["test_accuracy"])
            continue
        if upstream is None:
            continue
        loop_line = parse_loop_line(message)
        if loop_line is not None:
            loop = loop_line.loop
            if current is None or loop <= last_loop:
                mode = upstream.group(3)
                current = TrialLog(upstream_arch, mode, len(from_text) + 1, model, job)
                current.from_text = True
                from_text.append(current)
            last_loop = loop
            current.loops[loop] = {
                "run_id": job,
                "arch": current.arch.key,
                "model": model,
                "mode": current.mode,
                "trial": current.trial,
                "loop": loop,
                "ablation": None,
                "val_accuracy": loop_line.val_accuracy,
                "lkg_accuracy": loop_line.lkg_accuracy,
            }
            continue
        test_accuracy = parse_test_line(message)
        if test_accuracy is not None and current is not None:
            current.test_accuracy = test_accuracy
    if from_json:
        return list(from_json.values())
    if upstream is not None and upstream.group(3) not in MODES:
        return []
    for trial in from_text:
        _mark_promotions(trial)
    return from_text


def _mark_promotions(trial: TrialLog) -> None:
    previous = -math.inf
    for loop in sorted(trial.loops):
        record = trial.loops[loop]
        record["promoted"] = record["lkg_accuracy"] > previous
        record["train_seconds"] = None
        previous = record["lkg_accuracy"]


def merge_jobs(jobs: Iterable[tuple[str, list[TrialLog]]]) -> list[TrialLog]:
    """Trials of many jobs, taken in job-name order (so a retry ``-r1`` comes after its base).

    Records of psa's jobs merge per trial; an upstream rerun of an arch x mode replaces the
    earlier job's trials of it as a whole.
    """
    merged: dict[tuple[Arch, str, int], TrialLog] = {}
    for _, trials in sorted(jobs, key=lambda item: item[0]):
        replaced = {(trial.arch, trial.mode) for trial in trials if trial.from_text}
        for key in [key for key in merged if key[:2] in replaced]:
            del merged[key]
        for trial in trials:
            known = merged.get(trial.key)
            if known is None:
                merged[trial.key] = trial
            else:
                known.loops.update(trial.loops)
                if trial.test_accuracy is not None:
                    known.test_accuracy = trial.test_accuracy
    return sorted(merged.values(), key=_order)


def _order(trial: TrialLog) -> tuple:
    return (trial.arch, MODES.index(trial.mode), trial.trial)


def _cell(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def loop_table(trials: list[TrialLog], kind: str) -> str:
    """A markdown table, a row per trial, a column per meta-loop, then the final test accuracy.

    kind: ``current`` (validation accuracy of the loop's model), ``lkg`` (the LKG after the
    loop) or ``growth`` (the LKG's gain over the previous loop; 0.00 at loop 1, as upstream).
    """
    last = max((max(t.loops) for t in trials if t.loops), default=0)
    header = ["Architecture", "Mode", "Trial", *(f"Meta-Loop {k}" for k in range(1, last + 1))]
    header.append("Final Test")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trial in trials:
        cells = [trial.arch.slug, trial.mode, str(trial.trial)]
        for loop in range(1, last + 1):
            cells.append(_cell(_value(trial, loop, kind)))
        cells.append(_cell(trial.test_accuracy))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _value(trial: TrialLog, loop: int, kind: str) -> float | None:
    record = trial.loops.get(loop)
    if record is None:
        return None
    if kind == "current":
        return float(record["val_accuracy"])
    if kind == "lkg":
        return float(record["lkg_accuracy"])
    if loop == 1:
        return 0.0
    previous = trial.loops.get(loop - 1)
    if previous is None:
        return None
    return float(record["lkg_accuracy"]) - float(previous["lkg_accuracy"])
