"""The architecture grammar and the ``Arch`` value: ``"[4*4, 2*8]"`` <-> (depth, width) stacks.

A segment ``count*width`` adds ``count`` layers of ``width`` units; runs of equal consecutive
widths merge into one stack, so ``[2*8, 3*8]`` is one stack of depth 5. Counts and widths are
ASCII digits. Text is parsed once, where it enters the program (a flag, a configurations file, a
results file); inside, an ``Arch`` carries every name it goes by.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from psa.errors import PsaError

Stack = tuple[int, int]  # (depth, width)

MAX_DEPTH = 10_000
MAX_WIDTH = 100_000
MAX_PARAMETERS = 2_000_000_000
EXAMPLE = '"[4*4, 2*8]"'
INPUT_FEATURES = 784
CLASSES = 10

_SEGMENT = re.compile(r"^[ \t]*([0-9]+)[ \t]*\*[ \t]*([0-9]+)[ \t]*$", re.ASCII)
_BLANKS = " \t\r\n"


class ArchError(PsaError, ValueError):
    """A malformed or unreasonable architecture string."""


@dataclass(frozen=True, order=True)
class Arch:
    """An architecture: its merged (depth, width) stacks and the names it goes by.

    ``Arch([(2, 8), (3, 8)])`` merges to one stack of depth 5, as the grammar does; a stack
    outside the grammar's limits raises ArchError.
    """

    stacks: tuple[Stack, ...]

    def __post_init__(self) -> None:
        stacks = _merge(self.stacks)
        _check_limits(stacks, ", ".join(f"{d}*{w}" for d, w in stacks))
        object.__setattr__(self, "stacks", stacks)

    @property
    def key(self) -> str:
        """The canonical key that result tables and records print: ``4*17`` or ``4*4, 2*8``."""
        return ", ".join(f"{depth}*{width}" for depth, width in self.stacks)

    @property
    def flag(self) -> str:
        """The ``--arch`` form: ``[4*17]``."""
        return f"[{self.key}]"

    @property
    def slug(self) -> str:
        """A file- and job-name-safe name in upstream's ``LxW`` style: ``4x17`` or ``4x4-2x8``."""
        return "-".join(f"{depth}x{width}" for depth, width in self.stacks)

    @property
    def depth(self) -> int:
        return sum(depth for depth, _ in self.stacks)

    @property
    def resmlp_parameters(self) -> int:
        """Parameters of the ResMLP: a projection wherever the width changes, two Linears per
        residual block, the final Linear to the 10 classes."""
        return _resmlp_parameters(self.stacks)

    @property
    def mlp_parameters(self) -> int:
        """Parameters of the first paper's plain MLP (one Linear per layer), which upstream's
        tables printed for every architecture."""
        total, current = 0, INPUT_FEATURES
        for depth, width in self.stacks:
            total += current * width + width + (depth - 1) * (width * width + width)
            current = width
        return total + current * CLASSES + CLASSES

    def parameters(self, model: str) -> int:
        """The parameter count of ``model`` ("resmlp" or "mlp")."""
        if model == "resmlp":
            return self.resmlp_parameters
        if model == "mlp":
            return self.mlp_parameters
        raise ValueError(f"unknown model {model!r}; choose resmlp or mlp")

    def __str__(self) -> str:
        return self.flag


def _merge(segments) -> tuple[Stack, ...]:
    merged: list[Stack] = []
    for depth, width in segments:
        if merged and merged[-1][1] == width:
            merged[-1] = (merged[-1][0] + depth, width)
        else:
            merged.append((depth, width))
    return tuple(merged)


