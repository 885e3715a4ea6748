"""The one base of the project's errors that end a command with one line on stderr, and how
those lines name another command."""

from __future__ import annotations

import os

# Set by ``scripts/poetry run``, so a hint names a command as the user types it.
PREFIX_VARIABLE = "PSA_RUN_PREFIX"


class PsaError(Exception):
    """Bad input or a state the user must fix; the message reads ``<what is wrong>; <what to do>``.

    The console entry layer (``psa.cli``) prints it as ``<command>: <message>`` and exits 1.
    """


def command_hint(command: str) -> str:
    """How the user runs ``command``: ``scripts/poetry run clean`` under scripts/poetry, else
    the bare name."""
    prefix = os.environ.get(PREFIX_VARIABLE, "").strip()
    return f"{prefix} {command}" if prefix else command
