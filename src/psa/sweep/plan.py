"""The batch plan of a sweep: which pending trials train together, what each batch costs, and the
split of a fixed plan among N shards.

A batch is the pending trials of one architecture trained together (at most as many as fit in
memory, or --max-batch), the modes of one trial index kept together. The plan of a grid is every
batch, in the order a single process runs them, with an estimated cost each. It is stored in the
results dir by the first sweep that plans it (a concurrent shard that loses the race reads the
winner's), so every shard on that dir, whatever its device's free memory, runs exactly the
batches a single process would; a trial's numbers depend on the batch it trains in, so they are
bit-identical to the unsharded sweep's. Shard ``I/N`` takes the batches that a longest-first
greedy assignment of the estimated costs gives it; the assignment depends only on the plan and N.

Torch loads only where networks are built (planning a grid, estimating its cost), not to read a
plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from psa.arch import Arch, parse_key
from psa.config import Hyperparameters, RunConfig
from psa.costs import CPU_MODEL, CostModel, model_for
from psa.store import ResultsStore, StoreError, Trial
from psa.sweep.request import Shard, SweepError, SweepRequest

if TYPE_CHECKING:
    from psa.model import Network

PLAN_VERSION = 1


class PlanError(SweepError):
    """A results dir's batch plan that cannot be read; the message says what to do."""


def decay_is_none(hyper: Hyperparameters) -> bool:
    """Whether a ``decay`` trial computes exactly what its ``none`` twin does: AdamW's decoupled
    decay multiplies each weight by 1 - lr * wd, which in float32 (the weights' precision) is
    exactly 1.0 at the paper's lr 1e-4 and weight decay 1e-4. Everything else the two share
    (initial weights, minibatch order, no ablation, no dropout)."""
    return bool(np.float32(1.0 - hyper.lr * hyper.weight_decay) == np.float32(1.0))


def twin_reason(hyper: Hyperparameters) -> str:
    """Why a decay trial's record and loop log are its none twin's (written into both)."""
    return (
        f"AdamW's decay factor 1 - lr*wd (lr {hyper.lr:g}, weight decay {hyper.weight_decay:g}) "
        "is 1.0 in float32, so decay computes exactly what none does"
    )


@dataclass
class Batch:
    """Trials of one architecture trained together, and the ``decay`` trials (twins) whose
    records and loop logs are copied from this batch's ``none`` trials of the same index."""

    arch: Arch
    trials: list[Trial]
    saved_loops: int = 0  # loops a killed run saved; the batch resumes after them
    twins: list[Trial] = field(default_factory=list)

    @property
    def members(self) -> list[Trial]:
        """Every trial this batch records: the trained ones and the twins."""
        return [*self.trials, *self.twins]

    @property
    def key(self) -> str:
        text = json.dumps([[t.mode, t.index] for t in self.trials])
        return f"{self.arch.slug}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Grid:
    """What a sweep was asked to run: architectures (table keys, in order), modes, trials."""

    archs: tuple[str, ...]
    modes: tuple[str, ...]
    trials: int

    def as_json(self) -> dict:
        return {"archs": list(self.archs), "modes": list(self.modes), "trials": self.trials}


@dataclass(frozen=True)
class Plan:
    grid: Grid
    batches: tuple[Batch, ...]
    costs: tuple[float, ...]  # estimated seconds of each batch

    def fingerprint(self) -> str:
        """A short hash of the batches: shards in separate dirs must print the same one."""
        text = json.dumps([_batch_json(batch) for batch in self.batches])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def as_json(self) -> dict:
        return {
            "version": PLAN_VERSION,
            "grid": self.grid.as_json(),
            "batches": [
                {**_batch_json(batch), "seconds": round(cost, 3)}
                for batch, cost in zip(self.batches, self.costs)
            ],
        }

    def shard_part(self, shard: Shard) -> list[Batch]:
        """The batches of ``shard``, in plan order."""
        owners = assign(self.costs, shard.count)
        return [batch for batch, owner in zip(self.batches, owners) if owner == shard.index]


def _batch_json(batch: Batch) -> dict:
    entry = {
        "arch": batch.arch.key,
        "trials": [[trial.mode, trial.index] for trial in batch.trials],
    }
    if batch.twins:
        entry["twins"] = [[trial.mode, trial.index] for trial in batch.twins]
    return entry


def assign(costs: list[float] | tuple[float, ...], count: int) -> list[int]:
    """The shard (1-based) of each batch: the costliest batch first, each to the shard with the
    least estimated work so far (ties to the lowest shard, then the earliest batch)."""
    loads = [0.0] * count
    owners = [0] * len(costs)
    for position in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        shard = min(range(count), key=lambda s: (loads[s], s))
        owners[position] = shard + 1
        loads[shard] += costs[position]
    return owners