def _check_limits(stacks: tuple[Stack, ...], text: str) -> None:
    """Refuse stacks outside the grammar's limits; ``text`` is how the user wrote them."""
    if not stacks:
        raise ArchError(f"architecture {text!r} is empty; give at least one layer, e.g. {EXAMPLE}")
    for depth, width in stacks:
        if not 1 <= depth <= MAX_DEPTH:
            raise ArchError(
                f"layer count {depth} in {text!r} must be between 1 and {MAX_DEPTH}, e.g. {EXAMPLE}"
            )
        if not 1 <= width <= MAX_WIDTH:
            raise ArchError(
                f"width {width} in {text!r} must be between 1 and {MAX_WIDTH}, e.g. {EXAMPLE}"
            )
    if sum(depth for depth, _ in stacks) > MAX_DEPTH:
        raise ArchError(
            f"architecture {text!r} has more than {MAX_DEPTH} layers in all; "
            f"choose a smaller one, e.g. {EXAMPLE}"
        )
    if _resmlp_parameters(stacks) > MAX_PARAMETERS:
        raise ArchError(
            f"architecture {text!r} has more than {MAX_PARAMETERS:,} parameters; "
            f"choose a smaller one, e.g. {EXAMPLE}"
        )


def _resmlp_parameters(stacks: tuple[Stack, ...]) -> int:
    total, current = 0, INPUT_FEATURES
    for depth, width in stacks:
        if width != current:
            total += current * width + width
        total += 2 * depth * (width * width + width)
        current = width
    return total + current * CLASSES + CLASSES


def parse_arch(text: str) -> Arch:
    """Parse the ``--arch`` grammar ``"[L*W, ...]"``, or raise ArchError."""
    stripped = text.strip(_BLANKS)
    if not (stripped.startswith("[") and stripped.endswith("]")):
        raise ArchError(f"architecture {text!r} must be in square brackets, e.g. {EXAMPLE}")
    return _parse_body(stripped[1:-1], text)


def parse_key(text: str) -> Arch:
    """Parse an architecture as results files store it: the key ``4*17`` (brackets optional)."""
    stripped = text.strip(_BLANKS)
    if stripped.startswith("[") and stripped.endswith("]"):
        stripped = stripped[1:-1]
    return _parse_body(stripped, text)


def _parse_body(body: str, text: str) -> Arch:
    if not body.strip(_BLANKS):
        raise ArchError(f"architecture {text!r} is empty; give at least one layer, e.g. {EXAMPLE}")
    segments: list[Stack] = []
    for segment in body.split(","):
        match = _SEGMENT.match(segment)
        if not match:
            raise ArchError(
                f"segment {segment.strip()!r} of {text!r} is not COUNT*WIDTH in ASCII digits, "
                f"e.g. {EXAMPLE}"
            )
        segments.append((_size(match.group(1)), _size(match.group(2))))
    _check_limits(tuple(segments), text)  # each segment as written, before merging
    stacks = _merge(segments)
    _check_limits(stacks, text)
    return Arch(stacks)


def _size(digits: str) -> int:
    # int() refuses digit strings beyond 4,300 digits; any number that long is absurd anyway.
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def argparse_arch(text: str) -> Arch:
    """``type=`` for argparse: a malformed string becomes argparse's one-line usage error."""
    try:
        return parse_arch(text)
    except ArchError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def read_config_file(path: str | Path) -> list[Arch]:
    """Read a configurations file: one ``L*W`` (or bracketed arch) per line; ``#`` starts a comment.

    Raises ArchError naming the file and line of the first malformed entry.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ArchError(f"cannot read configurations file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ArchError(
            f"configurations file {path} is not UTF-8 text (byte {error.start}); give a text "
            "file with one L*W per line"
        ) from None
    configs: list[Arch] = []
    for number, line in enumerate(lines, start=1):
        entry = line.split("#", 1)[0]
        if not entry.strip(_BLANKS):
            continue
        try:
            configs.append(parse_key(entry))
        except ArchError as error:
            raise ArchError(f"{path}:{number}: {error}") from None
    if not configs:
        raise ArchError(f"configurations file {path} lists no architectures")
    return configs


def shape(arch_key: str, model: str) -> dict:
    """Depth, widest layer and parameter count of an architecture, as tables and TensorBoard
    name them."""
    arch = parse_key(arch_key)
    return {
        "depth": arch.depth,
        "width": max(width for _, width in arch.stacks),
        "parameters": arch.parameters(model),
    }
