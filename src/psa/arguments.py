"""Argument types and flags shared by the command lines of train, sweep, bench and the cloud
runner, so each flag parses and reports errors the same way everywhere."""

from __future__ import annotations

import argparse

from psa.modes import FULL_SAMPLING, HIDDEN_TARGETS, MODES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be in [0, 1)")
    return value


def mode_list(text: str) -> tuple[str, ...]:
    """``"none,full"`` -> the named modes in canonical order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mode(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(MODES)}"
        )
    return tuple(mode for mode in MODES if mode in names)


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """The departures from upstream's method; the defaults keep upstream's behaviour."""
    parser.add_argument(
        "--hidden-targets",
        choices=HIDDEN_TARGETS,
        default="upstream",
        help="hidden mode's targets: upstream's (every Linear but the first and last) or the "
        "ResMLP's real hidden units with every reader zeroed",
    )
    parser.add_argument(
        "--full-sampling",
        choices=FULL_SAMPLING,
        default="layer",
        help="full mode: a layer uniformly then a neuron (upstream), or a neuron uniformly",
    )
