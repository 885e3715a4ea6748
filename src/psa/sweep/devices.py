"""``sweep --devices D1,D2,...``: one worker process per device of this machine, worker i running
shard i of N of the same request on the same results dir. Each worker holds its shard's
SweepRequest, reports into its own log and is the entry of its process (a refusal ends it with
one line ``sweep: ...``); a Ctrl-C or SIGTERM reaches every worker, which stops cleanly as a
single sweep does."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from psa import interrupts
from psa.errors import UsageError
from psa.store import ResultsStore, worker_log_name
from psa.sweep.process import Printer, run_reported
from psa.sweep.request import Shard, SweepRequest


@dataclass(frozen=True)
class Worker:
    """Worker ``index`` of ``count`` on ``device``: its process id and log once started, its exit
    status and its last ``sweep:`` line (a refusal) once ended."""

    index: int
    count: int
    device: str
    threads: int | None
    log: Path
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None


def parse_devices(text: str) -> tuple[str, ...]:
    """``"cuda:0,cuda:1"`` -> the device names (:func:`check_present` checks them on this
    machine); raises ValueError when none is named."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError(f"{text!r} names no device; give e.g. cuda:0,cuda:1")
    return names


def check_present(names: tuple[str, ...]) -> None:
    """Refuse, as the command line's error, a device name this machine lacks or torch does not
    know: checked before any worker starts, where each such worker would only fail."""
    from psa.device import DeviceError, absence, parse_device  # torch loads here

    for name in names:
        if name == "auto":
            continue
        try:
            reason = absence(parse_device(name))
        except DeviceError as error:
            raise UsageError(f"--devices: {error}") from None
        if reason is not None:
            raise UsageError(
                f"--devices names {name}, but {reason}; name only devices this machine has "
                "(e.g. --devices cpu,cpu for two workers on the CPU)"
            )


def log_folder(request: SweepRequest, launcher_dir: Path | None) -> Path:
    return (launcher_dir or ResultsStore(request.results_dir).launcher_dir).absolute()


def workers(
    request: SweepRequest, devices: tuple[str, ...], launcher_dir: Path | None = None
) -> list[Worker]:
    """The workers ``run_workers`` starts, in shard order (nothing is started); refuses devices
    this machine lacks."""
    if request.shard is not None:
        raise UsageError("--devices starts one shard per device itself; drop --shard/--launcher")
    check_present(devices)
    threads = request.config.threads  # settled: every worker trains with the dir's count
    folder = log_folder(request, launcher_dir)
    count = len(devices)
    return [
        Worker(
            index,
            count,
            device,
            threads if device.split(":")[0] == "cpu" else None,
            folder / worker_log_name(index, count),
        )
        for index, device in enumerate(devices, start=1)
    ]


def shard_request(request: SweepRequest, worker: Worker) -> SweepRequest:
    return request.for_shard(Shard(worker.index, worker.count), worker.device)


def _work(request: SweepRequest, log: Path, printer: Printer | None) -> None:
    """A worker's body (a fresh interpreter): output to its log, then the shard's sweep. The log
    stays open to the end, so the exit's own message (a refusal's line) lands in it too."""
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    with interrupts.sigterm_stops():  # the sweep sets its torch threads from its settings
        run_reported(request, printer)


def last_error(log: Path) -> str | None:
    """The worker's one-line refusal: the last ``sweep: `` line of its log."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.strip() for line in lines if line.startswith("sweep: ")]
    return errors[-1] if errors else None


def run_workers(
    request: SweepRequest,
    devices: tuple[str, ...],
    launcher_dir: Path | None = None,
    printer: Printer | None = None,
    on_start: Callable[[Worker], None] = lambda worker: None,
) -> list[Worker]:
    """Start one worker per device, report each as it starts, wait; the workers as they ended.
    A stop (Ctrl-C, SIGTERM) reaches every worker and is raised once all have stopped."""
    planned = workers(request, devices, launcher_dir)
    planned[0].log.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = []
    for worker in planned:
        process = context.Process(
            target=_work,
            args=(shard_request(request, worker), worker.log, printer),
            name=f"psa-shard-{worker.index}",
        )
        process.start()
        processes.append(process)
        on_start(Worker(**{**worker.__dict__, "pid": process.pid}))
    try:
        with interrupts.sigterm_stops():
            for process in processes:
                process.join()
    except KeyboardInterrupt:
        for process in processes:  # a terminal's Ctrl-C reached them already; a kill did not
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join()
        raise
    return [
        Worker(
            **{
                **worker.__dict__,
                "pid": process.pid,
                "exit_code": process.exitcode,
                "error": last_error(worker.log) if process.exitcode else None,
            }
        )
        for worker, process in zip(planned, processes)
    ]
