"""A grid of trials (architectures x modes x trial indices) run on the batched engine.

This module plans and runs one results directory; ``psa.commands.sweep`` is its command line.
The unit of resumption is the chunk: trials of one architecture trained together. A chunk saves
its LKG weights and counters every few minutes, so a killed sweep continues each unfinished
chunk from its last saved loop; a finished trial is recorded once in ``trials.jsonl`` and never
run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from psa import interrupts
from psa.arch import Stack, arch_slug, format_arch
from psa.atomic import write_bytes_atomically
from psa.checkpoint import encode_safetensors
from psa.data import MnistSplits
from psa.engine import Engine, Hyperparameters, LoopReport, TrialSpec
from psa.errors import PsaError
from psa.model import Architecture, build_architecture
from psa.records import JsonLines, fsync_append, loop_record, provenance
from psa.seeds import run_seeds, trial_run_seed
from psa.tables import (
    TRIALS_FILE_NAME,
    read_trial_records,
    summary_name,
    trials_table_name,
    write_summary_markdown,
    write_trials_markdown,
)

SETTINGS_NAME = "settings.json"
CHUNK_KEY = "psa_chunk"
MEMORY_FRACTION = 0.5
CHECKPOINT_EVERY_SECONDS = 300.0
CPU_FLOP_PER_STEP = 4e9


class SweepError(PsaError):
    """A sweep that cannot start as asked; the message says what to do."""


@dataclass(frozen=True)
class Settings:
    """What every trial of a results dir shares; a rerun must match it exactly."""

    model: str
    lr: float
    batch_size: int
    weight_decay: float
    dropout: float
    meta_loops: int
    seed: int
    precision: str
    hidden_targets: str = "upstream"
    full_sampling: str = "layer"

    @property
    def hyper(self) -> Hyperparameters:
        return Hyperparameters(
            self.lr,
            self.batch_size,
            self.weight_decay,
            self.dropout,
            self.precision,
            self.hidden_targets,
            self.full_sampling,
        )


@dataclass(frozen=True)
class Trial:
    arch: str  # table key, e.g. "4*17"
    mode: str
    index: int  # 1-based trial index t


@dataclass
class Chunk:
    stacks: list[Stack]
    trials: list[Trial]

    @property
    def key(self) -> str:
        text = json.dumps([[t.mode, t.index] for t in self.trials])
        return f"{arch_slug(self.stacks)}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def check_results_dir(results_dir: Path, settings: Settings) -> bool:
    """Whether ``results_dir`` already holds a sweep; refuse one made with other settings."""
    path = results_dir / SETTINGS_NAME
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SweepError(
                f"{path} is unreadable ({error}); repair it or use another --results-dir"
            ) from None
        # A key that an older psa did not write holds its default (upstream behaviour).
        defaults = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
        differences = [
            f"{key} {stored.get(key, defaults.get(key))!r} here vs {value!r} asked"
            for key, value in asdict(settings).items()
            if stored.get(key, defaults.get(key)) != value
        ]
        if differences:
            raise SweepError(
                f"{results_dir} holds a sweep with other settings ({'; '.join(differences)}); "
                "rerun with the same settings or use another --results-dir"
            )
        return True
    return False


def prepare_results_dir(results_dir: Path, settings: Settings) -> None:
    """Create the results dir, or check that an existing one was made with the same settings."""
    if not check_results_dir(results_dir, settings):
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / SETTINGS_NAME).write_text(json.dumps(asdict(settings), indent=2) + "\n")


def stored_seed(results_dir: Path) -> int | None:
    """The base seed of an existing results dir, so a rerun without --seed resumes it."""
    try:
        return int(json.loads((results_dir / SETTINGS_NAME).read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def finished_trials(results_dir: Path, model: str) -> set[Trial]:
    if not (results_dir / TRIALS_FILE_NAME).exists():
        return set()
    frame = read_trial_records(results_dir, model=model)
    return {Trial(r.arch, r.mode, int(r.trial)) for r in frame.itertuples()}


def trial_bytes(arch: Architecture, batch_size: int) -> int:
    """Memory one trial needs in the engine: weights, gradient, two Adam moments and the LKG,
    plus the activations autograd keeps for one batch (with dropout masks)."""
    parameters = arch.parameter_count()
    activations = batch_size * sum(spec.out_features for spec in arch.linears)
    return 4 * (5 * parameters + 4 * activations)


def batch_limit(arch: Architecture, batch_size: int, budget: int, device: torch.device) -> int:
    """How many trials to train together: as many as fit in ``budget`` bytes, and on a CPU no
    more than keep one step's arithmetic near ``CPU_FLOP_PER_STEP``. Batching pays where
    per-step overhead dominates (small networks); a large network already keeps the cores busy
    on its own, and stacking more of them only adds memory traffic (bench: [1*1024] trains a
    trial-epoch in 5.6 s alone and 7.0 s in a batch of 60)."""
    by_memory = max(1, budget // trial_bytes(arch, batch_size))
    if device.type != "cpu":
        return by_memory
    by_work = max(1, int(CPU_FLOP_PER_STEP // (6 * arch.parameter_count() * batch_size)))
    return min(by_memory, by_work)


def memory_budget(device: torch.device) -> int:
    """A safe share of the memory free now: GPU memory on CUDA, available RAM otherwise."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_FRACTION)
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = 8 * 2**30
    return int(available * MEMORY_FRACTION)


