"""``sweep --devices D1,D2,...``: one worker process per device of this machine, worker i running
shard i of N on the same results dir with ``--device Di``. Each worker logs to its own file; a
Ctrl-C or SIGTERM reaches every worker, which stops cleanly as a single sweep does. A worker that
fails has its one-line error repeated on the terminal; the end is a summary per worker."""

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
from psa.wording import count


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
    """A worker's body (a fresh interpreter): output to its log, then the shard's sweep. The log
    stays open to the end, so the exit's own message (a refusal's line) lands in it too."""
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    import torch

    from psa.commands import sweep

    if threads is not None and args.device.split(":")[0] == "cpu":
        torch.set_num_threads(threads)
    sweep.execute(args)


def last_error(log: Path) -> str | None:
    """The worker's one-line refusal: the last ``sweep: `` line of its log."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.strip() for line in lines if line.startswith("sweep: ")]
    return errors[-1] if errors else None


def run_workers(args: argparse.Namespace, preview_shard=None) -> int:
    """Start one worker per device and wait; with --dry-run, print each worker's device and
    part of the plan through ``preview_shard`` and start nothing."""
    if args.shard is not None or args.launcher is not None:
        raise UsageError("--devices starts one shard per device itself; drop --shard/--launcher")
    results_dir = Path(args.results_dir)
    logs = (args.launcher_dir or results_dir / "launcher").absolute()
    threads = threads_per_worker(args.devices)
    workers = len(args.devices)
    if args.dry_run:
        print(
            f"Dry run: would start {workers} workers, worker i running shard i/{workers}; "
            "nothing is started"
        )
        for index, device in enumerate(args.devices, start=1):
            per = f", {count(threads, 'thread')}" if threads and device.startswith("cpu") else ""
            print(f"  shard {index}/{workers} on {device}{per}")
            if preview_shard is not None:
                preview_shard(worker_arguments(args, index, device))
        return 0
    logs.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = []
    for index, device in enumerate(args.devices, start=1):
        log = logs / f"worker-{index}-of-{workers}.log"
        worker = context.Process(
            target=_work,
            args=(worker_arguments(args, index, device), log, threads),
            name=f"psa-shard-{index}",
        )
        worker.start()
        processes.append((worker, log))
        per = f", {count(threads, 'thread')}" if threads and device.startswith("cpu") else ""
        print(
            f"  shard {index}/{workers} on {device}{per}: pid {worker.pid}, log {log}", flush=True
        )
    print(f"Watch: {command_hint('sweep')} --status --results-dir {results_dir}", flush=True)
    try:
        with interrupts.sigterm_stops():
            for worker, _ in processes:
                worker.join()
    except KeyboardInterrupt:
        for worker, _ in processes:  # a terminal's Ctrl-C reached them already; a kill did not
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        for worker, _ in processes:
            worker.join()
        raise
    codes = [worker.exitcode for worker, _ in processes]
    for index, ((_, log), code, device) in enumerate(zip(processes, codes, args.devices), 1):
        where = f"shard {index}/{workers} on {device}"
        if not code:
            print(f"  {where}: finished")
        elif code in (130, 143):
            print(
                f"  {where}: stopped (exit {code}); rerun the same command to resume",
                file=sys.stderr,
            )
        else:
            error = last_error(log) or f"exited with {code}"
            print(f"  {where}: {error} (log {log})", file=sys.stderr)
    failed = sum(1 for code in codes if code)
    print(
        f"Done: {workers - failed} of {workers} workers finished; {command_hint('sweep')} --status "
        f"--results-dir {results_dir} shows every batch"
        if failed
        else f"Done: {workers} workers finished in {results_dir}"
    )
    return 0 if not any(codes) else 130 if 130 in codes else 1
