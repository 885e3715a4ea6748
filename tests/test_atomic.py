"""The one atomic-write helper: whole files or nothing, durable, ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from psa import atomic
from psa.atomic import write_atomically, write_bytes_atomically, write_text_atomically


def test_a_write_replaces_the_file_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "table.md"
    write_text_atomically(path, "old\n")
    write_text_atomically(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.md"]


def test_a_failing_writer_leaves_the_old_file_and_removes_its_temp_file(tmp_path):
    path = tmp_path / "records.jsonl"
    write_bytes_atomically(path, b"kept\n")

    def half_then_fail(stream):
        stream.write(b"torn")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, half_then_fail)
    assert path.read_bytes() == b"kept\n"
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]


def test_the_file_gets_the_umask_permissions_not_mkstemps(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_text_atomically(tmp_path / "settings.json", "{}\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_the_data_and_then_the_folder_are_fsynced_before_the_call_returns(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        target = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        synced.append("folder" if target.is_dir() else "file")
        real_fsync(descriptor)

    def replace(source, target):
        synced.append("rename")
        real_replace(source, target)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell a folder's descriptor from a file's")
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    write_text_atomically(tmp_path / "figure.png", "x")
    assert synced == ["file", "rename", "folder"]
