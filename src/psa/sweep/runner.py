"""Running a sweep: ``run(request, on_event)`` plans the batches of a results dir and trains them
one by one on the batched engine, each through a :class:`BatchRunner`, reporting as it goes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial

import torch

from psa import interrupts
from psa.config import DEFAULT_THREADS, ConfigError, RunConfig
from psa.costs import model_for
from psa.data import MnistSplits, load_mnist
from psa.device import resolve_device, set_threads
from psa.engine import FIRST_LOOP_OF_RUN, Engine, LoopReport, TrialSpec
from psa.errors import Unfinished, command_hint
from psa.memory import check_fits
from psa.model import Network, build_network, layout_description
from psa.provenance import capture, device_model
from psa.seeds import fresh_seed, run_seeds, trial_run_seed
from psa.store import BatchState, Claim, ClaimLost, ResultsStore, StoreError, Trial
from psa.store.provenance import recording
from psa.store.schema import loop_record, version_stamp
from psa.sweep.commits import LoopCommits
from psa.sweep.events import (
    BatchLost,
    BatchRestarted,
    BatchStarted,
    Finished,
    LoopDone,
    NothingToRun,
    OnEvent,
    Planned,
    Started,
    Stopped,
    ignore,
)
from psa.sweep.plan import (
    Batch,
    Grid,
    Plan,
    choose_plan,
    open_batches,
    pending_batches,
    store_plan,
    twin_reason,
)
from psa.sweep.request import SweepError, SweepRequest
from psa.wording import count


def run(request: SweepRequest, on_event: OnEvent = ignore) -> None:
    """Run the trials of ``request`` that are not recorded yet (a dry run: plan them, report the
    plan, write nothing). A stop (SIGINT, SIGTERM) is raised after the run has recorded what
    finished and reported ``Stopped``."""
    if request.tensorboard:  # refused before anything is written
        from psa.store import tensorboard

        tensorboard.require()
    arch_order = [arch.key for arch in request.archs]
    store = ResultsStore(request.results_dir)
    asked = request.config
    settings = settled(request).config
    device = resolve_device(request.device, request.matmul_precision)
    # Checked before anything else, so --dry-run refuses what the real run would refuse.
    settings = check_results_dir(store, settings, asked) or settings
    set_threads(settings.threads)
    wanted = Grid(tuple(arch_order), tuple(request.modes), request.trials)
    batch_plan = choose_plan(request, store, settings, device, wanted)

    def replan() -> list[Batch]:
        if batch_plan is None:
            return pending_batches(request, settings, store, device)
        return open_batches(batch_plan, request.shard, store, settings.model)

    batches = replan()
    for arch, size in sorted({(batch.arch, len(batch.trials)) for batch in batches}):
        network = build_network(settings.model, arch)
        check_fits(network, settings.hyper.batch_size, size, device)
    finished = len(store.recorded_trials(settings.model)) if store.exists() else 0
    if request.dry_run:
        cost_model = model_for(device_model(device))
        on_event(Planned(tuple(batches), settings, finished, batch_plan, request.shard, cost_model))
        return
    settings = prepare_results_dir(store, settings, asked)
    if batch_plan is not None:
        stored = store_plan(store, batch_plan)  # a concurrent shard's plan may have won
        if stored != batch_plan:
            batch_plan = stored
            batches = replan()
    store.clear_stale_claims()
    done = store.recorded_trials(settings.model)
    for arch in request.archs:
        drop_finished_batches(store, arch, done)
    if not batches:
        finish(store, settings.model, arch_order)  # a sweep stopped before it merged
        check_all_recorded(store, settings.model, asked_trials(request, batch_plan))
        on_event(NothingToRun(request.shard, request.results_dir))
        return
    on_event(
        Started(
            batches=len(batches),
            trials=sum(len(b.trials) for b in batches),
            twins=sum(len(b.twins) for b in batches),
            meta_loops=settings.meta_loops,
            trial_loops=sum(len(b.trials) * (settings.meta_loops - b.saved_loops) for b in batches),
            seed=settings.seed,
            device=str(device),
            threads=settings.threads,
            results_dir=request.results_dir,
            shard=request.shard,
            plan_fingerprint=batch_plan.fingerprint() if batch_plan is not None else None,
        )
    )
    data = load_mnist(request.data_dir, device)
    this_run = capture(device)  # the records of this run name its provenance
    runner = BatchRunner(
        store, settings, data, on_event, this_run.id, request.tensorboard, request.cuda_graph
    )
    with interrupts.sigterm_stops(), recording(store.root, this_run):
        try:
            while batches:
                ran = 0
                for number, batch in enumerate(batches, start=1):
                    started = BatchStarted(batch, number, len(batches), settings.meta_loops)
                    ran += runner.run_claimed(started)
                # Trials skipped because another worker held them may be free by now.
                batches = replan() if ran else []
        except KeyboardInterrupt as error:
            finish(store, settings.model, arch_order)
            on_event(Stopped(error))
            raise
    finish(store, settings.model, arch_order)
    if request.tensorboard:  # trials recorded by runs without --tensorboard, or other workers
        tensorboard.rebuild(store.root, tensorboard.results_dir_runs(store))
    check_all_recorded(store, settings.model, asked_trials(request, batch_plan))
    status = store.status(grid_trials(request), settings.model)
    on_event(Finished(len(status.done), len(status.running), request.results_dir))


def settled(request: SweepRequest) -> SweepRequest:
    """``request`` with its base seed and thread count settled: those asked for, else the
    results dir's (a rerun resumes with them), else a fresh seed and DEFAULT_THREADS. Launchers
    settle them before they dispatch shards, so every shard of one launch has the same ones."""
    config = request.config
    stored = stored_settings(ResultsStore(request.results_dir))
    seed = config.seed if config.seed is not None else stored.get("seed")
    threads = config.threads if config.threads is not None else stored.get("threads")
    settled_config = replace(
        config,
        seed=fresh_seed() if seed is None else seed,
        threads=DEFAULT_THREADS if threads is None else threads,
    )
    return replace(request, config=settled_config)


def grid_trials(request: SweepRequest) -> list[Trial]:
    return [
        Trial(arch, mode, index)
        for arch in request.archs
        for mode in request.modes
        for index in range(1, request.trials + 1)
    ]


def asked_trials(request: SweepRequest, batch_plan: Plan | None) -> list[Trial]:
    """The trials this sweep is to see recorded: its shard's part of the plan, or the grid."""
    if batch_plan is None or request.shard is None:
        return grid_trials(request)
    return [trial for batch in batch_plan.shard_part(request.shard) for trial in batch.members]


