"""The architecture grammar: ``"[4*4, 2*8]"`` <-> a list of (depth, width) stacks.

A segment ``count*width`` adds ``count`` layers of ``width`` units; runs of equal consecutive
widths merge into one stack, so ``[2*8, 3*8]`` is one stack of depth 5.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from psa.errors import PsaError

Stack = tuple[int, int]  # (depth, width)

MAX_DEPTH = 10_000
MAX_WIDTH = 100_000
MAX_PARAMETERS = 2_000_000_000
EXAMPLE = '"[4*4, 2*8]"'

_SEGMENT = re.compile(r"^\s*(\d+)\s*\*\s*(\d+)\s*$")


class ArchError(PsaError, ValueError):
    """A malformed or unreasonable architecture string."""


def parse_arch(text: str) -> list[Stack]:
    """Parse ``"[L*W, ...]"`` into merged (depth, width) stacks, or raise ArchError."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        raise ArchError(f"architecture {text!r} must be in square brackets, e.g. {EXAMPLE}")
    body = stripped[1:-1]
    if not body.strip():
        raise ArchError(f"architecture {text!r} is empty; give at least one layer, e.g. {EXAMPLE}")
    stacks: list[Stack] = []
    for segment in body.split(","):
        match = _SEGMENT.match(segment)
        if not match:
            raise ArchError(
                f"segment {segment.strip()!r} of {text!r} is not COUNT*WIDTH, e.g. {EXAMPLE}"
            )
        count, width = _size(match.group(1)), _size(match.group(2))
        if not 1 <= count <= MAX_DEPTH:
            raise ArchError(
                f"layer count {count} in {text!r} must be between 1 and {MAX_DEPTH}, e.g. {EXAMPLE}"
            )
        if not 1 <= width <= MAX_WIDTH:
            raise ArchError(
                f"width {width} in {text!r} must be between 1 and {MAX_WIDTH}, e.g. {EXAMPLE}"
            )
        if stacks and stacks[-1][1] == width:
            stacks[-1] = (stacks[-1][0] + count, width)
        else:
            stacks.append((count, width))
    if sum(depth for depth, _ in stacks) > MAX_DEPTH:
        raise ArchError(
            f"architecture {text!r} has more than {MAX_DEPTH} layers in all; "
            f"choose a smaller one, e.g. {EXAMPLE}"
        )
    if resmlp_parameter_estimate(stacks) > MAX_PARAMETERS:
        raise ArchError(
            f"architecture {text!r} has more than {MAX_PARAMETERS:,} parameters; "
            f"choose a smaller one, e.g. {EXAMPLE}"
        )
    return stacks


def _size(digits: str) -> int:
    # int() refuses digit strings beyond 4,300 digits; any number that long is absurd anyway.
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def resmlp_parameter_estimate(stacks: list[Stack]) -> int:
    """ResMLP parameter count, computed without building the model (used for sanity limits)."""
    total, current = 0, 784
    for depth, width in stacks:
        if width != current:
            total += current * width + width
        total += 2 * depth * (width * width + width)
        current = width
    return total + current * 10 + 10


def format_arch(stacks: list[Stack]) -> str:
    """The canonical key that result tables print: ``4*17`` or ``4*4, 2*8``."""
    return ", ".join(f"{depth}*{width}" for depth, width in stacks)


def arch_flag(stacks: list[Stack]) -> str:
    """The ``--arch`` form: ``[4*17]``."""
    return f"[{format_arch(stacks)}]"


def arch_slug(stacks: list[Stack]) -> str:
    """A file- and job-name-safe key in upstream's ``LxW`` style: ``4x17`` or ``4x4-2x8``."""
    return "-".join(f"{depth}x{width}" for depth, width in stacks)


def argparse_arch(text: str) -> list[Stack]:
    """``type=`` for argparse: a malformed string becomes argparse's one-line usage error."""
    try:
        return parse_arch(text)
    except ArchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def read_config_file(path: str | Path) -> list[list[Stack]]:
    """Read a configurations file: one ``L*W`` (or bracketed arch) per line; ``#`` starts a comment.

    Raises ArchError naming the file and line of the first malformed entry.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ArchError(f"cannot read configurations file {path}: {error.strerror}") from None
    configs: list[list[Stack]] = []
    for number, line in enumerate(lines, start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        text = entry if entry.startswith("[") else f"[{entry}]"
        try:
            configs.append(parse_arch(text))
        except ArchError as error:
            raise ArchError(f"{path}:{number}: {error}") from None
    if not configs:
        raise ArchError(f"configurations file {path} lists no architectures")
    return configs


def canonical_arch(arch: str | list[Stack]) -> str:
    """The table key of an architecture: ``"4*17"`` for ``"4*17"``, ``"[4*17]"`` or [(4, 17)]."""
    if not isinstance(arch, str):
        return format_arch(list(arch))
    text = arch.strip()
    return format_arch(parse_arch(text if text.startswith("[") else f"[{text}]"))


def arch_stacks(arch: str) -> list[Stack]:
    """The (depth, width) stacks of a table key such as ``"4*17"``."""
    return parse_arch(f"[{arch}]")
