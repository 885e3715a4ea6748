"""A grid of trials (architectures x modes x trial indices) run on the batched engine.

This module plans and runs the chunks of one results directory, writing only through its store
(psa.store, which documents the files and what stays true at any instant); ``psa.commands.sweep``
is its command line. The unit of work is the chunk: pending trials of one architecture trained
together. At every loop boundary a chunk logs the loop and saves its progress, so a killed sweep
continues each unfinished chunk from its last completed loop; a finished chunk's trials are
recorded once and never run again. Trials are claimed before they run, so several sweeps (or
shards) can share one results dir.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from psa import interrupts
from psa.arch import Arch
from psa.config import ConfigError, RunConfig
from psa.data import MnistSplits
from psa.engine import FIRST_LOOP_OF_RUN, Engine, LoopReport, TrialSpec
from psa.errors import PsaError
from psa.model import Network, build_network
from psa.records import loop_record, version_stamp
from psa.seeds import run_seeds, trial_run_seed
from psa.store import ChunkState, Claim, ResultsStore, StoreError, Trial


class SweepError(PsaError):
    """A sweep that cannot start as asked; the message says what to do."""


@dataclass
class Chunk:
    arch: Arch
    trials: list[Trial]
    saved_loops: int = 0  # loops a killed run saved; the chunk resumes after them

    @property
    def key(self) -> str:
        text = json.dumps([[t.mode, t.index] for t in self.trials])
        return f"{self.arch.slug}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def check_results_dir(store: ResultsStore, settings: RunConfig) -> bool:
    """Whether the store already holds a sweep; refuse one made with other settings."""
    try:
        stored = store.read_settings()
        if stored is None:
            return False
        # A key that an older psa did not write holds its default (upstream behaviour).
        differences = RunConfig.from_flat(stored).differences(settings)
    except StoreError as error:
        raise SweepError(f"{error}; repair it or use another --results-dir") from None
    except ConfigError as error:
        raise SweepError(
            f"{store.settings_path} is not a sweep's settings ({error}); repair it or use "
            "another --results-dir"
        ) from None
    if differences:
        raise SweepError(
            f"{store.root} holds a sweep with other settings ({'; '.join(differences)}); "
            "rerun with the same settings or use another --results-dir"
        )
    return True


def prepare_results_dir(store: ResultsStore, settings: RunConfig) -> None:
    """Create the results dir, or check that an existing one was made with the same settings."""
    if not check_results_dir(store, settings):
        store.write_settings(settings.flat())


def stored_seed(store: ResultsStore) -> int | None:
    """The base seed of an existing results dir, so a rerun without --seed resumes it."""
    try:
        return int((store.read_settings() or {})["seed"])
    except (StoreError, KeyError, TypeError, ValueError):
        return None


def plan_chunks(arch: Arch, pending: list[Trial], max_trials: int) -> list[Chunk]:
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
                Chunk(arch, group[i : i + max_trials]) for i in range(0, len(group), max_trials)
            )
            continue
        if len(current) + len(group) > max_trials:
            chunks.append(Chunk(arch, current))
            current = []
        current = current + group
    if current:
        chunks.append(Chunk(arch, current))
    return chunks


def saved_chunks(
    store: ResultsStore, arch: Arch, pending: list[Trial], running: set[Trial]
) -> list[Chunk]:
    """Chunks of this architecture that a killed run left half done, rebuilt as they were, so
    they continue from their saved loop whatever the memory budget is now. One with a trial a
    live worker holds is that worker's."""
    open_trials = set(pending)
    chunks = []
    for state in store.saved_chunks(arch):
        chunk = Chunk(arch, state.trials, state.loops_completed)
        if chunk.key == state.key and set(state.trials) <= open_trials:
            open_trials -= set(state.trials)
            if not set(state.trials) & running:
                chunks.append(chunk)
    return chunks


def drop_finished_chunks(store: ResultsStore, arch: Arch, done: set[Trial]) -> None:
    """Delete saved states of chunks whose trials are all recorded (a kill right after the
    records were written, before the state went)."""
    for state in store.saved_chunks(arch):
        if set(state.trials) <= done:
            store.delete_chunk(state.key)


