"""``check-reproduction``: a results dir against a claims file, claim by claim.

A claims file is TOML, one ``[[claim]]`` table per claim:

    [[claim]]
    name = "none-1x1024"                     # short, unique; failures name it
    statement = "[1*1024] none: mean validation bounty over 3 trials"
    command = "results-value --results-dir {results_dir} --where \\"arch == '1*1024'\\" ..."
    expected = 97.87                         # a number, or a word (a regime, a digest)
    tolerance = 0.01                         # numbers only: how far the value may be

A claim of a range gives ``minimum`` and/or ``maximum`` instead of ``expected`` and
``tolerance`` (both inclusive).

``command`` is a command line whose standard output ends with the claimed value; ``{results_dir}``
stands for the results dir being checked. A claims file is data: its commands are psa's queries
(``QUERY_COMMANDS``, which only read), run in this process. Any other command, psa's own (``sweep``,
``clean``) or another program, runs only with ``--allow-programs`` (psa's in this process, others
without a shell); without it the file is refused before any claim runs. A claim of a number
passes when ``|value - expected| <= tolerance``, one of a range when minimum <= value <= maximum,
one of a word when the output's last word is it; a command that fails is a failed claim.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import math
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from psa.cli import COMMANDS, CommandParser, one_line
from psa.errors import PsaError, UsageError

# The commands a claim may name without --allow-programs: they read and print, and nothing else.
QUERY_COMMANDS = ("results-value", "analyze-dataset")


class ClaimsError(PsaError):
    """A claims file that cannot be read; the message says what to fix."""


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    command: str
    expected: float | str | None
    tolerance: float = 0.0
    minimum: float = -math.inf
    maximum: float = math.inf

    def verdict(self, value: str) -> tuple[bool, str]:
        """Whether ``value`` (the output's last word) holds the claim, and how to show it."""
        if isinstance(self.expected, str):
            return value == self.expected, f"{value} (expected {self.expected})"
        try:
            number = float(value)
        except ValueError:
            return False, f"{value} (expected a number)"
        if self.expected is None:
            bounds = [f"at least {self.minimum:.10g}"] if math.isfinite(self.minimum) else []
            bounds += [f"at most {self.maximum:.10g}"] if math.isfinite(self.maximum) else []
            shown = f"{number:.10g} (expected {' and '.join(bounds)})"
            return self.minimum <= number <= self.maximum, shown
        passed = abs(number - self.expected) <= self.tolerance
        return passed, f"{number:.10g} (expected {self.expected:.10g} ± {self.tolerance:g})"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="check-reproduction",
        description="Check a results dir against a claims file: run each claim's command, "
        "compare its value with the expected one within the tolerance, print PASS or FAIL per "
        "claim; exit status 1 when a claim fails. See REPRODUCTION.md.",
    )
    parser.add_argument("--results-dir", type=Path, required=True, help="the results dir to check")
    parser.add_argument(
        "--claims",
        type=Path,
        required=True,
        help="the claims file (TOML), e.g. reproduction/claims/shipped.toml",
    )
    parser.add_argument(
        "--allow-programs",
        action="store_true",
        help="also run claims whose command is not one of psa's queries ("
        + ", ".join(QUERY_COMMANDS)
        + "): another psa command or any program; read the claims file first",
    )
    return parser


