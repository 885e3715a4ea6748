"""What a sweep reports as it runs, for whoever shows it (the command line prints them; a shard's
process writes them to its log). Every event is a plain frozen value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from psa.sweep.request import Shard

if TYPE_CHECKING:
    from psa.config import RunConfig
    from psa.costs import CostModel
    from psa.sweep.plan import Batch, Plan


@dataclass(frozen=True)
class Planned:
    """A dry run's answer: the batches still to run, and nothing ran."""

    batches: tuple[Batch, ...]
    settings: RunConfig  # with the base seed the run would use
    finished: int  # trials already recorded
    plan: Plan | None  # the stored or new batch plan; None when pending trials are planned anew
    shard: Shard | None
    model: CostModel  # what the estimates are made by (this device's figures where stored)


@dataclass(frozen=True)
class NothingToRun:
    shard: Shard | None
    results_dir: Path


@dataclass(frozen=True)
class Started:
    batches: int
    trials: int  # trained
    twins: int  # decay trials copied from their none twin
    meta_loops: int
    trial_loops: int  # trial-loops left to train
    seed: int
    device: str
    threads: int  # torch threads of this process
    results_dir: Path
    shard: Shard | None
    plan_fingerprint: str | None


@dataclass(frozen=True)
class BatchStarted:
    batch: Batch
    number: int  # 1-based, of ``of``
    of: int
    meta_loops: int

    @property
    def label(self) -> str:
        return f"{self.batch.arch.flag} batch {self.number}/{self.of} (K={len(self.batch.trials)})"


@dataclass(frozen=True)
class LoopDone:
    started: BatchStarted
    loop: int
    best_lkg_accuracy: float
    train_seconds: float


@dataclass(frozen=True)
class BatchRestarted:
    """A trial's loop log lacks loops its batch saved, so the batch starts over."""

    log: Path


@dataclass(frozen=True)
class BatchLost:
    """Another worker took this batch's claim over (judged it stale); this one leaves it."""

    reason: str


@dataclass(frozen=True)
class Stopped:
    """SIGINT or SIGTERM stopped the run; finished trials are recorded, batches saved."""

    error: KeyboardInterrupt


@dataclass(frozen=True)
class Finished:
    done: int  # trials of the request recorded
    running_elsewhere: int  # trials of the request another worker holds
    results_dir: Path


Event = (
    Planned
    | NothingToRun
    | Started
    | BatchStarted
    | LoopDone
    | BatchRestarted
    | BatchLost
    | Stopped
    | Finished
)
OnEvent = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The listener of a run nobody watches."""
