"""Progress of a command that works through many jobs, on stderr so stdout keeps its output.

On a terminal it is a rich progress bar (done/total, elapsed, remaining, the current job); elsewhere
(a log file, CI) it is a plain line ``<command>: <done>/<total> <what>`` at every tenth of the work
and at the end.
"""

from __future__ import annotations

import math
import sys
from typing import TextIO

PLAIN_LINES = 10


class Progress:
    """``with Progress(prog, "jobs read", total) as progress: ... progress.advance(job)``."""

    def __init__(self, prog: str, what: str, total: int, stream: TextIO | None = None):
        self.prog, self.what, self.total = prog, what, total
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self._every = max(1, math.ceil(total / PLAIN_LINES))
        self._bar = None

    def __enter__(self) -> Progress:
        isatty = getattr(self.stream, "isatty", None)
        if self.total and isatty is not None and isatty():
            self._bar = _rich_bar(self.prog, self.what, self.stream)
            self._task = self._bar.add_task("", total=self.total)
            self._bar.start()
        return self

    def advance(self, label: str = "") -> None:
        """One more item done; `label` (a job name) shows on the bar."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=label)
        elif self.done % self._every == 0 or self.done == self.total:
            line = f"{self.prog}: {self.done}/{self.total} {self.what}"
            print(line, file=self.stream, flush=True)

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.stop()


def _rich_bar(prog: str, what: str, stream: TextIO):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    return Bar(
        TextColumn(f"{prog}: {what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=Console(file=stream),
        # Lines the command prints to stdout go above the bar only when stdout is that terminal.
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    )