def check_all_recorded(store: ResultsStore, model: str, trials: list[Trial]) -> None:
    """Raise Unfinished unless every one of ``trials`` is recorded: a sweep is done only then,
    not while another worker still holds some of them."""
    status = store.status(trials, model)
    if not status.running and not status.pending:
        return
    parts = []
    if status.running:
        parts.append(f"{count(len(status.running), 'trial')} held by another worker's claim")
    if status.pending:
        parts.append(f"{count(len(status.pending), 'trial')} not started")
    raise Unfinished(
        f"{len(status.running) + len(status.pending)} of {count(len(trials), 'trial')} of this "
        f"sweep not recorded yet ({', '.join(parts)}); `{command_hint('sweep')} --status "
        f"--results-dir {store.root}` shows them; rerun the same command once that worker has "
        "finished (a claim whose worker died is taken over when it goes stale)"
    )


def check_results_dir(
    store: ResultsStore, settings: RunConfig, asked: RunConfig | None = None
) -> RunConfig | None:
    """The settings of the sweep the store holds (None for a new dir), which must be
    ``settings``: other settings are refused, but what was not ``asked`` for (a seed this sweep
    drew, the default thread count) gives way to the dir's: a rerun without --seed, or a shard
    started together with another, runs with them."""
    try:
        stored = store.read_settings()
        if stored is None:
            return None
        # A key missing from settings.json holds its default (upstream behaviour).
        held = RunConfig.from_flat(stored)
    except StoreError as error:
        raise SweepError(f"{error}; repair it or use another --results-dir") from None
    except ConfigError as error:
        raise SweepError(
            f"{store.settings_path} is not a sweep's settings ({error}); repair it or use "
            "another --results-dir"
        ) from None
    if asked is not None and asked.seed is None and held.seed is not None:
        settings = replace(settings, seed=held.seed)
    if asked is not None and asked.threads is None and held.threads is not None:
        settings = replace(settings, threads=held.threads)
    differences = held.differences(settings)
    if differences:
        raise SweepError(
            f"{store.root} holds a sweep with other settings ({'; '.join(differences)}); "
            "rerun with the same settings or use another --results-dir"
        )
    return settings


