"""``sweep --devices D1,D2,...``: one worker process per device of this machine, worker i running
shard i of N on the same results dir with ``--device Di``. Each worker logs to its own file; a
Ctrl-C or SIGTERM reaches every worker, which stops cleanly as a single sweep does."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from psa import interrupts
from psa.errors import UsageError, command_hint
from psa.shard import Shard


def device_list(text: str) -> tuple[str, ...]:
    """``"cuda:0,cuda:1"`` -> the device names; checked when each worker resolves its device."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no device; give e.g. cuda:0,cuda:1")
    return names


def threads_per_worker(devices: tuple[str, ...]) -> int | None:
    """Torch threads of a CPU worker: the cores shared out among the CPU workers."""
    cpu_workers = sum(1 for name in devices if name.split(":")[0] == "cpu")
    if not cpu_workers:
        return None
    return max(1, (os.cpu_count() or 1) // cpu_workers)


def worker_arguments(args: argparse.Namespace, index: int, device: str) -> argparse.Namespace:
    values = dict(vars(args))
    values.update(devices=None, shards=None, launcher=None, device=device)
    values["shard"] = Shard(index, len(args.devices))
    return argparse.Namespace(**values)


def _work(args: argparse.Namespace, log: Path, threads: int | None) -> None:
    """A worker's body (a fresh interpreter): output to its log, then the shard's sweep."""
    with log.open("a", buffering=1, encoding="utf-8") as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = sys.stderr = stream
        import torch

        from psa.commands import sweep

        if threads is not None and args.device.split(":")[0] == "cpu":
            torch.set_num_threads(threads)
        sweep.execute(args)


def run_workers(args: argparse.Namespace) -> int:
    if args.shard is not None or args.launcher is not None:
        raise UsageError("--devices starts one shard per device itself; drop --shard/--launcher")
    results_dir = Path(args.results_dir)
    logs = (args.launcher_dir or results_dir / "launcher").absolute()
    logs.mkdir(parents=True, exist_ok=True)
    threads = threads_per_worker(args.devices)
    context = multiprocessing.get_context("spawn")
    processes = []
    count = len(args.devices)
    for index, device in enumerate(args.devices, start=1):
        log = logs / f"worker-{index}-of-{count}.log"
        worker = context.Process(
            target=_work,
            args=(worker_arguments(args, index, device), log, threads),
            name=f"psa-shard-{index}",
        )
        worker.start()
        processes.append(worker)
        per = f", {count(threads, 'thread')}" if threads and device.startswith("cpu") else ""
        print(f"  shard {index}/{count} on {device}{per}: pid {worker.pid}, log {log}", flush=True)
    print(f"Watch: {command_hint('sweep')} --status --results-dir {results_dir}", flush=True)
    try:
        with interrupts.sigterm_stops():
            for worker in processes:
                worker.join()
    except KeyboardInterrupt:
        for worker in processes:  # a terminal's Ctrl-C reached them already; a kill did not
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        for worker in processes:
            worker.join()
        raise
    codes = [worker.exitcode for worker in processes]
    for index, code in enumerate(codes, start=1):
        if code:
            print(f"  shard {index}/{count} exited with {code}", file=sys.stderr)
    return 0 if not any(codes) else 130 if 130 in codes else 1