def plan_chunks(stacks: list[Stack], pending: list[Trial], max_trials: int) -> list[Chunk]:
    """Split an architecture's pending trials into chunks of at most ``max_trials``, keeping the
    modes of one trial index together (they share batches) unless one index alone is too big."""
    by_index: dict[int, list[Trial]] = {}
    for trial in pending:
        by_index.setdefault(trial.index, []).append(trial)
    chunks: list[Chunk] = []
    current: list[Trial] = []
    for group in by_index.values():
        if len(group) > max_trials:
            chunks.extend(
                Chunk(stacks, group[i : i + max_trials]) for i in range(0, len(group), max_trials)
            )
            continue
        if len(current) + len(group) > max_trials:
            chunks.append(Chunk(stacks, current))
            current = []
        current = current + group
    if current:
        chunks.append(Chunk(stacks, current))
    return chunks


def chunk_path(results_dir: Path, chunk: Chunk) -> Path:
    return results_dir / "chunks" / f"{chunk.key}.safetensors"


def read_chunk_metadata(path: Path) -> dict:
    try:
        with safe_open(path, framework="pt") as handle:
            return json.loads(handle.metadata()[CHUNK_KEY])
    except Exception as error:  # safetensors' Rust error type is not importable
        raise SweepError(
            f"chunk state {path} is unreadable ({error}); delete it to rerun that "
            "chunk from its first loop"
        ) from None


def read_chunk_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    state = read_chunk_metadata(path)
    return load_file(path), state


def saved_chunks(results_dir: Path, stacks: list[Stack], pending: list[Trial]) -> list[Chunk]:
    """Chunks of this architecture that a killed run left half done, rebuilt as they were, so
    they continue from their saved loop whatever the memory budget is now."""
    folder = results_dir / "chunks"
    if not folder.is_dir():
        return []
    key, open_trials = format_arch(stacks), set(pending)
    chunks = []
    for path in sorted(folder.glob(f"{arch_slug(stacks)}-*.safetensors")):
        state = read_chunk_metadata(path)
        trials = [Trial(key, mode, index) for mode, index in state["trials"]]
        chunk = Chunk(stacks, trials)
        if chunk_path(results_dir, chunk) == path and set(trials) <= open_trials:
            chunks.append(chunk)
            open_trials -= set(trials)
    return chunks


