"""``bench --compare-engines``: the engine before flat trial state against the current one, side
by side in one run, per architecture at the sweep's own K: seconds per loop split into train,
validate and commit (the batch state a sweep saves every loop), and aten ops per training step
(torch.profiler). Figures, not a test."""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator

import torch
from rich.table import Table

from psa import engine as current_engine
from psa.commands import bench_previous_engine as previous_engine
from psa.data import MnistSplits
from psa.memory import batch_limit, memory_budget
from psa.model import Network, layout_description
from psa.modes import MODES
from psa.seeds import run_seeds, trial_run_seed
from psa.store import BatchState, ResultsStore, Trial

COMPARED_ARCHS = ("[4*17]", "[18*18]", "[1*1024]", "[2048*1]")
ENGINES = {"previous": previous_engine, "flat": current_engine}
GRID_TRIALS = 60  # six modes x ten trials of one architecture
TRAIN_ROWS, VAL_ROWS = 50_000, 10_000
# What kineto (torch.profiler's C++ side) writes straight to file descriptor 2 as a matter of
# course: a line per stage, a line per start and stop, and, on a machine without CUDA, its probe
# of the GPUs failing ("ERROR:... gpuGetDeviceCount failed with code 35").
PROFILER_NOISE = re.compile(
    r"(STAGE|USDT):\S+ \S+ \d+:\d+ \S+\] |ERROR:\S+ \S+ \d+:\d+ \S+\] gpuGetDeviceCount failed"
)


def sweep_k(network: Network, batch_size: int, device: torch.device) -> int:
    """The K a sweep of the paper's grid batches this architecture at on this device."""
    return min(GRID_TRIALS, batch_limit(network, batch_size, memory_budget(device), device))


def grid_trials(k: int) -> list:
    """K trials as a grid batch holds them: the six modes of trial 1, of trial 2, ..."""
    trials = []
    for index in range(k):
        t, mode = divmod(index, len(MODES))
        seed = trial_run_seed(0, t + 1)
        trials.append(current_engine.TrialSpec(MODES[mode], run_seeds(seed, MODES[mode])))
    return trials


def measure(module, network: Network, k: int, hyper, data: MnistSplits, steps: int) -> dict:
    """One engine's loop on ``steps`` training steps and 1,000 validation rows, scaled to a
    full loop (50,000 training and 10,000 validation rows), its commit, and its ops per step."""
    batch = hyper.batch_size
    timed = _rows(data, steps * batch, 1000)
    engine = module.Engine(network, grid_trials(k), hyper, timed)
    engine.run_loop(ablate=False)  # warm-up: allocator, kernels, lazy imports
    # The quicker of two loops: on a shared machine the slower one carries others' load.
    epoch = min(engine.run_loop(ablate=True).train_seconds for _ in range(2))
    train = epoch * math.ceil(TRAIN_ROWS / batch) / steps
    validate = min(_validate_seconds(engine, timed) for _ in range(2))
    commit = min(_commit_seconds(module, engine, network) for _ in range(3))
    return {
        "train": train,
        "validate": validate,
        "commit": commit,
        "loop": train + validate + commit,
        "ops_per_step": ops_per_step(engine, data, batch),
    }


def ops_per_step(engine, data: MnistSplits, batch: int) -> float:
    """aten ops (every dispatched op, nested ones included) of one training step: two epochs of
    2 and 4 steps under torch.profiler, the difference halved, so per-epoch set-up cancels."""
    counts = []
    for steps in (2, 4):
        engine.data = _rows(data, steps * batch, 1000)
        with quiet_profiler():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                engine._train_epoch(engine.loops_completed + 1)
            counts.append(sum(1 for e in prof.events() if e.name.startswith("aten::")))
    return (counts[1] - counts[0]) / 2


@contextlib.contextmanager
def quiet_profiler() -> Iterator[None]:
    """Hold what the block writes to file descriptor 2 and pass on every line of it but the
    profiler's routine noise (``PROFILER_NOISE``): a real error still reaches stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not PROFILER_NOISE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _validate_seconds(engine, data: MnistSplits) -> float:
    start = time.perf_counter()
    engine.evaluate(engine.params, data.val_x, data.val_y)
    return (time.perf_counter() - start) * VAL_ROWS / data.val_x.shape[0]


def _commit_seconds(module, engine, network: Network) -> float:
    """The batch state a sweep saves at every loop boundary, as each engine's sweep saved it:
    the previous one tensor per layer per trial, the flat one a [K, P] tensor and its layout."""
    trials = [Trial(network.arch, "none", k + 1) for k in range(engine.size)]
    with tempfile.TemporaryDirectory() as folder:
        store = ResultsStore(folder)
        start = time.perf_counter()
        if module is previous_engine:
            tensors = {}
            for k in range(engine.size):
                for name, tensor in engine.lkg.state_dict(network, k).items():
                    tensors[f"trial{k}.{name}"] = tensor
            state = BatchState("bench", trials, 1, [0] * engine.size, 0.0)
        else:
            tensors = {"lkg": engine.lkg_rows()}
            state = BatchState(
                "bench", trials, 1, [0] * engine.size, 0.0, layout_description(network)
            )
        store.save_batch(state, tensors)
        return time.perf_counter() - start


def _rows(data: MnistSplits, train: int, val: int) -> MnistSplits:
    return MnistSplits(
        data.train_x[:train],
        data.train_y[:train],
        data.val_x[:val],
        data.val_y[:val],
        data.test_x[:val],
        data.test_y[:val],
    )


def comparison_table(rows: list[dict]) -> Table:
    table = Table(title="seconds per loop (train + validate + commit) and aten ops per step")
    columns = ("arch", "K", "engine", "train s", "validate s", "commit s", "commit %", "loop s")
    for column in (*columns, "ops/step", "loop x", "ops x"):
        table.add_column(column, justify="left" if column in ("arch", "engine") else "right")
    before = {r["arch"]: r for r in rows if r["engine"] == "previous"}
    for r in rows:
        base = before.get(r["arch"])
        table.add_row(
            r["arch"],
            str(r["trials"]),
            r["engine"],
            f"{r['train']:.2f}",
            f"{r['validate']:.2f}",
            f"{r['commit']:.3f}",
            f"{100 * r['commit'] / r['loop']:.2f}",
            f"{r['loop']:.2f}",
            f"{r['ops_per_step']:.0f}",
            f"{base['loop'] / r['loop']:.2f}" if base else "",
            f"{base['ops_per_step'] / r['ops_per_step']:.2f}" if base else "",
        )
    return table
