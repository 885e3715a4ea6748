"""The regime classifier of the first PSA paper (spec section 4, the S rules with their fixes).

Per architecture it reads each mode's trial accuracies, compares the baseline modes
B = {none, decay, dropout} with the ablative modes A = {full, hidden, output} and the ZeroR floor Z,
and names one of four regimes (or ``unknown`` when a mode has no data or no rule matches).

Every decision is made in exact rational arithmetic on the accuracies as printed (98.12 is
9812/100, not the nearest binary float), so float rounding never decides a borderline
architecture. Standard deviations are population ones (ddof=0); "within" is inclusive
(|x - mu| <= tolerance); comparisons with a standard deviation are made on squares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pandas as pd

from psa.modes import ABLATIVE_MODES, BASELINE_MODES, MODES

ZEROR_VALIDATION = 11.02  # % of the seed-1337 validation split that is the digit 1
MIN_SPREAD = Fraction(1, 2)  # sigma_e and sigma_eA never fall below 0.5 %
CHAOTIC_STD = 15  # a baseline std above this is chaotic (S only)


@dataclass(frozen=True)
class Regime:
    key: str
    numeral: str
    label: str
    colour: str


REGIMES = {
    regime.key: regime
    for regime in (
        Regime("beneficial-regularization", "I", "Beneficial Regularization", "#4CAF50"),
        Regime("optimally-sized", "II", "Optimally Sized", "#E53935"),
        Regime("chaotic-optimization", "III", "Chaotic Optimization", "#1565C0"),
        Regime("untrainable", "IV", "Untrainable", "#212121"),
        Regime("unknown", "", "Unknown", "#A1887F"),
    )
}


def exact(value: float) -> Fraction:
    """A float as the decimal it prints as: 98.12 -> 9812/100."""
    return Fraction(Decimal(repr(float(value))))


@dataclass(frozen=True)
class ModeStats:
    """One mode's trial accuracies, exactly: mean, population variance, min, max and n."""

    mean: Fraction
    variance: Fraction
    low: Fraction
    high: Fraction
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> ModeStats:
        numbers = [exact(value) for value in values]
        if not numbers:
            raise ValueError("a mode needs at least one accuracy")
        mean = sum(numbers, Fraction(0)) / len(numbers)
        return cls(mean, _population_variance(numbers), min(numbers), max(numbers), len(numbers))


def _population_variance(values: list[Fraction]) -> Fraction:
    mean = sum(values, Fraction(0)) / len(values)
    return sum(((x - mean) ** 2 for x in values), Fraction(0)) / len(values)


def _within(x: Fraction, centre: Fraction, spread_squared: Fraction) -> bool:
    return (x - centre) ** 2 <= spread_squared


def _exceeds(difference: Fraction, spread_squared: Fraction) -> bool:
    """difference > spread, with spread = sqrt(spread_squared) >= 0."""
    return difference > 0 and difference**2 > spread_squared


def _untrainable_rule(stats: Mapping[str, ModeStats], z: Fraction) -> str | None:
    if not stats:
        return None
    if max(s.high for s in stats.values()) <= z:
        return "no trial beat ZeroR"
    means_at_floor = all(s.mean <= z for s in stats.values())
    if means_at_floor and all(stats[m].high <= z for m in ABLATIVE_MODES if m in stats):
        return "no mean and no ablative trial beat ZeroR"
    return None


def is_untrainable(stats: Mapping[str, ModeStats], zeror: float = ZEROR_VALIDATION) -> bool:
    """Rule 1 on whatever modes have data: the heatmaps' black "untrainable" marker."""
    return _untrainable_rule(stats, exact(zeror)) is not None


