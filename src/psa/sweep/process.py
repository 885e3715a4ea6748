"""A sweep as the whole of a process: a shard task, a --devices worker, a SageMaker job. Such a
process has no command line of its own, so this is its entry layer: what the run reports goes to
the printer it was handed, a refusal ends it with one line, a stop with its exit status."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

from psa.errors import PsaError, exit_status, exit_with
from psa.sweep.events import OnEvent, ignore
from psa.sweep.request import SweepRequest

# What a process reports through: a factory of a context manager that gives the event listener
# (the command line's printer class, which pickles by name); None reports nothing.
Printer = Callable[[], contextlib.AbstractContextManager[OnEvent]]


def run_reported(request: SweepRequest, printer: Printer | None = None) -> None:
    """Run ``request``, reporting through ``printer``; a refusal ends the process with one line
    ``sweep: ...``, a stop with its exit status (130 or 143)."""
    from psa.sweep import runner  # torch loads here, in the process that trains

    try:
        with printer() if printer is not None else contextlib.nullcontext(ignore) as on_event:
            runner.run(request, on_event)
    except PsaError as error:
        exit_with("sweep", error)
    except KeyboardInterrupt as error:
        sys.exit(exit_status(error))