def plan_from_json(data: dict, where: str) -> Plan:
    try:
        if data["version"] != PLAN_VERSION:
            raise ValueError(f"version {data['version']} (this psa reads {PLAN_VERSION})")
        stored = data["grid"]
        grid = Grid(tuple(stored["archs"]), tuple(stored["modes"]), int(stored["trials"]))
        batches, costs = [], []
        for entry in data["batches"]:
            arch = parse_key(entry["arch"])
            trials = [Trial(arch, mode, int(i)) for mode, i in entry["trials"]]
            twins = [Trial(arch, mode, int(i)) for mode, i in entry.get("twins", [])]
            batches.append(Batch(arch, trials, twins=twins))
            costs.append(float(entry["seconds"]))
    except (KeyError, TypeError, ValueError) as error:
        raise PlanError(
            f"{where} is not a batch plan ({error}); restore it, or move it away to plan anew"
        ) from None
    return Plan(grid, tuple(batches), tuple(costs))


def read_plan(store: ResultsStore) -> Plan | None:
    """The plan stored in the results dir, or None when it has none."""
    try:
        data = store.read_plan()
    except StoreError as error:
        raise PlanError(str(error)) from None
    return None if data is None else plan_from_json(data, str(store.plan_path))


def store_plan(store: ResultsStore, plan: Plan) -> Plan:
    """Store ``plan`` as the results dir's plan unless one exists; return the stored plan."""
    store.write_plan_once(json.dumps(plan.as_json(), indent=1) + "\n")
    stored = read_plan(store)
    assert stored is not None
    return stored


def pending_trials(
    archs: tuple[Arch, ...] | list[Arch], modes: tuple[str, ...], trials: int, done: set[Trial]
) -> list[tuple[Arch, list[Trial]]]:
    """Pending trials per architecture, in configuration order (trial index, then mode)."""
    pending = []
    for arch in archs:
        left = [
            Trial(arch, mode, t)
            for t in range(1, trials + 1)
            for mode in modes
            if Trial(arch, mode, t) not in done
        ]
        if left:
            pending.append((arch, left))
    return pending


def plan_batches(arch: Arch, pending: list[Trial], max_trials: int) -> list[Batch]:
    """Split an architecture's pending trials into batches of at most ``max_trials``, keeping the
    modes of one trial index together (they share minibatches) unless one index alone is too
    big."""
    by_index: dict[int, list[Trial]] = {}
    for trial in pending:
        by_index.setdefault(trial.index, []).append(trial)
    batches: list[Batch] = []
    current: list[Trial] = []
    for group in by_index.values():
        if len(group) > max_trials:
            batches.extend(
                Batch(arch, group[i : i + max_trials]) for i in range(0, len(group), max_trials)
            )
            continue
        if len(current) + len(group) > max_trials:
            batches.append(Batch(arch, current))
            current = []
        current = current + group
    if current:
        batches.append(Batch(arch, current))
    return batches


def saved_batches(
    store: ResultsStore, arch: Arch, pending: list[Trial], running: set[Trial]
) -> list[Batch]:
    """Batches of this architecture that a killed run left half done, rebuilt as they were, so
    they continue from their saved loop whatever the memory budget is now. One with a trial a
    live worker holds is that worker's."""
    open_trials = set(pending)
    batches = []
    for state in store.saved_batches(arch):
        batch = Batch(arch, state.trials, state.loops_completed)
        if batch.key == state.key and set(state.trials) <= open_trials:
            open_trials -= set(state.trials)
            if not set(state.trials) & running:
                batches.append(batch)
    return batches


def twin_trials(pending: list[Trial], request: SweepRequest, settings: RunConfig) -> list[Trial]:
    """The pending decay trials to copy from their pending none twin rather than train (none
    when --train-decay is given or the decay factor is not 1 in float32)."""
    if request.train_decay or not decay_is_none(settings.hyper):
        return []
    nones = {(t.arch, t.index) for t in pending if t.mode == "none"}
    return [t for t in pending if t.mode == "decay" and (t.arch, t.index) in nones]


def attach_twins(batches: list[Batch], twins: list[Trial]) -> None:
    """Give each twin to the batch that trains its none trial (a twin whose none trial another
    worker holds stays with that worker)."""
    for batch in batches:
        indices = {t.index for t in batch.trials if t.mode == "none"}
        batch.twins = [t for t in twins if t.arch == batch.arch and t.index in indices]


def batch_sizes(
    request: SweepRequest, settings: RunConfig, device
) -> Callable[[Network], int]:
    """The most trials of a network that one batch holds: --max-batch, else what this device's
    free memory (read once) fits."""
    from psa.memory import batch_limit, memory_budget

    budget = memory_budget(device)

    def limit(network: Network) -> int:
        if request.max_batch:
            return request.max_batch
        return batch_limit(network, settings.hyper.batch_size, budget, device)

    return limit