def classify_modes(
    stats: Mapping[str, ModeStats], zeror: float = ZEROR_VALIDATION
) -> tuple[str, str]:
    """The regime key of one architecture and the sub-rule that decided it."""
    if any(mode not in stats for mode in MODES):
        missing = [mode for mode in MODES if mode not in stats]
        return "unknown", f"no trials for {', '.join(missing)}"
    z = exact(zeror)
    b_means = [stats[m].mean for m in BASELINE_MODES]
    a_means = [stats[m].mean for m in ABLATIVE_MODES]
    mu_b = sum(b_means) / len(b_means)
    mu_a = sum(a_means) / len(a_means)
    spread_b = max(_population_variance(b_means), MIN_SPREAD**2)  # sigma_e squared
    spread_a = max(_population_variance(a_means), MIN_SPREAD**2)  # sigma_eA squared
    baseline_within = all(_within(m, mu_b, spread_b) for m in b_means)
    ablative_within = all(_within(m, mu_b, spread_b) for m in a_means)
    ablative_consistent = all(_within(m, mu_a, spread_a) for m in a_means)
    best_a_over_worst_b = max(a_means) - min(b_means)
    best_b_max = max(stats[m].high for m in BASELINE_MODES)
    best_a_max = max(stats[m].high for m in ABLATIVE_MODES)

    untrainable = _untrainable_rule(stats, z)
    if untrainable:
        return "untrainable", untrainable

    # S gate: an ablative mean far above the baseline is not mere regularization.
    if not any(_exceeds(m - mu_b, spread_b) for m in a_means):
        if baseline_within and ablative_within:
            return "beneficial-regularization", "baseline and ablative means within sigma_e of muB"
        if baseline_within and best_a_over_worst_b >= Fraction(1, 100):
            return "beneficial-regularization", "best ablative mean >= worst baseline mean + 0.01"

    if _exceeds(mu_b - mu_a, spread_b):
        return "optimally-sized", "muA < muB - sigma_e"
    if best_b_max > best_a_max and mu_a <= mu_b:
        return "optimally-sized", "best baseline trial beats best ablative trial and muA <= muB"
    if (
        baseline_within
        and ablative_consistent
        and mu_a < mu_b
        and best_a_over_worst_b <= 0
        and mu_b - mu_a > Fraction(1, 10)
    ):
        return "optimally-sized", "consistent ablative means all below the baseline"

    if all(stats[m].high <= z for m in BASELINE_MODES) and best_a_max > z:
        return "chaotic-optimization", "only ablation beat ZeroR"
    if mu_a > mu_b + MIN_SPREAD:
        return "chaotic-optimization", "muA > muB + 0.5"
    if any(stats[m].variance > CHAOTIC_STD**2 for m in BASELINE_MODES):
        return "chaotic-optimization", "a baseline std above 15"
    return "unknown", "no rule matched"


def architecture_stats(long: pd.DataFrame, arch: str) -> dict[str, ModeStats]:
    """Exact per-mode stats of one architecture from long-form trials (NaN cells skipped)."""
    rows = long[(long["arch"] == arch) & long["accuracy"].notna()]
    return {mode: ModeStats.of(group["accuracy"]) for mode, group in rows.groupby("mode")}


def classify_trials(
    long: pd.DataFrame, zeror: float = ZEROR_VALIDATION, arch_order: Iterable[str] | None = None
) -> pd.DataFrame:
    """One row per architecture: arch, regime, label, rule, muB, muA, and each mode's mean and n.

    Architectures come in ``arch_order`` (default: the frame's ``archs`` attribute or first
    appearance); one without data is ``unknown``.
    """
    archs = list(arch_order) if arch_order is not None else long.attrs.get("archs")
    if archs is None:
        archs = list(dict.fromkeys(long["arch"]))
    rows = []
    for arch in archs:
        stats = architecture_stats(long, arch)
        regime, rule = classify_modes(stats, zeror)
        row = {"arch": arch, "regime": regime, "label": REGIMES[regime].label, "rule": rule}
        for group, modes in (("muB", BASELINE_MODES), ("muA", ABLATIVE_MODES)):
            means = [stats[m].mean for m in modes if m in stats]
            row[group] = float(sum(means) / len(means)) if len(means) == len(modes) else None
        for mode in MODES:
            row[f"{mode}_mean"] = float(stats[mode].mean) if mode in stats else None
            row[f"{mode}_n"] = stats[mode].n if mode in stats else 0
        rows.append(row)
    return pd.DataFrame(rows)


def regime_counts(classified: pd.DataFrame) -> pd.DataFrame:
    """How many architectures fall in each regime, in the paper's order (zeros included)."""
    counts = classified["regime"].value_counts()
    return pd.DataFrame(
        {
            "regime": list(REGIMES),
            "label": [regime.label for regime in REGIMES.values()],
            "count": [int(counts.get(key, 0)) for key in REGIMES],
        }
    )
