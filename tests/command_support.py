"""Running a console command in-process as its console script does (through psa.cli.run), for
tests of how it refuses bad input."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from unittest import mock

from psa.cli import COMMANDS, CommandParser, run


def command_of(main: Callable) -> str:
    """The console command whose entry point is ``main`` (the first, where aliases share it)."""
    target = f"{main.__module__}:{main.__name__}"
    return next(name for name, entry in COMMANDS.items() if entry == target)


def refusal(capsys, command: str | Callable, argv: list[str]) -> tuple[int, str]:
    """Run ``command`` (a name, or its entry point) with ``argv``; it must fail, its last line on
    stderr saying why, with no traceback. Returns its exit status and that line (notes printed
    before it are the command's own)."""
    capsys.readouterr()
    try:
        status = run(command if isinstance(command, str) else command_of(command), argv)
    except SystemExit as done:  # argparse's usage errors and --help end the process themselves
        status = done.code
    err = capsys.readouterr().err
    assert status not in (0, None), err
    assert "Traceback" not in err
    return status, err.strip().splitlines()[-1]


class _Parsed(Exception):
    """Raised in place of parsing, carrying the parser a command built."""


def parser_of(command: str) -> argparse.ArgumentParser:
    """The parser that console command ``command`` builds (nothing is parsed or run)."""

    def capture(self, args=None, namespace=None):
        raise _Parsed(self)

    module, function = COMMANDS[command].split(":")
    with mock.patch.object(CommandParser, "parse_args", capture):
        try:
            getattr(importlib.import_module(module), function)([])
        except _Parsed as parsed:
            return parsed.args[0]
    raise AssertionError(f"{command} ran without parsing its command line")
