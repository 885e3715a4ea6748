"""Atomic file writes: the one way psa writes a file that someone may read after a crash.

The new content goes to a temp file in the target's folder (``.<name>.<random>.tmp``), is flushed
and fsynced, renamed over the target, and the folder is fsynced so the rename itself is durable.
A kill or a power cut at any instant leaves either the old file or the new one, never a mix; a
failure while writing leaves the old file and removes the temp file. The file gets the usual
permissions (0666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(stream)`` on a binary temp file beside ``path``, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def publish_once(path: str | Path, data: bytes) -> bool:
    """Write ``path`` unless it exists: True if this call wrote it, False if it was there.

    The file is written in full beside its final name and then hard-linked to it: link() fails
    if the name exists, atomically, so of writers racing here exactly one wins and no reader sees
    a partial file (an exclusive create would expose the file while it is being written)."""
    path = Path(path)
    if path.exists():  # a rerun on a dir it may not write to (a finished, read-only one)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, 0o666 & ~_umask())
        try:
            os.link(name, path)
        except FileExistsError:
            return False
        fsync_directory(path.parent)
        return True
    finally:
        Path(name).unlink(missing_ok=True)


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    return write_atomically(path, lambda stream: stream.write(data))


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write a text file atomically; one that already holds ``text`` is left as it is, so that
    rerunning a finished command on a dir it may not write to (read-only, shared) succeeds."""
    data = text.encode("utf-8")
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
    except OSError:
        pass
    return write_bytes_atomically(path, data)


def fsync_directory(folder: str | Path) -> None:
    """Persist the entries of ``folder`` (a rename, a new file); not every platform can."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