class ChunkRunner:
    """Runs one chunk to the end, resuming from its saved state, writing logs and records."""

    def __init__(
        self,
        results_dir: Path,
        settings: Settings,
        data: MnistSplits,
        on_loop: Callable[[Chunk, LoopReport, Engine], None],
    ):
        self.results_dir, self.settings, self.data, self.on_loop = (
            results_dir,
            settings,
            data,
            on_loop,
        )

    def run(self, chunk: Chunk) -> None:
        settings = self.settings
        arch = build_architecture(settings.model, chunk.stacks)
        specs = [self._spec(t) for t in chunk.trials]
        engine = Engine(arch, specs, settings.hyper, self.data)
        state_path = chunk_path(self.results_dir, chunk)
        self._resume(engine, state_path)
        logs = [self._open_log(arch, t, engine.loops_completed) for t in chunk.trials]
        started = time.perf_counter()
        last_save = time.monotonic()
        try:
            while engine.loops_completed < settings.meta_loops:
                report = engine.run_loop(ablate=engine.loops_completed > 0)
                with interrupts.held():  # a stop waits until every trial logged the loop
                    for k, (trial, log) in enumerate(zip(chunk.trials, logs)):
                        log.write(
                            loop_record(
                                run_id=chunk.key,
                                arch=arch,
                                mode=trial.mode,
                                trial=trial.index,
                                loop=report.loop,
                                target=report.targets[k],
                                val_accuracy=report.val_accuracy[k],
                                lkg_accuracy=report.lkg_accuracy[k],
                                promoted=report.promoted[k],
                                train_seconds=report.train_seconds,
                            )
                        )
                self.on_loop(chunk, report, engine)
                if time.monotonic() - last_save > CHECKPOINT_EVERY_SECONDS:
                    self._save(engine, chunk, state_path)
                    last_save = time.monotonic()
        except KeyboardInterrupt:
            self._save(engine, chunk, state_path)
            raise
        finally:
            for log in logs:
                log.close()
        with interrupts.held():  # all of the batch's records, then its saved state goes
            self._record(chunk, engine, specs, time.perf_counter() - started)
            state_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # only when no other batch is saved there
                state_path.parent.rmdir()

    def _spec(self, trial: Trial) -> TrialSpec:
        seed = trial_run_seed(self.settings.seed, trial.index)
        return TrialSpec(trial.mode, run_seeds(seed, trial.mode))

    def _resume(self, engine: Engine, path: Path) -> None:
        """Continue from the chunk's saved LKGs: later loops draw exactly what an uninterrupted
        run would, since every random stream is derived from (seed, loop)."""
        if not path.exists():
            return
        tensors, state = read_chunk_state(path)
        for k in range(engine.size):
            prefix = f"trial{k}."
            engine.load_lkg(
                k,
                {
                    name[len(prefix) :]: tensor
                    for name, tensor in tensors.items()
                    if name.startswith(prefix)
                },
            )
        engine.loops_completed = state["loops_completed"]
        engine.revalidate(state["bounty_loops"])

    def _save(self, engine: Engine, chunk: Chunk, path: Path) -> None:
        if engine.loops_completed == 0:
            return
        tensors = {}
        for k in range(engine.size):
            for name, tensor in engine.lkg.state_dict(engine.arch, k).items():
                tensors[f"trial{k}.{name}"] = tensor
        state = {
            "loops_completed": engine.loops_completed,
            "bounty_loops": [s.bounty_loop for s in engine.state],
            "trials": [[t.mode, t.index] for t in chunk.trials],
        }
        write_bytes_atomically(path, encode_safetensors(tensors, {CHUNK_KEY: json.dumps(state)}))

    def _open_log(self, arch: Architecture, trial: Trial, loops_completed: int) -> JsonLines:
        """The trial's per-loop log, cut back to the loops the engine starts from."""
        path = (
            self.results_dir
            / "logs"
            / arch_slug(list(arch.stacks))
            / (f"{trial.mode}-t{trial.index}.jsonl")
        )
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["loop"] <= loops_completed
            ]
            path.write_text("".join(line + "\n" for line in kept))
        return JsonLines(path)

    def _record(self, chunk: Chunk, engine: Engine, specs: list[TrialSpec], seconds: float) -> None:
        test = engine.test_accuracy()
        stamp = provenance(engine.device)
        settings = self.settings
        for k, (trial, spec) in enumerate(zip(chunk.trials, specs)):
            state = engine.state[k]
            fsync_append(
                self.results_dir / TRIALS_FILE_NAME,
                {
                    "arch": trial.arch,
                    "model": settings.model,
                    "mode": trial.mode,
                    "trial": trial.index,
                    "seeds": spec.seeds.as_record(base=settings.seed),
                    "paired": True,
                    "hyperparameters": asdict(settings.hyper),
                    "meta_loops": settings.meta_loops,
                    "loops_run": engine.loops_completed,
                    "val_bounty": state.lkg_accuracy,
                    "bounty_loop": state.bounty_loop,
                    "test_accuracy": test[k],
                    "seconds": round(seconds / engine.size, 3),
                    "trials_in_batch": engine.size,
                    **stamp,
                },
            )


def write_tables(results_dir: Path, model: str, arch_order: list[str]) -> None:
    """Regenerate the upstream trial table and summary from ``trials.jsonl``."""
    if not (results_dir / TRIALS_FILE_NAME).exists():
        return
    records = read_trial_records(results_dir, model=model)
    write_trials_markdown(
        records, results_dir / trials_table_name(model), model=model, arch_order=arch_order
    )
    write_summary_markdown(
        records, results_dir / summary_name(model), model=model, arch_order=arch_order
    )


def grid(
    configs: list[list[Stack]], modes: list[str], trials: int, done: set[Trial]
) -> list[tuple[list[Stack], list[Trial]]]:
    """Pending trials per architecture, in configuration order (trial index, then mode)."""
    plan = []
    for stacks in configs:
        key = format_arch(stacks)
        pending = [
            Trial(key, mode, t)
            for t in range(1, trials + 1)
            for mode in modes
            if Trial(key, mode, t) not in done
        ]
        if pending:
            plan.append((stacks, pending))
    return plan
