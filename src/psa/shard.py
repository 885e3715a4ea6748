"""A sweep's batch plan, fixed once per results dir, and its deterministic split among N shards.

The plan is every batch (chunk) the sweep of a grid runs, in the order a single process runs them,
with an estimated cost each. It is written to ``plan.json`` by the first sweep that plans the
results dir (created exclusively: a concurrent shard that loses the race reads the winner's), so
every shard on that dir, whatever its device's free memory, runs exactly the batches a single
process would; a trial's numbers depend on the batch it trains in, so they are bit-identical to
the unsharded sweep's. Shard ``I/N`` takes the batches that a longest-first greedy assignment of
the estimated costs gives it; the assignment depends only on the plan and N.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from psa.arch import parse_key
from psa.atomic import fsync_directory
from psa.errors import PsaError
from psa.store import Trial

if TYPE_CHECKING:  # the engine (torch) loads only where a plan is built or read
    from psa.sweep import Chunk

PLAN_NAME = "plan.json"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/5"`` -> Shard(2, 5); raises ValueError unless 1 <= I <= N, both ASCII digits."""
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(f"shard {text!r} is not I/N, e.g. 2/4")
    index, count = (int(part) for part in parts)
    if not 1 <= index <= count:
        raise ValueError(f"shard {text!r} needs 1 <= I <= N, e.g. 2/4")
    return Shard(index, count)


def argparse_shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    batches: tuple[Chunk, ...]
    costs: tuple[float, ...]  # estimated seconds of each batch

    def fingerprint(self) -> str:
        """A short hash of the batches: shards in separate dirs must print the same one."""
        text = json.dumps([_batch_json(chunk) for chunk in self.batches])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def as_json(self) -> dict:
        return {
            "version": PLAN_VERSION,
            "grid": self.grid.as_json(),
            "batches": [
                {**_batch_json(chunk), "seconds": round(cost, 3)}
                for chunk, cost in zip(self.batches, self.costs)
            ],
        }

    def shard_part(self, shard: Shard) -> list[Chunk]:
        """The batches of ``shard``, in plan order."""
        owners = assign(self.costs, shard.count)
        return [chunk for chunk, owner in zip(self.batches, owners) if owner == shard.index]


def _batch_json(chunk: Chunk) -> dict:
    return {
        "arch": chunk.arch.key,
        "trials": [[trial.mode, trial.index] for trial in chunk.trials],
    }


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


class PlanError(PsaError):
    """A results dir's plan.json that cannot be read; the message says what to do."""


def plan_from_json(data: dict, path: Path) -> Plan:
    from psa.sweep import Chunk

    try:
        if data["version"] != PLAN_VERSION:
            raise ValueError(f"version {data['version']} (this psa reads {PLAN_VERSION})")
        stored = data["grid"]
        grid = Grid(tuple(stored["archs"]), tuple(stored["modes"]), int(stored["trials"]))
        batches, costs = [], []
        for entry in data["batches"]:
            arch = parse_key(entry["arch"])
            batches.append(Chunk(arch, [Trial(arch, mode, int(i)) for mode, i in entry["trials"]]))
            costs.append(float(entry["seconds"]))
    except (KeyError, TypeError, ValueError) as error:
        raise PlanError(
            f"{path} is not a batch plan ({error}); restore it, or move it away to plan anew"
        ) from None
    return Plan(grid, tuple(batches), tuple(costs))


def read_plan(results_dir: Path) -> Plan | None:
    """The plan stored in ``results_dir``, or None when it has none."""
    path = results_dir / PLAN_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PlanError(f"cannot read {path} ({error.strerror}); check its permissions") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise PlanError(
            f"{path} is unreadable ({error}); restore it, or move it away to plan anew"
        ) from None
    return plan_from_json(data, path)


def store_plan(results_dir: Path, plan: Plan) -> Plan:
    """Write ``plan`` as the results dir's plan unless one exists; return the stored plan.

    The file is written in full beside its final name and then hard-linked to it: link() fails
    if the name exists, atomically, on local and network filesystems alike (NFS included, where
    O_EXCL and advisory locks are unreliable), so of shards racing here exactly one plan wins.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / PLAN_NAME
    handle, name = tempfile.mkstemp(prefix=f".{PLAN_NAME}.", suffix=".tmp", dir=results_dir)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(plan.as_json(), indent=1) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        with contextlib.suppress(FileExistsError):  # another shard's plan is there
            os.link(temporary, target)
        fsync_directory(results_dir)
    finally:
        temporary.unlink(missing_ok=True)
    stored = read_plan(results_dir)
    assert stored is not None
    return stored