def read_claims(path: Path) -> list[Claim]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"claims file {path} does not exist; give a claims file") from None
    except OSError as error:
        raise ClaimsError(f"cannot read claims file {path} ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ClaimsError(f"{path} is not TOML ({error}); fix it") from None
    entries = document.get("claim")
    if not isinstance(entries, list) or not entries:
        raise ClaimsError(f"{path} holds no [[claim]] tables; see REPRODUCTION.md for the format")
    claims, names = [], set()
    for number, entry in enumerate(entries, start=1):
        try:
            claim = parse_claim(entry)
        except (KeyError, TypeError, ValueError) as error:
            raise ClaimsError(
                f"{path}: claim {number} needs name, statement, command, and expected (a number, "
                "with a tolerance, or a word) or minimum and/or maximum; "
                f"{type(error).__name__}: {error}"
            ) from None
        if claim.name in names:
            raise ClaimsError(f"{path}: two claims are named {claim.name!r}; name each once")
        if claim.tolerance < 0 or not math.isfinite(claim.tolerance):
            raise ClaimsError(f"{path}: claim {claim.name!r} has a tolerance below 0")
        names.add(claim.name)
        claims.append(claim)
    return claims


def parse_claim(entry: dict) -> Claim:
    words = str(entry["name"]), str(entry["statement"]), str(entry["command"])
    if "expected" not in entry and ("minimum" in entry or "maximum" in entry):
        low, high = (_number(entry.get(key, default)) for key, default in BOUNDS)
        if "tolerance" in entry or not low <= high:
            raise ValueError("a range is minimum <= maximum, without expected or tolerance")
        return Claim(*words, None, minimum=low, maximum=high)
    expected = entry["expected"]
    if isinstance(expected, str):
        if _number(entry.get("tolerance", 0)) != 0:
            raise ValueError("a word is expected exactly: leave out its tolerance")
        return Claim(*words, expected)
    return Claim(*words, _number(expected), _number(entry["tolerance"]))


BOUNDS = (("minimum", -math.inf), ("maximum", math.inf))


def _number(value) -> float:
    if isinstance(value, bool):
        raise TypeError("true or false is not a number")
    return float(value)


def command_words(command: str) -> list[str]:
    """A claim's command line as words, ``psa`` dropped from the front."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return []
    return argv[1:] if argv[:1] == ["psa"] else argv


def refuse_programs(claims: list[Claim], path: Path) -> None:
    """Refuse a claims file with a claim that is not a psa query, before any claim runs."""
    for claim in claims:
        argv = command_words(claim.command)
        if not argv or argv[0] not in QUERY_COMMANDS:
            ran = repr(argv[0]) if argv else "nothing"
            raise ClaimsError(
                f"{path}: claim {claim.name!r} runs {ran}, not one of psa's queries "
                f"({', '.join(QUERY_COMMANDS)}); read the claims file, and rerun with "
                "--allow-programs only if you trust every command in it"
            )


def evaluate(claim: Claim, results_dir: Path) -> str:
    """The last word ``claim``'s command prints for ``results_dir``; PsaError if none."""
    text = claim.command.replace("{results_dir}", shlex.quote(str(results_dir)))
    argv = command_words(text)
    if not argv:
        raise PsaError(f"its command {claim.command!r} is not a command line")
    if argv[0] in COMMANDS:
        out = run_in_process(argv)
    else:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.SubprocessError) as error:
            raise PsaError(f"cannot run {argv[0]!r} ({error})") from None
        if done.returncode:
            raise PsaError(f"exit status {done.returncode}: {one_line(done.stderr)[-300:]}")
        out = done.stdout
    words = out.split()
    if not words:
        raise PsaError("it printed nothing")
    return words[-1]


def run_in_process(argv: list[str]) -> str:
    module, function = COMMANDS[argv[0]].split(":")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            getattr(importlib.import_module(module), function)(argv[1:])
    except SystemExit as done:
        if done.code:
            message = done.code if isinstance(done.code, str) else err.getvalue()
            raise PsaError(one_line(str(message))) from None
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.results_dir.is_dir():
        raise UsageError(f"--results-dir {args.results_dir} does not exist; give a results dir")
    claims = read_claims(args.claims)
    if not args.allow_programs:
        refuse_programs(claims, args.claims)
    failed = []
    for claim in claims:
        try:
            value = evaluate(claim, args.results_dir)
        except PsaError as error:
            failed.append(claim.name)
            print(f"FAIL  {claim.name}: {claim.statement}: the command failed ({error})")
            continue
        passed, shown = claim.verdict(value)
        if not passed:
            failed.append(claim.name)
        print(f"{'PASS' if passed else 'FAIL'}  {claim.name}: {claim.statement}: {shown}")
    print(f"{len(claims) - len(failed)} of {len(claims)} claims pass", end="")
    if failed:
        print(f"; failed: {', '.join(failed)}")
        sys.stdout.flush()
        return 1
    print()
    return 0
