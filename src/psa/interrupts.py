"""Stopping cleanly: SIGTERM (a spot reclaim, `kill`) stops like Ctrl-C, and short critical
sections hold both until they are done, so what is on disk always agrees with itself."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    """Hold Ctrl-C and SIGTERM for the duration; a held signal stops the run right after."""
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
        raise KeyboardInterrupt


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