def pending_batches(
    request: SweepRequest, settings: RunConfig, store: ResultsStore, device
) -> list[Batch]:
    """The batches still to run without a stored plan: saved ones first (as they were saved),
    then the rest, leaving out trials that are recorded or that a live worker holds."""
    from psa.model import build_network

    done = store.recorded_trials(settings.model) if store.exists() else set()
    limit = batch_sizes(request, settings, device)
    batches = []
    for arch, pending in pending_trials(request.archs, request.modes, request.trials, done):
        running = {t for t in pending if store.is_claimed(t)}
        resumed = saved_batches(store, arch, pending, running)
        trained = {t for batch in resumed for t in batch.trials}
        twins = [t for t in twin_trials(pending, request, settings) if t not in trained | running]
        taken = trained | running | set(twins)
        network = build_network(settings.model, arch)
        rest = [t for t in pending if t not in taken]
        planned = resumed + plan_batches(arch, rest, limit(network))
        attach_twins(planned, twins)
        batches += planned
    return batches


def full_plan(request: SweepRequest, wanted: Grid, settings: RunConfig, device) -> Plan:
    """Every batch of the grid, finished or not, in the order one process runs them."""
    from psa.model import build_network
    from psa.provenance import device_model

    limit = batch_sizes(request, settings, device)
    model = model_for(device_model(device))  # this device's own costs where check-device ran
    batches, costs = [], []
    for arch, pending in pending_trials(request.archs, wanted.modes, wanted.trials, set()):
        network = build_network(settings.model, arch)
        twins = twin_trials(pending, request, settings)
        planned = plan_batches(arch, [t for t in pending if t not in twins], limit(network))
        attach_twins(planned, twins)
        for batch in planned:
            batches.append(batch)
            costs.append(estimate_seconds(network, len(batch.trials), settings, model=model))
    return Plan(wanted, tuple(batches), tuple(costs))


def choose_plan(
    request: SweepRequest, store: ResultsStore, settings: RunConfig, device, wanted: Grid
) -> Plan | None:
    """The results dir's batch plan; a new one for a shard or a fresh dir; None (plan the pending
    trials as they come) for an unsharded sweep of a dir planned before, or for another grid."""
    stored = read_plan(store) if store.exists() else None
    if stored is not None and stored.grid != wanted:
        if request.shard is not None:
            raise SweepError(
                f"{store.root} was planned for another grid "
                f"({grid_difference(stored.grid, wanted)}); give every shard the same "
                "--configs/--arch, --modes and --trials, or use another --results-dir"
            )
        return None
    if stored is not None:
        return stored
    started = store.exists() and (
        store.recorded_trials(settings.model)
        or any(store.saved_batches(arch) for arch in request.archs)
    )
    if request.shard is None and started:
        return None
    return full_plan(request, wanted, settings, device)


def open_batches(plan: Plan, shard: Shard | None, store: ResultsStore, model: str) -> list[Batch]:
    """The batches of ``shard`` (every batch without one) that have trials to run and that no
    live worker holds, the costliest first (ties in plan order): the longest batches start
    first, so sweeps sharing a results dir end together; a batch recorded in part runs the rest
    of its trials."""
    done = store.recorded_trials(model) if store.exists() else set()
    mine = plan.shard_part(shard) if shard is not None else list(plan.batches)
    cost = {
        id(batch): (-seconds, position)
        for position, (batch, seconds) in enumerate(zip(plan.batches, plan.costs))
    }
    planned = sorted(mine, key=lambda batch: cost[id(batch)])
    batches = []
    for batch in planned:
        left = [trial for trial in batch.trials if trial not in done]
        twins = [trial for trial in batch.twins if trial not in done]
        if not left or any(store.is_claimed(trial) for trial in left + twins):
            continue
        if len(left) != len(batch.trials) or len(twins) != len(batch.twins):
            batch = Batch(batch.arch, left, twins=twins)
        state = store.batch_state(batch.key, batch.arch)
        batch.saved_loops = state.loops_completed if state is not None else 0
        batches.append(batch)
    return batches


def grid_difference(stored: Grid, wanted: Grid) -> str:
    parts = []
    if stored.archs != wanted.archs:
        parts.append(f"{len(stored.archs)} architectures here vs {len(wanted.archs)} asked")
    if stored.modes != wanted.modes:
        parts.append(f"modes {','.join(stored.modes)} here vs {','.join(wanted.modes)} asked")
    if stored.trials != wanted.trials:
        parts.append(f"trials {stored.trials} here vs {wanted.trials} asked")
    return "; ".join(parts) or "other architectures"


def estimate_seconds(
    network: Network,
    trials: int,
    settings: RunConfig,
    loops: int | None = None,
    model: CostModel = CPU_MODEL,
) -> float:
    """Seconds for ``trials`` trials of ``network`` over ``loops`` meta-loops (default: all of
    them) by ``model`` (psa.costs: a device's own figures where check-device stored them)."""
    loops = settings.meta_loops if loops is None else loops
    return model.loop_seconds(network, trials, settings.hyper.batch_size) * loops
