"""Claim files: which worker runs which trial, safe on a shared network filesystem.

A claim is a small JSON file (host, pid, process start, start time, a random token) created with
``O_CREAT | O_EXCL``, which exactly one creator wins. That holds over NFS too, from NFSv3 on with
a Linux client of 2.6 or later (open(2): the exclusive create is the server's), which any cluster
psa supports has; advisory locks (flock, fcntl) are what is not to be trusted there.

Its holder refreshes the file's mtime (the heartbeat) at every loop boundary and from a
background thread, so a long loop never looks dead. Another worker treats a claim as stale when
its process is gone (same host: the pid is not running, or runs a later process) or, for another
host, when the heartbeat is older than ``stale_seconds``; it then takes the claim over: it renames
the stale file to a name of its own (one rename of a given file succeeds), checks that it moved
the claim it judged stale (else it puts that one back), and creates its own claim exclusively. A
holder checks its token before every commit, so one that lost its claim stops without writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from psa.atomic import fsync_directory

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0
UNWRITTEN_SECONDS = 60.0
HOST = socket.gethostname()


class ClaimLost(RuntimeError):
    """This worker's claim was taken over (it was judged stale); it must stop writing."""


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a live pid from a reused one), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def read_holder(path: Path) -> dict | None:
    """The claim's JSON, or None while it is being written or when it is unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def is_live(path: Path, holder: dict | None, stale_seconds: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if holder is None:  # a creator writes its claim within milliseconds of creating it
        return age < min(stale_seconds, UNWRITTEN_SECONDS)
    if holder.get("host") != HOST:
        return age < stale_seconds
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return age < stale_seconds
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = holder.get("process_start")
    return started is None or process_start(pid) in (None, started)


@dataclass
class Claim:
    """The claim files of one piece of work, held by this process."""

    paths: list[Path]
    token: str
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def heartbeat(self) -> None:
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)

    def check(self) -> None:
        """Raise ClaimLost unless every file still carries this claim's token."""
        for path in self.paths:
            holder = read_holder(path)
            if holder is None or holder.get("token") != self.token:
                raise ClaimLost(f"{path} was taken over by another worker")

    def release(self) -> None:
        self._stop.set()
        for path in self.paths:
            holder = read_holder(path)
            if holder is not None and holder.get("token") == self.token:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # only when no other claim is there
                    path.parent.rmdir()

    def start_heartbeat(self, seconds: float = HEARTBEAT_SECONDS) -> None:
        def beat() -> None:
            while not self._stop.wait(seconds):
                self.heartbeat()

        self._thread = threading.Thread(target=beat, daemon=True)
        self._thread.start()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(paths: list[Path], stale_seconds: float = STALE_SECONDS) -> Claim | None:
    """Claim every path or none: None when a live worker holds one of them."""
    token = uuid.uuid4().hex
    content = json.dumps(
        {
            "host": HOST,
            "pid": os.getpid(),
            "process_start": process_start(os.getpid()),
            "started": time.time(),
            "token": token,
        }
    ).encode()
    taken: list[Path] = []
    for path in paths:
        if not _take(path, content, stale_seconds):
            Claim(taken, token).release()
            return None
        taken.append(path)
    claim = Claim(taken, token)
    claim.start_heartbeat()
    return claim


def clear_stale(path: Path, stale_seconds: float = STALE_SECONDS) -> bool:
    """Remove the claim at ``path`` if it is stale; False when it is live (or was replaced by a
    live one meanwhile). It is renamed to a name of this process's first (one rename of a file
    succeeds), then checked to be the claim judged stale; another one is put back."""
    holder = read_holder(path)
    if is_live(path, holder, stale_seconds):
        return False
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # another worker cleared or took it first
    if read_holder(aside) != holder:  # replaced after it was judged: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def clear_stale_claims(folder: Path, stale_seconds: float = STALE_SECONDS) -> None:
    """Remove the stale claims under ``folder`` (of workers that died) and emptied folders."""
    for path in sorted(folder.glob("*/*.claim")):
        clear_stale(path, stale_seconds)
    for sub in sorted(folder.glob("*")):
        with contextlib.suppress(OSError):
            sub.rmdir()


def _take(path: Path, content: bytes, stale_seconds: float) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        if _create(path, content):
            return True
        if not clear_stale(path, stale_seconds):
            return False
    return _create(path, content)


def _create(path: Path, content: bytes) -> bool:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        os.write(descriptor, content)
        os.fsync(descriptor)
    except BaseException:
        # A claim that could not be written (a full disk) would look live to every worker for
        # a minute, and held to none: it goes with the failure.
        os.close(descriptor)
        path.unlink(missing_ok=True)
        raise
    os.close(descriptor)
    fsync_directory(path.parent)
    return True
