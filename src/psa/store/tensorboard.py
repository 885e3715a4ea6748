"""TensorBoard event files of the loop logs (the optional extra ``tensorboard``).

Layout, under a results dir or a model dir: ``tensorboard/<arch slug>/<mode>/t<i>/`` is one
TensorBoard run per trial, holding one file ``events.out.tfevents.psa``. It opens with the trial's
HParams (TensorBoard's hparams plugin: its session, named after the run; ``hparams`` lists them).
Its scalars, at step = meta-loop: ``accuracy/validation`` (the loop's validation accuracy),
``accuracy/lkg`` (the LKG accuracy after it) and ``promotion`` (1 when the loop's weights became
the LKG, else 0); and ``accuracy/test``, the test accuracy of the LKG, at the trial's last loop
once it is recorded (a sweep trial's record), or at the last loop of each train run that trained
one. The event time is the log's ``train_seconds`` summed up to that loop (in a sweep, the seconds
of the whole batch the trial trained in), the HParams' time 0, so TensorBoard's "relative" axis
shows training time and a file's bytes depend only on what it shows.

The event files are derived from the loop logs, and their HParams and test accuracy from the
trial records (a trial not recorded yet: from the settings its sweep runs with), never the other
way round: ``rebuild`` writes every run (atomically, the same bytes each time, runs without a log
removed), and a live writer (``sweep/train --tensorboard``) first rebuilds its run from the lines
its log kept after a resume, then appends one event per committed loop; a sweep rewrites a trial's
run once it records it. train keeps its test accuracy nowhere else: a model dir's rebuild keeps
the test events its runs hold at loops their logs still have. A kill mid-append leaves at most a
torn last record, which TensorBoard skips and the next rebuild replaces.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from psa.arch import parse_key, shape
from psa.atomic import write_bytes_atomically
from psa.config import Hyperparameters, RunConfig
from psa.errors import PsaError, install_hint
from psa.seeds import run_seeds, trial_run_seed
from psa.store.jsonlines import json_lines
from psa.store.results import LOOP_LOG_NAME, ResultsStore, Trial, run_logs
from psa.store.schema import REQUIRED_LOG_KEYS

TENSORBOARD_DIR = "tensorboard"
EVENT_FILE = "events.out.tfevents.psa"
TAGS = ("accuracy/validation", "accuracy/lkg", "promotion")
TEST_TAG = "accuracy/test"
# What a trial is, as its record names it: the source of its HParams.
TRIAL_KEYS = ("arch", "model", "mode", "trial", "seeds", "hyperparameters")


class TensorBoardMissing(PsaError):
    """The tensorboard package is not installed."""


def require() -> None:
    """Raise TensorBoardMissing, saying how to install it, unless tensorboard is installed."""
    _protos()


def _protos():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import plugin_data_pb2, summary_v2
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise TensorBoardMissing(
            "TensorBoard output needs the optional extra tensorboard; install it with "
            f"{install_hint('tensorboard')}"
        ) from None
    return event_pb2, summary_pb2, RecordWriter, summary_v2, plugin_data_pb2


@dataclass
class Run:
    """One TensorBoard run: a trial's log lines (in loop order), what the trial is (TRIAL_KEYS;
    seeds and hyperparameters where known) and its test accuracies by loop."""

    lines: list[dict]
    trial: dict
    tests: dict[int, float] = field(default_factory=dict)


def run_dir(root: Path, slug: str, mode: str, trial: int) -> Path:
    return Path(root) / TENSORBOARD_DIR / slug / mode / f"t{trial}"


def run_name(folder: Path) -> str:
    """A run's name as TensorBoard shows it: ``<arch slug>/<mode>/t<i>``."""
    return "/".join(Path(folder).parts[-3:])


def scalars(line: dict) -> dict[str, float]:
    """The scalars of one loop-log line, by tag."""
    return {
        "accuracy/validation": float(line["val_accuracy"]),
        "accuracy/lkg": float(line["lkg_accuracy"]),
        "promotion": 1.0 if line.get("promoted") else 0.0,
    }


def hparams(trial: dict) -> dict[str, float | str]:
    """A trial's HParams, named as the columns of export-results' trials table. Seeds are
    decimal strings: an HParams number is a float64, which would round the 63-bit ones."""
    arch = parse_key(str(trial["arch"])).key
    values: dict[str, float | str] = {
        "arch": arch,
        **shape(arch, trial["model"]),
        "model": trial["model"],
        "mode": trial["mode"],
        "trial": int(trial["trial"]),
    }
    values.update({f"seeds.{name}": str(seed) for name, seed in trial.get("seeds", {}).items()})
    for name, value in trial.get("hyperparameters", {}).items():
        if value is not None:
            values[f"hyperparameters.{name}"] = value
    return values


