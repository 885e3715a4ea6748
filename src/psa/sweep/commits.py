"""A batch's loop commits: its saved state written whole, then what follows a commit (the claim's
heartbeat, the loop's printed line).

On a GPU, writing every trial's LKG each loop costs as much as a wide network's loop (an H200
trains a ``[1*1024]`` loop at K=60 in about 2 s and took 1.9 s to write its 195 MB), so there
the write runs on a thread while the next loop trains. A loop still counts as committed only
once its write has landed: what follows its commit waits until then, and so do the next commit,
the batch's end and a stop. A kill before the write lands leaves the loop before it, whose log
lines the next run cuts and recomputes, as after a kill between a loop's lines and its state."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from psa.store import BatchState, ResultsStore


class LoopCommits:
    """Commits of one batch, each written before the next starts; ``background``: written on a
    thread while the caller goes on (then call ``land`` before anything that needs the last
    commit on disk, and ``close`` at the end)."""

    def __init__(self, store: ResultsStore, background: bool):
        self.store = store
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="psa-commit") if background else None
        self._pending: tuple[Future, Callable[[], None]] | None = None

    def commit(
        self, state: BatchState, tensors: dict[str, torch.Tensor], then: Callable[[], None]
    ) -> None:
        """Save ``state`` and ``tensors`` (a snapshot the caller no longer changes), then call
        ``then`` on this thread: at once, or when the write has landed."""
        self.land()
        if self._pool is None:
            self.store.save_batch(state, tensors)
            then()
            return
        self._pending = (self._pool.submit(self.store.save_batch, state, tensors), then)

    def land(self) -> None:
        """Wait for the commit in flight, if any, and call what follows it."""
        if self._pending is None:
            return
        written, then = self._pending
        self._pending = None
        written.result()  # a failed write raises here, in the batch's thread
        then()

    def close(self) -> None:
        try:
            self.land()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