def prepare_results_dir(
    store: ResultsStore, settings: RunConfig, asked: RunConfig | None = None
) -> RunConfig:
    """The settings to run with, once the results dir holds them: a new dir's are published
    first-writer-wins (sweeps and shards may start together on it), and a sweep that lost the
    race runs with the winner's settings where they agree with its own (check_results_dir)."""
    held = check_results_dir(store, settings, asked)
    if held is not None:
        return held
    store.write_settings_once(settings.flat())
    return check_results_dir(store, settings, asked) or settings


def stored_settings(store: ResultsStore) -> dict:
    """The settings.json object of an existing results dir ({} when there is none, or it is
    unreadable: check_results_dir then says why)."""
    try:
        return store.read_settings() or {}
    except StoreError:
        return {}


def drop_finished_batches(store: ResultsStore, arch, done: set[Trial]) -> None:
    """Delete saved states of batches whose trials are all recorded (a kill right after the
    records were written, before the state went)."""
    for state in store.saved_batches(arch):
        if set(state.trials) <= done:
            store.delete_batch(state.key)


def finish(store: ResultsStore, model: str, arch_order: list[str]) -> None:
    """Merge the records into trials.jsonl and render the upstream tables from them."""
    from psa.store.tables import write_tables  # pandas, only once trials are recorded

    if store.exists():
        store.merge_records()
        write_tables(store, model, arch_order)


