"""ResultsStore: the one owner of a results directory's files (see the package docstring)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from psa.arch import Arch, parse_key
from psa.atomic import publish_once, write_bytes_atomically, write_text_atomically
from psa.errors import PsaError
from psa.store import claims
from psa.store.jsonlines import LineLog, ResultsFormatError, encode, repair, split_lines
from psa.store.schema import REQUIRED_LOG_KEYS

# psa.store.records (pandas) is imported where it is used: train writes through this package, and
# pandas would add a second or more to its start-up.
if TYPE_CHECKING:
    import pandas as pd

TRIALS_FILE_NAME = "trials.jsonl"
SETTINGS_NAME = "settings.json"
SHIPPED_MARKER = "SHIPPED.md"
PLAN_NAME = "plan.json"
LAUNCHER_DIR, SUBMITTED_NAME = "launcher", "submitted.json"
LOGS_DIR, RECORDS_DIR, BATCHES_DIR, CLAIMS_DIR = "logs", "records", "batches", "claims"
BATCH_METADATA_KEY = "psa_batch"
# Paths inside a results dir (as in a job's model.tar.gz) of a loop log and a batch's records.
LOOP_LOG_NAME = re.compile(rf"^{LOGS_DIR}/([A-Za-z0-9x-]+)/([a-z]+)-t(\d+)\.jsonl$")
BATCH_RECORDS_NAME = re.compile(rf"^{RECORDS_DIR}/[A-Za-z0-9x-]+\.jsonl$")


class StoreError(PsaError):
    """A results dir that cannot be used as asked; the message says what to do."""


class Trial(NamedTuple):
    """One trial of a grid: its architecture, mode and 1-based index."""

    arch: Arch
    mode: str
    index: int


@dataclass(frozen=True)
class BatchState:
    """What a batch saved at its last loop boundary (its tensors are read separately)."""

    key: str
    trials: list[Trial]
    loops_completed: int
    bounty_loops: list[int]
    seconds: float  # training wall time of every session so far, all trials together
    # Where each layer lies in the saved flat LKG tensor (psa.model.layout_description)
    layout: list | None = None


@dataclass
class Status:
    """Where the trials of a grid stand in a results dir."""

    done: set[Trial] = field(default_factory=set)
    running: set[Trial] = field(default_factory=set)  # claimed by a live worker
    pending: set[Trial] = field(default_factory=set)
    saved_loops: dict[Trial, int] = field(default_factory=dict)  # pending with saved progress


def upstream_results_name(mode: str, modes: Iterable[str]) -> str:
    """Upstream's per-job bounties: ``results.txt`` for a one-mode job, else
    ``results-<mode>.txt``."""
    return "results.txt" if len(tuple(modes)) == 1 else f"results-{mode}.txt"


def trials_table_name(model: str) -> str:
    return f"psa_{model}_trials.md"


def summary_name(model: str) -> str:
    return f"psa_{model}_summary.md"


def worker_log_name(index: int, count: int) -> str:
    """The log of ``sweep --devices`` worker ``index`` of ``count``, in the launcher folder."""
    return f"worker-{index}-of-{count}.log"


def run_log_path(model_dir: Path, checkpoint: Path, run_id: str) -> Path:
    """train's per-run loop log beside its checkpoint: ``mnist_lkg.<run id>.jsonl``."""
    return model_dir / f"{checkpoint.stem}.{run_id}.jsonl"


def run_logs(model_dir: Path, checkpoint: Path) -> list[Path]:
    return sorted(model_dir.glob(f"{checkpoint.stem}.*.jsonl"))


def repair_run_logs(model_dir: Path, checkpoint: Path, loops_completed: int) -> None:
    """Make train's run logs agree with its checkpoint: drop a torn last line and the lines of
    loops the checkpoint does not hold (a kill between a log line and its checkpoint)."""
    for path in run_logs(model_dir, checkpoint):
        repair(path, REQUIRED_LOG_KEYS, "log line", lambda line: line["loop"] <= loops_completed)


