"""The package version and, in a source checkout, the git revision it was run from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psa


def git_revision() -> str | None:
    """The source checkout's commit (with ``-dirty`` if modified), or None outside a checkout."""
    source = Path(psa.__file__).resolve().parent
    # Only a src/ layout checkout counts: an installed copy inside some repository is not one.
    if not (source.parents[1] / "pyproject.toml").is_file():
        return None
    try:
        commit = _git(source, "rev-parse", "--short=12", "HEAD")
        dirty = _git(source, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def version_text(command: str) -> str:
    """``train 0.1.0 (git 0123456789ab)``, without the revision outside a checkout."""
    revision = git_revision()
    suffix = f" (git {revision})" if revision else ""
    return f"{command} {psa.__version__}{suffix}"


def _git(source: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=source, capture_output=True, text=True, timeout=5, check=True
    )
    return done.stdout.strip()