class BatchRunner:
    """Runs one claimed batch to the end, resuming from its saved state, committing every loop."""

    def __init__(
        self,
        store: ResultsStore,
        settings: RunConfig,
        data: MnistSplits,
        on_event: OnEvent = ignore,
        provenance: str | None = None,
        tensorboard: bool = False,
        cuda_graph: bool = True,
    ):
        self.store, self.settings, self.data, self.on_event = store, settings, data, on_event
        self.provenance = provenance  # the id of this command run's provenance
        self.tensorboard = tensorboard  # write each trial's TensorBoard run as loops commit
        self.cuda_graph = cuda_graph  # on CUDA, replay training steps from a graph

    def run_claimed(self, started: BatchStarted) -> int:
        """Run the batch if this worker can claim all its trials: 1 if it ran, 0 if skipped."""
        batch, store = started.batch, self.store
        claim = store.claim(batch.members)
        if claim is None:
            return 0
        with claim:
            if set(batch.members) & store.recorded_trials(self.settings.model):
                return 0  # recorded by another worker between planning and claiming
            self.on_event(started)

            def on_loop(report: LoopReport) -> None:  # once the loop is committed
                claim.heartbeat()
                best = max(report.lkg_accuracy)
                self.on_event(LoopDone(started, report.loop, best, report.train_seconds))

            try:
                self.run(batch, claim, on_loop)
            except ClaimLost as error:
                self.on_event(BatchLost(str(error)))
                return 0
        return 1

    def run(self, batch: Batch, claim: Claim, on_loop: Callable[[LoopReport], None]) -> None:
        settings, store = self.settings, self.store
        network = build_network(settings.model, batch.arch)
        specs = [self._spec(t) for t in batch.trials]
        engine = Engine(
            network,
            specs,
            settings.hyper,
            self.data,
            first_loop=FIRST_LOOP_OF_RUN,
            cuda_graph=self.cuda_graph,
        )
        seconds = self._resume(engine, batch)
        logs, boards = [], []
        commits = LoopCommits(store, self._background_commits(engine))
        try:
            for trial in batch.trials:
                log, kept = store.open_loop_log(trial, engine.loops_completed)
                logs.append(log)
                if self.tensorboard:
                    boards.append(self._board(trial, kept))
                if [line["loop"] for line in kept] != list(range(1, engine.loops_completed + 1)):
                    self.on_event(BatchRestarted(log.path))
                    store.delete_batch(batch.key)
                    for other in [*logs, *boards]:
                        other.close()
                    return self.run(batch, claim, on_loop)
            while engine.loops_completed < settings.meta_loops:
                started = time.perf_counter()
                report = engine.run_loop()
                # The loop is committed whole: a stop waits until its lines and state are saved.
                with interrupts.held():
                    commits.land()
                    claim.check()
                    for k, (trial, log) in enumerate(zip(batch.trials, logs)):
                        line = self._line(batch, network, trial, report, k)
                        log.append(line)
                        if boards:
                            boards[k].append(line)
                    seconds += time.perf_counter() - started
                    self._save(engine, batch, seconds, commits, then=partial(on_loop, report))
        finally:
            try:
                with interrupts.held():  # a stop, too, waits for the commit in flight
                    commits.close()
            finally:
                for log in [*logs, *boards]:
                    log.close()
        records = self._records(batch, engine, specs, seconds)
        with interrupts.held():  # the twins' logs, the batch's records, then its saved state goes
            claim.check()
            records += self._copy_twins(batch, records)
            store.write_records(batch.key, records)
            store.delete_batch(batch.key)
        if self.tensorboard:  # the trials' runs, now with their recorded test accuracy
            from psa.store import tensorboard

            tensorboard.write_recorded(store, records)

    def _copy_twins(self, batch: Batch, records: list[dict]) -> list[dict]:
        """Write each twin's loop log as its none trial's, and return the twins' records: the
        none trial's, named decay, with decay's own seeds, saying whose they are and why."""
        reason = twin_reason(self.settings.hyper)
        copied = []
        for twin in batch.twins:
            none = Trial(twin.arch, "none", twin.index)
            log, lines = self.store.open_loop_log(none, self.settings.meta_loops)
            log.close()
            twin_fields = {"mode": twin.mode, "twin_of": none.mode, "twin_reason": reason}
            self.store.write_loop_log(twin, [{**line, **twin_fields} for line in lines])
            [record] = [r for r in records if (r["mode"], r["trial"]) == ("none", twin.index)]
            seeds = self._spec(twin).seeds.as_record(base=self.settings.seed)
            copied.append({**record, "seeds": seeds, **twin_fields})
        return copied

    def _board(self, trial: Trial, kept: list[dict]):
        from psa.store import tensorboard

        folder = tensorboard.run_dir(self.store.root, trial.arch.slug, trial.mode, trial.index)
        what = tensorboard.sweep_trial(self.settings, trial.arch.key, trial.mode, trial.index)
        return tensorboard.LiveRun(folder, tensorboard.Run(kept, what))

    def _spec(self, trial: Trial) -> TrialSpec:
        seed = trial_run_seed(self.settings.seed, trial.index)
        return TrialSpec(trial.mode, run_seeds(seed, trial.mode))

    def _resume(self, engine: Engine, batch: Batch) -> float:
        """Continue from the batch's saved LKGs (later loops draw exactly what an uninterrupted
        run would, since every random stream is derived from (seed, loop)); the training seconds
        of the earlier sessions."""
        state = self.store.batch_state(batch.key, batch.arch)
        if state is None:
            return 0.0
        tensors = self.store.batch_tensors(batch.key)
        lkg = tensors.get("lkg")
        if (
            state.layout != layout_description(engine.network)
            or set(tensors) != {"lkg"}
            or state.trials != batch.trials
            or lkg.numel() != engine.lkg.flat.numel()  # no copy of the LKG to count it
            or lkg.dtype != torch.float32
        ):
            raise StoreError(
                f"the saved state of batch {batch.key} does not fit that batch (written by another "
                f"version of psa, or altered); move {self.store.batch_path(batch.key)} out of the "
                "results dir (keep it to inspect) and rerun, and that batch starts again from its "
                "first loop"
            )
        engine.load_lkg_rows(lkg)
        engine.loops_completed = state.loops_completed
        engine.revalidate(state.bounty_loops)
        return state.seconds

    def _save(
        self,
        engine: Engine,
        batch: Batch,
        seconds: float,
        commits: LoopCommits,
        then: Callable[[], None],
    ) -> None:
        state = BatchState(
            batch.key,
            batch.trials,
            engine.loops_completed,
            [s.bounty_loop for s in engine.state],
            seconds,
            layout_description(engine.network),
        )
        commits.commit(state, {"lkg": engine.lkg_rows()}, then)

    def _background_commits(self, engine: Engine) -> bool:
        """Write a loop's state while the next one trains: on CUDA, where the write is a large
        part of a loop (psa.sweep.commits)."""
        return engine.device.type == "cuda"

    def _line(
        self, batch: Batch, network: Network, trial: Trial, report: LoopReport, k: int
    ) -> dict:
        return loop_record(
            run_id=batch.key,
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
        self, batch: Batch, engine: Engine, specs: list[TrialSpec], seconds: float
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
            for k, (trial, spec) in enumerate(zip(batch.trials, specs))
        ]