class ResultsStore:
    """A results dir: settings, trial records, loop logs, saved batches and claims."""

    def __init__(self, root: str | Path, stale_seconds: float = claims.STALE_SECONDS):
        self.root = Path(root)
        self.stale_seconds = stale_seconds

    def exists(self) -> bool:
        return self.settings_path.exists() or bool(self.record_files())

    def is_shipped(self) -> bool:
        """The results set that ships with psa (it holds SHIPPED.md), which runs do not add to
        unless asked."""
        return (self.root / SHIPPED_MARKER).is_file()

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_NAME

    @property
    def trials_path(self) -> Path:
        return self.root / TRIALS_FILE_NAME

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    def log_path(self, trial: Trial) -> Path:
        return self.root / LOGS_DIR / trial.arch.slug / f"{trial.mode}-t{trial.index}.jsonl"

    def named_log_path(self, name: str) -> Path:
        """The path of a loop log named relative to a results dir (``logs/4x17/none-t1.jsonl``)."""
        if not LOOP_LOG_NAME.match(name):
            raise ResultsFormatError(f"{name} is not a loop log's name in a results dir")
        return self.root / name

    def log_files(self) -> list[Path]:
        return sorted((self.root / LOGS_DIR).glob("*/*.jsonl"))

    def batch_path(self, key: str) -> Path:
        return self.root / BATCHES_DIR / f"{key}.safetensors"

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN_NAME

    def read_plan(self) -> dict | None:
        """The batch plan's JSON (psa.sweep.plan gives it meaning), or None when there is none."""
        path = self.plan_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(
                f"cannot read {path} ({error.strerror}); check its permissions"
            ) from None
        try:
            data = json.loads(data.decode("utf-8"))
        except ValueError as error:  # UnicodeDecodeError included
            raise StoreError(
                f"{path} is unreadable ({error}); restore it, or move it away to plan anew"
            ) from None
        return data

    def plan_text(self) -> str:
        return self.plan_path.read_text(encoding="utf-8")

    def write_plan(self, text: str) -> None:
        """Write the batch plan, replacing any (a merge of results dirs that share one)."""
        write_text_atomically(self.plan_path, text)

    def write_plan_once(self, text: str) -> None:
        """Write the batch plan unless the dir has one already; the first writer wins (of
        shards racing here exactly one plan wins, and no reader sees a partial file)."""
        publish_once(self.plan_path, text.encode("utf-8"))

    @property
    def launcher_dir(self) -> Path:
        """The default folder of submitit's and --devices workers' files and logs."""
        return self.root / LAUNCHER_DIR

    def read_submission(self) -> dict | None:
        """What ``sweep --launcher`` last submitted to this dir, or None."""
        path = self.launcher_dir / SUBMITTED_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("jobs"), list) else None

    def write_submission(self, submitted: dict) -> None:
        write_text_atomically(self.launcher_dir / SUBMITTED_NAME, json.dumps(submitted) + "\n")

    def table_path(self, model: str) -> Path:
        return self.root / trials_table_name(model)

    def summary_path(self, model: str) -> Path:
        return self.root / summary_name(model)

    def loop_table_path(self, model: str, kind: str) -> Path:
        """sagemaker-logs-parser's per-loop tables: ``kind`` current, lkg or growth."""
        suffix = {"current": "convergence", "lkg": "lkg", "growth": "lkg_growth"}[kind]
        return self.root / f"psa_{model}_trials_{suffix}.md"

    def write_loop_table(self, model: str, kind: str, text: str) -> Path:
        path = self.loop_table_path(model, kind)
        write_text_atomically(path, text)
        return path

    def read_settings(self) -> dict | None:
        """The settings the dir was made with, or None for a new dir."""
        if not self.settings_path.exists():
            return None
        try:
            settings = json.loads(self.settings_path.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"{self.settings_path} is unreadable ({error})") from None
        if not isinstance(settings, dict):
            raise StoreError(f"{self.settings_path} is not a JSON object")
        return settings

    def write_settings(self, settings: dict) -> None:
        write_text_atomically(self.settings_path, json.dumps(settings, indent=2) + "\n")

    def write_settings_once(self, settings: dict) -> bool:
        """Publish a new dir's settings unless it has some: True if these were written. Of
        sweeps starting together on one dir exactly one wins; the others read its settings."""
        return publish_once(self.settings_path, (json.dumps(settings, indent=2) + "\n").encode())

    def write_trials(self, records: list[dict]) -> None:
        """Write trials.jsonl whole (atomically) with ``records``, one per line, in their order:
        a merge of results dirs and collected SageMaker outputs (a sweep merges its own
        records with merge_records)."""
        write_bytes_atomically(self.trials_path, encode(records))

    def write_named_log(self, name: str, data: bytes) -> None:
        """Write a loop log named relative to a results dir (``logs/4x17/none-t1.jsonl``) whole."""
        write_bytes_atomically(self.named_log_path(name), data)

    def write_log(self, trial: Trial, data: bytes) -> None:
        """Write a trial's whole loop log (a merge copying it from another results dir)."""
        write_bytes_atomically(self.log_path(trial), data)

    def record_files(self) -> list[Path]:
        """trials.jsonl (the merged records), then each batch's own record file."""
        merged = [self.trials_path] if self.trials_path.is_file() else []
        return merged + self.batch_record_files()

    def batch_record_files(self) -> list[Path]:
        return sorted((self.root / RECORDS_DIR).glob("*.jsonl"))

    def records(self) -> list[dict]:
        """Every trial record, each trial once (a record in trials.jsonl and in its own file is
        one record; of two different ones the later file's wins, as a rerun's did)."""
        from psa.store.records import read_record_file

        seen: dict[tuple, dict] = {}
        for path in self.record_files():
            for record in read_record_file(path):
                key = (record["arch"], record.get("model"), record["mode"], record["trial"])
                seen.pop(key, None)
                seen[key] = record
        return list(seen.values())

    def records_table(self, model: str | None = None) -> pd.DataFrame:
        """The records as a table (psa.store.records.records_table), of ``model`` only if given."""
        from psa.store.records import records_table

        return records_table(self.records(), model)

    def recorded_trials(self, model: str) -> set[Trial]:
        return {
            Trial(parse_key(str(r["arch"])), r["mode"], r["trial"])
            for r in self.records()
            if r.get("model", model) == model
        }

    def write_records(self, key: str, records: list[dict]) -> Path:
        """Record a batch's finished trials, exactly once: its own file appears whole (a temp
        file hard-linked into place, which fails if the file exists) or not at all."""
        path = self.root / RECORDS_DIR / f"{key}.jsonl"
        if not publish_once(path, encode(records)):
            raise StoreError(f"{path} is already recorded; its trials ran twice")
        return path

    def merge_records(self) -> None:
        """Rewrite trials.jsonl (atomically) to hold every record: its own lines as they are,
        then those of the batches' files it lacks. The batch files stay, so a merge that
        races another can lose nothing."""
        from psa.store.records import read_record_file

        lines, torn = split_lines(self.trials_path) if self.trials_path.exists() else ([], False)
        lines = [line for line in lines if line.strip()]
        known = {_record_key(json.loads(line)) for line in lines}
        added = []
        for path in self.batch_record_files():
            for record in read_record_file(path):
                if _record_key(record) not in known:
                    known.add(_record_key(record))
                    added.append(record)
        if added or torn:
            text = "".join(line + "\n" for line in lines) + encode(added).decode()
            write_text_atomically(self.trials_path, text)

    def open_loop_log(self, trial: Trial, loops_completed: int) -> tuple[LineLog, list[dict]]:
        """A trial's loop log, cut back to the ``loops_completed`` its batch saved (a torn last
        line or the lines of a loop in flight at a kill go, the file rewritten atomically), and
        the lines kept."""
        path = self.log_path(trial)
        kept = repair(
            path, REQUIRED_LOG_KEYS, "log line", lambda line: line["loop"] <= loops_completed
        )
        return LineLog(path), kept

    def write_loop_log(self, trial: Trial, lines: list[dict]) -> None:
        """Write a trial's whole loop log at once, atomically (a log copied from another's)."""
        write_bytes_atomically(self.log_path(trial), encode(lines))

    def save_batch(self, state: BatchState, tensors: dict) -> None:
        """Save a batch's progress atomically: its LKG tensors and ``state``."""
        from psa.checkpoint import encode_safetensors

        metadata = {
            "loops_completed": state.loops_completed,
            "bounty_loops": state.bounty_loops,
            "trials": [[t.mode, t.index] for t in state.trials],
            "seconds": state.seconds,
        }
        if state.layout is not None:
            metadata["layout"] = state.layout
        payload = encode_safetensors(tensors, {BATCH_METADATA_KEY: json.dumps(metadata)})
        write_bytes_atomically(self.batch_path(state.key), payload)

    def batch_state(self, key: str, arch: Arch) -> BatchState | None:
        path = self.batch_path(key)
        if not path.exists():
            return None
        from safetensors import safe_open

        try:
            with path.open("rb"):  # the true cause of an unreadable file, not safetensors' guess
                pass
        except OSError as error:
            raise StoreError(
                f"cannot read batch state {path} ({error.strerror}); it holds that batch's saved "
                "progress: give your user access to it and rerun"
            ) from None
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = json.loads(handle.metadata()[BATCH_METADATA_KEY])
            state = BatchState(
                key,
                [Trial(arch, mode, index) for mode, index in metadata["trials"]],
                metadata["loops_completed"],
                metadata["bounty_loops"],
                float(metadata.get("seconds", 0.0)),
                metadata.get("layout"),
            )
            _check_batch_state(state)
        except Exception as error:  # safetensors' Rust error type is not importable
            raise StoreError(
                f"batch state {path} is damaged ({type(error).__name__}: {error}), so its batch "
                "cannot resume; move it out of the results dir (keep it to inspect) and rerun, "
                "and that batch starts again from its first loop"
            ) from None
        return state

    def batch_tensors(self, key: str) -> dict:
        from safetensors.torch import load_file

        return load_file(self.batch_path(key))

    def saved_batches(self, arch: Arch) -> list[BatchState]:
        """The saved states of this architecture's batches, in name order."""
        paths = sorted((self.root / BATCHES_DIR).glob(f"{arch.slug}-*.safetensors"))
        states = [self.batch_state(path.name.removesuffix(".safetensors"), arch) for path in paths]
        return [state for state in states if state is not None]

    def holds_saved_batches(self) -> bool:
        """Whether a sweep stopped mid-way left batches here to resume."""
        return (self.root / BATCHES_DIR).is_dir()

    def delete_batch(self, key: str) -> None:
        path = self.batch_path(key)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only when no other batch is saved there
            path.parent.rmdir()

    def claim_path(self, trial: Trial) -> Path:
        return self.root / CLAIMS_DIR / trial.arch.slug / f"{trial.mode}-t{trial.index}.claim"

    def claim(self, trials: Iterable[Trial]) -> claims.Claim | None:
        """Claim every one of ``trials`` for this process, or none (None) when a live worker
        holds one; stale claims are taken over."""
        return claims.acquire([self.claim_path(t) for t in trials], self.stale_seconds)

    def clear_stale_claims(self) -> None:
        """Remove the claims of workers that died (their trials are free again)."""
        claims.clear_stale_claims(self.root / CLAIMS_DIR, self.stale_seconds)

    def is_claimed(self, trial: Trial) -> bool:
        path = self.claim_path(trial)
        return path.exists() and claims.is_live(path, claims.read_holder(path), self.stale_seconds)

    def status(self, trials: Iterable[Trial], model: str) -> Status:
        """Which of ``trials`` are recorded, claimed by a live worker, or still to run."""
        done = self.recorded_trials(model)
        status = Status()
        saved: dict[Trial, int] = {}
        for arch in {t.arch for t in trials}:
            for state in self.saved_batches(arch):
                saved.update({t: state.loops_completed for t in state.trials})
        for trial in trials:
            if trial in done:
                status.done.add(trial)
            elif self.is_claimed(trial):
                status.running.add(trial)
            else:
                status.pending.add(trial)
                if trial in saved:
                    status.saved_loops[trial] = saved[trial]
        return status


def _check_batch_state(state: BatchState) -> None:
    """Raise ValueError where a batch state's metadata contradicts itself."""
    loops = state.loops_completed
    if isinstance(loops, bool) or not isinstance(loops, int) or loops < 0:
        raise ValueError(f"loops_completed {loops!r} is not a count")
    if len(state.bounty_loops) != len(state.trials) or not all(
        isinstance(loop, int) and 0 <= loop <= loops for loop in state.bounty_loops
    ):
        raise ValueError("bounty_loops do not match its trials and loops")


def _record_key(record: dict) -> tuple:
    arch = parse_key(str(record["arch"])).key
    return (arch, record.get("model"), record["mode"], int(record["trial"]))


def read_records_table(source: str | Path, model: str | None = None) -> pd.DataFrame:
    """Trial records from a results dir (through its store) or from one .jsonl file."""
    source = Path(source)
    if source.is_dir():
        return ResultsStore(source).records_table(model)
    if not source.exists():
        raise ResultsFormatError(f"cannot read results file {source}: it does not exist")
    from psa.store.records import read_record_file, records_table

    return records_table(read_record_file(source), model)