def sweep_trial(settings: RunConfig, arch_key: str, mode: str, trial: int) -> dict:
    """What a sweep trial's record will say it is (TRIAL_KEYS), from its sweep's settings."""
    seeds = run_seeds(trial_run_seed(settings.seed, trial), mode)
    return {
        "arch": arch_key,
        "model": settings.model,
        "mode": mode,
        "trial": trial,
        "seeds": seeds.as_record(base=settings.seed),
        "hyperparameters": asdict(settings.hyper),
    }


def train_trial(metadata: dict, mode: str) -> dict:
    """What a train run of ``mode`` is (TRIAL_KEYS), from its checkpoint's metadata."""
    return {
        "arch": metadata["arch"],
        "model": metadata["model"],
        "mode": mode,
        "trial": 1,
        "seeds": run_seeds(metadata["seed"], mode, metadata["data_seed"]).as_record(),
        # A checkpoint written before a hyperparameter existed trained with its default.
        "hyperparameters": {**asdict(Hyperparameters()), **metadata["hyperparameters"]},
    }


def _known(trial: dict, line: dict) -> dict:
    """``trial``'s TRIAL_KEYS over what a log line of it says (no seeds, no hyperparameters;
    a line written before it named its model ran the default)."""
    said = {"model": RunConfig().model, **line}
    return {key: trial.get(key, said.get(key)) for key in TRIAL_KEYS if key in trial or key in said}


def encode_header(name: str, trial: dict) -> bytes:
    """The file-version header and the HParams of the run ``name``."""
    event_pb2, _, _, summary_v2, plugin_data_pb2 = _protos()
    summary = summary_v2.hparams_pb(hparams(trial), trial_id=name, start_time_secs=0.0)
    for value in summary.value:  # the plugin's bytes with their map in key order, every time
        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
        value.metadata.plugin_data.content = data.SerializeToString(deterministic=True)
    return _records(
        event_pb2.Event(wall_time=0.0, file_version="brain.Event:2"),
        event_pb2.Event(wall_time=0.0, step=0, summary=summary),
    )


def encode(
    lines: list[dict], elapsed: float = 0.0, tests: dict[int, float] | None = None
) -> tuple[bytes, float]:
    """The events of ``lines``, each loop's followed by its test accuracy where ``tests`` has
    one, and the training seconds summed up to the last of them."""
    events = []
    for line in lines:
        elapsed += float(line.get("train_seconds") or 0.0)
        loop = int(line["loop"])
        events.append(_scalars_event(loop, elapsed, scalars(line)))
        if tests and loop in tests:
            events.append(_scalars_event(loop, elapsed, {TEST_TAG: float(tests[loop])}))
    return _records(*events), elapsed


def _scalars_event(step: int, elapsed: float, values: dict[str, float]):
    event_pb2, summary_pb2, *_ = _protos()
    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]
    )
    return event_pb2.Event(wall_time=elapsed, step=step, summary=summary)


def _records(*events) -> bytes:
    _, _, RecordWriter, *_ = _protos()
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for event in events:
        writer.write(event.SerializeToString(deterministic=True))
    return buffer.getvalue()


def write_run(folder: Path, run: Run) -> float:
    """Write one run's event file (atomically); the seconds it sums up to."""
    data, elapsed = encode(run.lines, tests=run.tests)
    write_bytes_atomically(folder / EVENT_FILE, encode_header(run_name(folder), run.trial) + data)
    return elapsed


def rebuild(root: Path, runs: dict[tuple[str, str, int], Run]) -> int:
    """Make ``root/tensorboard`` hold exactly ``runs`` ((arch slug, mode, trial) -> run); the
    number of runs written."""
    wanted = {run_dir(root, *key): run for key, run in runs.items() if run.lines}
    base = Path(root) / TENSORBOARD_DIR
    for events in sorted(base.glob(f"*/*/t*/{EVENT_FILE}")):
        if events.parent not in wanted:
            shutil.rmtree(events.parent, ignore_errors=True)
    for folder, run in wanted.items():
        write_run(folder, run)
    return len(wanted)


def results_dir_runs(store: ResultsStore) -> dict[tuple[str, str, int], Run]:
    """The loop logs of a results dir as runs: (arch slug, mode, trial) -> run; a recorded
    trial's with its record's HParams and test accuracy."""
    records = {
        (parse_key(str(r["arch"])).slug, r["mode"], int(r["trial"])): r for r in store.records()
    }
    stored = store.read_settings()
    settings = RunConfig.from_flat(stored) if stored is not None else None
    runs = {}
    for path in store.log_files():
        match = LOOP_LOG_NAME.match(path.relative_to(store.root).as_posix())
        if match:
            key = match.group(1), match.group(2), int(match.group(3))
            runs[key] = sweep_run(_in_loop_order(_lines(path)), records.get(key), settings)
    return runs


