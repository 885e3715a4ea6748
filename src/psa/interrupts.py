"""Stopping cleanly: SIGTERM (a spot reclaim, `kill`) stops like Ctrl-C, and short critical
sections hold both until they are done, so what is on disk always agrees with itself.

A stop raises ``psa.errors.Interrupted`` (a KeyboardInterrupt that remembers its signal); a
command that ends on one exits with ``psa.errors.exit_status(error)``: 130 after SIGINT, 143 after
SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from psa.errors import Interrupted

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requeued = [False]  # whether a scheduler runs this stopped process again by itself
_may_have_saved = [False]  # whether the command running may have saved work (see saving())


def announce_requeue(requeued: bool) -> None:
    """Say that the coming stop is followed by a requeue (a SLURM task warned of its time limit),
    so the stop's message does not ask the user to rerun anything."""
    _requeued[0] = requeued


def resume_hint() -> str:
    """How a stopped run resumes: rerun by the user, or requeued by the scheduler."""
    if _requeued[0]:
        return "the scheduler requeues this task and it resumes by itself (nothing to rerun)"
    return "rerun the same command to resume"


def command_begins() -> None:
    """A command starts: nothing of its own is on disk yet."""
    _may_have_saved[0] = False


def saving() -> None:
    """From here on a stop may leave work of the running command on disk (a loop's commit, a
    worker started), so its stop line no longer says that nothing was saved."""
    _may_have_saved[0] = True


def saved_nothing() -> bool:
    """Whether the running command has certainly saved nothing: ``train`` and ``sweep`` save
    their loops only inside :func:`held` sections, which mark it, and their workers and
    launchers mark it before they start."""
    return not _may_have_saved[0]


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt; the caller's handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for the duration; a held signal stops the run right after. Work
    is saved inside such sections, so entering one counts as :func:`saving`."""
    saving()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        number: signal.signal(number, lambda signum, frame: received.append(signum))
        for number in _STOP_SIGNALS
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:
        raise Interrupted(received[0])


def _raise_interrupt(signum, frame) -> None:
    raise Interrupted(signum)