class ChunkRunner:
    """Runs one claimed chunk to the end, resuming from its saved state, committing every loop."""

    def __init__(
        self,
        store: ResultsStore,
        settings: RunConfig,
        data: MnistSplits,
        on_loop: Callable[[Chunk, LoopReport, Engine], None],
        provenance: str | None = None,
        tensorboard: bool = False,
    ):
        self.store, self.settings, self.data, self.on_loop = store, settings, data, on_loop
        self.provenance = provenance  # the id of this command run's provenance
        self.tensorboard = tensorboard  # write each trial's TensorBoard run as loops commit

    def run(self, chunk: Chunk, claim: Claim) -> None:
        settings, store = self.settings, self.store
        network = build_network(settings.model, chunk.arch)
        specs = [self._spec(t) for t in chunk.trials]
        engine = Engine(network, specs, settings.hyper, self.data, first_loop=FIRST_LOOP_OF_RUN)
        seconds = self._resume(engine, chunk)
        logs, boards = [], []
        try:
            for trial in chunk.trials:
                log, kept = store.open_loop_log(trial, engine.loops_completed)
                logs.append(log)
                if self.tensorboard:
                    boards.append(self._board(trial, kept))
                if [line["loop"] for line in kept] != list(range(1, engine.loops_completed + 1)):
                    print(
                        f"sweep: {log.path} lacks loops its chunk saved (an older psa); "
                        "that chunk restarts from its first loop",
                        file=sys.stderr,
                    )
                    store.delete_chunk(chunk.key)
                    for other in [*logs, *boards]:
                        other.close()
                    return self.run(chunk, claim)
            while engine.loops_completed < settings.meta_loops:
                started = time.perf_counter()
                report = engine.run_loop()
                # The loop is committed whole: a stop waits until its lines and state are saved.
                with interrupts.held():
                    claim.check()
                    for k, (trial, log) in enumerate(zip(chunk.trials, logs)):
                        line = self._line(chunk, network, trial, report, k)
                        log.append(line)
                        if boards:
                            boards[k].append(line)
                    seconds += time.perf_counter() - started
                    self._save(engine, chunk, seconds)
                claim.heartbeat()
                self.on_loop(chunk, report, engine)
        finally:
            for log in [*logs, *boards]:
                log.close()
        records = self._records(chunk, engine, specs, seconds)
        with interrupts.held():  # the chunk's records, then its saved state goes
            claim.check()
            store.write_records(chunk.key, records)
            store.delete_chunk(chunk.key)

    def _board(self, trial: Trial, kept: list[dict]):
        from psa.store import tensorboard

        folder = tensorboard.run_dir(self.store.root, trial.arch.slug, trial.mode, trial.index)
        return tensorboard.LiveRun(folder, kept)

    def _spec(self, trial: Trial) -> TrialSpec:
        seed = trial_run_seed(self.settings.seed, trial.index)
        return TrialSpec(trial.mode, run_seeds(seed, trial.mode))

    def _resume(self, engine: Engine, chunk: Chunk) -> float:
        """Continue from the chunk's saved LKGs (later loops draw exactly what an uninterrupted
        run would, since every random stream is derived from (seed, loop)); the training seconds
        of the earlier sessions."""
        state = self.store.chunk_state(chunk.key, chunk.arch)
        if state is None:
            return 0.0
        tensors = self.store.chunk_tensors(chunk.key)
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
        engine.loops_completed = state.loops_completed
        engine.revalidate(state.bounty_loops)
        return state.seconds

    def _save(self, engine: Engine, chunk: Chunk, seconds: float) -> None:
        tensors = {}
        for k in range(engine.size):
            for name, tensor in engine.lkg.state_dict(engine.network, k).items():
                tensors[f"trial{k}.{name}"] = tensor
        state = ChunkState(
            chunk.key,
            chunk.trials,
            engine.loops_completed,
            [s.bounty_loop for s in engine.state],
            seconds,
        )
        self.store.save_chunk(state, tensors)

    def _line(
        self, chunk: Chunk, network: Network, trial: Trial, report: LoopReport, k: int
    ) -> dict:
        return loop_record(
            run_id=chunk.key,
            network=network,
            mode=trial.mode,
            trial=trial.index,
            loop=report.loop,
            target=report.targets[k],
            val_accuracy=report.val_accuracy[k],
            lkg_accuracy=report.lkg_accuracy[k],
            promoted=report.promoted[k],
            train_seconds=report.train_seconds,
            provenance=self.provenance,
        )

    def _records(
        self, chunk: Chunk, engine: Engine, specs: list[TrialSpec], seconds: float
    ) -> list[dict]:
        test = engine.test_accuracy()
        stamp = version_stamp(engine.device)
        settings = self.settings
        return [
            {
                "arch": trial.arch.key,
                "model": settings.model,
                "mode": trial.mode,
                "trial": trial.index,
                "seeds": spec.seeds.as_record(base=settings.seed),
                "paired": True,
                "hyperparameters": asdict(settings.hyper),
                "meta_loops": settings.meta_loops,
                "loops_run": engine.loops_completed,
                "val_bounty": engine.state[k].lkg_accuracy,
                "bounty_loop": engine.state[k].bounty_loop,
                "test_accuracy": test[k],
                "seconds": round(seconds / engine.size, 3),
                "trials_in_batch": engine.size,
                **stamp,
                "provenance": self.provenance,
            }
            for k, (trial, spec) in enumerate(zip(chunk.trials, specs))
        ]


def grid(
    configs: list[Arch], modes: list[str], trials: int, done: set[Trial]
) -> list[tuple[Arch, list[Trial]]]:
    """Pending trials per architecture, in configuration order (trial index, then mode)."""
    plan = []
    for arch in configs:
        pending = [
            Trial(arch, mode, t)
            for t in range(1, trials + 1)
            for mode in modes
            if Trial(arch, mode, t) not in done
        ]
        if pending:
            plan.append((arch, pending))
    return plan