def sweep_run(lines: list[dict], record: dict | None, settings: RunConfig | None) -> Run:
    """A sweep trial's run: its record's HParams and test accuracy (at its last loop), or before
    it is recorded the HParams its sweep's settings give it."""
    if not lines:
        return Run(lines, {})
    line = lines[0]
    if record is not None:
        test = record.get("test_accuracy")
        tests = {} if test is None else {int(lines[-1]["loop"]): float(test)}
        return Run(lines, _known(record, line), tests)
    if settings is not None:
        trial = sweep_trial(settings, line["arch"], line["mode"], int(line["trial"]))
        return Run(lines, _known(trial, line))
    return Run(lines, _known({}, line))


def write_recorded(store: ResultsStore, records: list[dict]) -> None:
    """Rewrite the runs of trials just recorded, with their record's test accuracy."""
    for record in records:
        trial = Trial(parse_key(str(record["arch"])), record["mode"], int(record["trial"]))
        lines = _in_loop_order(_lines(store.log_path(trial)))
        folder = run_dir(store.root, trial.arch.slug, trial.mode, trial.index)
        write_run(folder, sweep_run(lines, record, None))


def model_dir_runs(
    model_dir: Path, checkpoint: Path, metadata: dict | None = None
) -> dict[tuple[str, str, int], Run]:
    """train's run logs beside ``checkpoint`` as runs: one per (arch, mode) it trained, with the
    HParams of the checkpoint's ``metadata`` (read from it when not given and it exists) and the
    test accuracies their event files hold."""
    if metadata is None and checkpoint.exists():
        from psa.checkpoint import load_checkpoint

        metadata = load_checkpoint(checkpoint)[1]
    found: dict[tuple[str, str, int], list[dict]] = {}
    for path in run_logs(model_dir, checkpoint):
        for line in _lines(path):
            key = (parse_key(str(line["arch"])).slug, line["mode"], int(line["trial"]))
            found.setdefault(key, []).append(line)
    runs = {}
    for key, lines in found.items():
        lines = _in_loop_order(lines)
        trial = _known(train_trial(metadata, key[1]) if metadata else {}, lines[0])
        loops = {int(line["loop"]) for line in lines}
        tests = _test_accuracies(run_dir(model_dir, *key) / EVENT_FILE)
        runs[key] = Run(lines, trial, {loop: v for loop, v in tests.items() if loop in loops})
    return runs


def _test_accuracies(events: Path) -> dict[int, float]:
    """The test accuracies an event file of ours holds, by step (none if it is missing)."""
    if not events.is_file():
        return {}
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    event_pb2, *_ = _protos()
    tests = {}
    for record in RawEventFileLoader(str(events)).Load():  # stops at a torn last record
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            if value.tag == TEST_TAG:
                tests[int(event.step)] = float(value.simple_value)
    return tests


def _lines(path: Path) -> list[dict]:
    return [line for _, line in json_lines(path, REQUIRED_LOG_KEYS, "log line")]


def _in_loop_order(lines: list[dict]) -> list[dict]:
    return sorted(lines, key=lambda line: int(line["loop"]))


class LiveRun:
    """One trial's event file written as its loops commit: rebuilt from ``kept`` (the lines its
    log holds now, so a resumed run repeats and skips no step), then one event per loop."""

    def __init__(self, folder: Path, kept: Run):
        self.path = folder / EVENT_FILE
        self.elapsed = write_run(folder, kept)
        self.last_loop: int | None = None  # of the loops appended by this writer
        self._stream = open(self.path, "ab")  # noqa: SIM115 (closed by close())

    def append(self, line: dict) -> None:
        data, self.elapsed = encode([line], self.elapsed)
        self._stream.write(data)
        self._stream.flush()
        self.last_loop = int(line["loop"])

    def append_test(self, accuracy: float) -> None:
        """The test accuracy of the LKG after the last loop appended (open or closed); nothing
        when none was (that LKG's was logged by the run that trained it)."""
        if self.last_loop is None:
            return
        self.close()
        with open(self.path, "ab") as stream:
            test = {TEST_TAG: float(accuracy)}
            stream.write(_records(_scalars_event(self.last_loop, self.elapsed, test)))
            os.fsync(stream.fileno())

    def close(self) -> None:
        if not self._stream.closed:
            os.fsync(self._stream.fileno())
            self._stream.close()
