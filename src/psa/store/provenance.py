"""Provenance files of a results dir or a model dir: ``provenance/<run id>.json``, one per
command run that wrote there, and ``provenance/<run id>.diff`` for a run from a dirty checkout
(what psa.provenance captured). Records and loop-log lines carry the run id only."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psa.atomic import write_bytes_atomically, write_text_atomically
from psa.store.jsonlines import ResultsFormatError

PROVENANCE_DIR = "provenance"
RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{6}$")
# A provenance file's path inside a results dir (as in a job's model.tar.gz).
PROVENANCE_NAME = re.compile(
    rf"^{PROVENANCE_DIR}/[0-9]{{8}}T[0-9]{{12}}Z-[0-9a-f]{{6}}\.(json|diff)$"
)


def provenance_dir(root: Path) -> Path:
    return Path(root) / PROVENANCE_DIR


def write_provenance(root: Path, provenance) -> Path:
    """Write (or rewrite, when the run ends) a run's provenance atomically; its diff first, so
    a provenance file that names a diff file always has it."""
    folder = provenance_dir(root)
    if provenance.diff is not None and not (folder / f"{provenance.id}.diff").exists():
        write_bytes_atomically(folder / f"{provenance.id}.diff", provenance.diff.encode())
    text = json.dumps(provenance.fields, indent=2) + "\n"
    return write_text_atomically(folder / f"{provenance.id}.json", text)


@contextmanager
def recording(root: Path, provenance) -> Iterator:
    """Write ``provenance`` into ``root`` now and again when the block ends, marked finished,
    stopped (a signal, or the exit status 130/143 a stopped command ends with) or failed. Files
    under src/ that the commit lacks get their one warning line on stderr as the run starts."""
    write_provenance(root, provenance)
    if provenance.source_warning:
        print(provenance.source_warning, file=sys.stderr)
    outcome = "failed"
    try:
        yield provenance
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "stopped"
        raise
    except SystemExit as done:
        outcome = (
            "finished" if not done.code else "stopped" if done.code in (130, 143) else "failed"
        )
        raise
    finally:
        provenance.end(outcome)
        write_provenance(root, provenance)


def read_provenance(root: Path) -> dict[str, dict]:
    """Every run's provenance in a results or model dir, by run id (oldest first)."""
    runs = {}
    for path in sorted(provenance_dir(root).glob("*.json")):
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ResultsFormatError(f"cannot read provenance {path}: {error}") from None
        if not isinstance(fields, dict) or "id" not in fields:
            raise ResultsFormatError(f"{path} is not a run's provenance (a JSON object with id)")
        runs[fields["id"]] = fields
    return runs


def write_provenance_file(root: Path, name: str, data: bytes) -> None:
    """Write a provenance file named relative to a results dir (``provenance/<run id>.json``, as
    in a job's model.tar.gz) whole."""
    if not PROVENANCE_NAME.match(name):
        raise ResultsFormatError(f"{name} is not a provenance file's name in a results dir")
    write_bytes_atomically(Path(root) / name, data)


def provenance_files(root: Path) -> list[Path]:
    """The files named by a run id in a results or model dir's provenance folder
    (``<run id>.json``, ``<run id>.diff``): what a merge copies."""
    return sorted(path for path in provenance_dir(root).glob("*") if RUN_ID.match(path.stem))


def copy_provenance(source: Path, target: Path) -> int:
    """Copy the provenance files ``target`` lacks from ``source`` (a merge keeps the runs its
    records name); the number copied."""
    copied = 0
    for path in provenance_files(source):
        destination = provenance_dir(target) / path.name
        if path.is_file() and not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(destination, path.read_bytes())
            copied += 1
    return copied
