"""Terminal output of the training commands: rich tables and bars on a terminal, one plain
line per meta-loop everywhere else (CI, SageMaker, pipes), in a format log parsers read; tables
there as plain aligned text.

rich is imported only for a terminal: it is half a second of every other run's start-up.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from psa.engine import LoopReport, TrialState
from psa.model import Network
from psa.store import schema
from psa.wording import count

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table


def loop_line(index: int, total: int, report: LoopReport, state: TrialState, k: int = 0) -> str:
    """``Loop k/N (Global: g) | Current: x% | LKG: y% | Bounty: z% | …`` (upstream's log form)."""
    return schema.loop_line(
        index,
        total,
        report.loop,
        report.val_accuracy[k],
        state.lkg_accuracy,
        state.bounty_loop,
        report.promoted[k],
        report.train_seconds,
    )


class TrainingDisplay:
    def __init__(self, network: Network, args, device, seeds):
        self.console = terminal_console()
        self.rich = self.console is not None
        self.network, self.args, self.device, self.seeds = network, args, device, seeds
        self._progress: Progress | None = None

    def print(self, text: str) -> None:
        target = self._progress.console if self._progress is not None else self.console
        if self.rich:
            target.print(text)
        else:
            print(text, flush=True)

    def header(self, data_seconds: float, checkpoint: Path) -> None:
        network, args = self.network, self.args
        if self.rich:
            self.console.print(architecture_table(network))
        self.print(
            f"{network.model} {network.arch.flag} | {network.parameter_count():,} parameters"
            f" | mode {args.ablation_mode} | device {self.device.type}"
            f" ({count(args.threads, 'thread')}) | precision "
            f"{args.precision} | seed {self.seeds.run} (data seed {self.seeds.data})"
        )
        self.print(f"Data ready in {data_seconds:.2f}s | checkpoint {checkpoint}")

    def resumed(self, metadata: dict, lkg_accuracy: float, last_mode: str) -> None:
        self.print(
            f"Resuming from {metadata['loops_completed']} completed meta-loops: LKG re-evaluated "
            f"at {lkg_accuracy:.2f}% (stored bounty {metadata['bounty']:.2f}% @ "
            f"{metadata['bounty_loop']})"
        )
        if last_mode != self.args.ablation_mode:
            self.print(f"Ablation mode switched: {last_mode} -> {self.args.ablation_mode}")

    @contextlib.contextmanager
    def progress(self, total: int) -> Iterator[Callable[[], None]]:
        if not self.rich:
            yield lambda: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("meta-loops"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            self._progress = progress
            task = progress.add_task("train", total=total)
            try:
                yield lambda: progress.advance(task)
            finally:
                self._progress = None

    def loop(self, index: int, report: LoopReport, state: TrialState) -> None:
        self.print(loop_line(index, self.args.meta_loops, report, state))
        target = report.targets[0]
        if self.args.debug and target is not None:
            described = target.describe(self.network)
            self.print(f"  ablated neuron {described['neuron']} of {described['layer']}")

    def finished(
        self, state: TrialState, test_accuracy: float, loops: int, checkpoint: Path
    ) -> None:
        self.print(f"Final LKG model stored at: {checkpoint}")
        self.print(
            f"Final Bounty (best validation accuracy): {state.lkg_accuracy:.2f}% @ "
            f"{state.bounty_loop}/{loops}"
        )
        self.print(f"Final Test Accuracy: {test_accuracy:.2f}%")


def terminal_console() -> Console | None:
    """A rich console when stdout is a terminal (rich decides, honouring FORCE_COLOR and
    TTY_INTERACTIVE), else None, without importing rich."""
    forced = os.environ.get("FORCE_COLOR") or os.environ.get("TTY_INTERACTIVE")
    if not (forced or sys.stdout.isatty()):
        return None
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    return console if console.is_terminal else None


def architecture_table(network: Network) -> Table:
    from rich.table import Table

    table = Table(title=f"{network.model} {network.arch.flag}")
    for column in ("#", "layer", "role", "in", "out", "parameters"):
        table.add_column(
            column, justify="right" if column in ("#", "in", "out", "parameters") else "left"
        )
    for index, spec in enumerate(network.linears):
        table.add_row(
            str(index),
            spec.name,
            spec.role,
            str(spec.in_features),
            str(spec.out_features),
            f"{spec.out_features * (spec.in_features + 1):,}",
        )
    table.add_section()
    table.add_row("", "total", "", "", "", f"{network.parameter_count():,}")
    return table


def print_table(console: Console, table: Table) -> None:
    """``table`` as rich draws it on a terminal; elsewhere (a pipe, a log, CI) as plain aligned
    text, with no box characters for a reader or a parser to trip on."""
    if console.is_terminal:
        console.print(table)
    else:
        print(plain_table(table) + "\n", flush=True)  # a blank line ends it, as a border would


def plain_table(table: Table) -> str:
    """The title, then the header (when the table shows one) and each row on a line, the columns
    two spaces apart, each aligned as the table aligns it."""
    columns = [
        ([str(column.header)] if table.show_header else []) + [str(cell) for cell in column.cells]
        for column in table.columns
    ]
    widths = [max(len(text) for text in cells) for cells in columns]
    lines = [str(table.title)] if table.title else []
    for row in zip(*columns):
        cells = [
            text.rjust(width) if column.justify == "right" else text.ljust(width)
            for text, width, column in zip(row, widths, table.columns)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
