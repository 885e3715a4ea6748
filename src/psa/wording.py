"""Counts and ranges as a reader expects them: "1 batch", "2 batches", "trial 10", "trials 1-10"."""

from __future__ import annotations

from collections.abc import Sequence

_PLURALS = {"batch": "batches"}


def noun(number: int, singular: str) -> str:
    """The noun for ``number`` of them: ``noun(1, "batch")`` -> "batch", else "batches"."""
    return singular if number == 1 else _PLURALS.get(singular, singular + "s")


def count(number: int, singular: str) -> str:
    """``count(1, "batch")`` -> "1 batch"; ``count(3, "batch")`` -> "3 batches"."""
    return f"{number} {noun(number, singular)}"


def span(singular: str, values: Sequence[int]) -> str:
    """``span("trial", [10])`` -> "trial 10"; ``span("trial", [1, 2, 3])`` -> "trials 1-3";
    the smallest and largest of ``values``, which must not be empty."""
    low, high = min(values), max(values)
    if low == high:
        return f"{singular} {low}"
    return f"{noun(2, singular)} {low}-{high}"
