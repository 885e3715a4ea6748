"""How a command ends when it does not succeed: the project's errors (one line on stderr), a stop
by a signal, the one table of exit statuses, and how those lines name another command.

Exit statuses: 0 done; 1 a PsaError (bad input or a state to fix); 2 a usage error (the command
line as given cannot run); 3 not finished (work this command was asked for is held by another
worker, not done yet); 128 + the signal after a stop (130 Ctrl-C, 143 SIGTERM); 141 when
stdout's reader went away (psa.cli.closed_output)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import NoReturn

# The name psa is installed by from the package index (``psa`` there is another project).
DISTRIBUTION = "persistent-stochastic-ablation"
# Set by ``scripts/poetry run``, so a hint names a command as the user types it.
PREFIX_VARIABLE = "PSA_RUN_PREFIX"


class PsaError(Exception):
    """Bad input or a state the user must fix; the message reads ``<what is wrong>; <what to do>``.

    The console entry layer (``psa.cli``) prints it as ``<command>: <message>`` and exits 1;
    library code raises it and never exits itself.
    """


class UsageError(PsaError):
    """A PsaError that is the command line's: flags that cannot go together; exit status 2."""


class Unfinished(PsaError):
    """The command did what it could, but part of what it was asked for is still running
    elsewhere (claimed by another worker), so it is not done; exit status 3."""


class UsageExit(SystemExit):
    """Ends a command with its one line and exit status 2: the command line is wrong as given
    (flags that cannot go together, a named input that does not exist or cannot be used).

    Raised as ``UsageExit("<command>: <what is wrong>; <what to do>")``, like ``sys.exit(line)``,
    whose status is 1."""


class Interrupted(KeyboardInterrupt):
    """A stop by ``signum`` (SIGINT or SIGTERM); code that stops cleanly on Ctrl-C stops the
    same way on either."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


def exit_status(error: BaseException) -> int:
    """The exit status of a command that ended with ``error`` (the table above)."""
    if isinstance(error, KeyboardInterrupt):
        return 128 + int(getattr(error, "signum", signal.SIGINT))
    if isinstance(error, UsageError | UsageExit):
        return 2
    if isinstance(error, Unfinished):
        return 3
    return 1


def stopped_line(command: str, error: KeyboardInterrupt, detail: str) -> str:
    """Every command's last line after a stop: ``<command>: stopped by SIGINT; <detail>``."""
    name = signal.Signals(getattr(error, "signum", signal.SIGINT)).name
    return f"{command}: stopped by {name}; {detail}"


def exit_with(prog: str, error: PsaError) -> NoReturn:
    """End the command with ``<prog>: <error>``: exit status 2 for a UsageError, else 1."""
    raise (UsageExit if isinstance(error, UsageError) else SystemExit)(f"{prog}: {error}") from None


def install_hint(extra: str) -> str:
    """How the user installs an optional extra: through scripts/poetry when that runs them."""
    prefix = os.environ.get(PREFIX_VARIABLE, "").strip()
    if prefix.endswith(" run"):
        return f"{prefix.removesuffix(' run')} install -E {extra}"
    return f"pip install '{DISTRIBUTION}[{extra}]' (or: poetry install -E {extra})"


def command_hint(command: str) -> str:
    """How the user runs ``command``, one of psa's or another of its environment's
    (``tensorboard``): ``scripts/poetry run clean`` under scripts/poetry, else the bare name."""
    prefix = os.environ.get(PREFIX_VARIABLE, "").strip()
    return f"{prefix} {command}" if prefix else command


def os_error_line(error: OSError) -> str:
    """What an operating-system error means to the user, in one line with what to do. Whatever
    a command had saved before it stays as it is: no advice here deletes anything."""
    path = None if error.filename is None else Path(os.fsdecode(error.filename))
    if path is not None and path.name.startswith(".") and path.suffix == ".tmp":
        path = path.parent  # psa.atomic's temp file: what matters is its folder
    number = error.errno
    if number in (errno.ENOSPC, errno.EDQUOT):
        where = "" if path is None else f" writing {path}"
        return (
            f"no space left on the device{where}; free some space and rerun the same command "
            "(what was saved before is kept)"
        )
    if path is None:
        return f"{error.strerror or error}; check the disk and the paths given, then rerun"
    if number in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied for {path}; give your user access to it, or choose another "
            "folder (what is there was left as it is)"
        )
    if number == errno.EROFS:
        return f"{path} is on a read-only file system; choose a writable folder"
    if number in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((part for part in (path, *path.parents) if part.is_file()), path)
        return f"{blocking} is a file where a folder is needed; give a folder's path instead"
    if number == errno.EISDIR:
        return f"{path} is a folder where a file is needed; give a file's path instead"
    if number == errno.ENOENT:
        return f"{path} does not exist; check the path"
    return f"{path}: {error.strerror}; check it and rerun"
