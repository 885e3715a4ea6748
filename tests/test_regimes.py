import pandas as pd
import pytest

from psa.modes import MODES
from psa.report.inputs import parse_trials_markdown
from psa.report.regimes import (
    REGIMES,
    ModeStats,
    classify_modes,
    classify_trials,
    is_untrainable,
    regime_counts,
)


def stats_of(**trials):
    """Per-mode stats from trial lists; a bare number is one trial."""
    return {
        mode: ModeStats.of(values if isinstance(values, list) else [values])
        for mode, values in trials.items()
    }


def table(none, decay, dropout, full, hidden, output):
    return stats_of(
        none=none, decay=decay, dropout=dropout, full=full, hidden=hidden, output=output
    )


def regime(stats, zeror=11.02):
    return classify_modes(stats, zeror)


@pytest.mark.parametrize(
    ("stats", "expected", "rule"),
    [
        # Rule 1a: no trial beats ZeroR; a max equal to Z counts as not beating it.
        (table(11.02, 10.0, 9.8, 11.0, 5.0, 11.02), "untrainable", "no trial beat ZeroR"),
        # Rule 1b: one baseline trial beats Z, but no mean and no ablative trial does.
        (
            table([5.0, 15.0], 11.0, 11.0, 11.0, 11.0, 11.02),
            "untrainable",
            "no mean and no ablative trial",
        ),
        # Rule 2a: every mean within sigma_e = 0.5 of muB.
        (
            table(98.0, 98.2, 97.9, 98.1, 98.0, 98.3),
            "beneficial-regularization",
            "within sigma_e",
        ),
        # Rule 3a: ablative means well below the baseline.
        (table(98.0, 98.0, 98.0, 96.0, 96.0, 96.0), "optimally-sized", "muA < muB - sigma_e"),
        # Rule 3b: the best baseline trial beats the best ablative one and muA == muB (<=).
        (
            table(99.0, 97.0, 98.0, 98.0, 98.0, 98.0),
            "optimally-sized",
            "best baseline trial beats",
        ),
        # Rule 3c: consistent ablative means, all at or below the worst baseline mean.
        (
            table(98.0, 98.0, 98.0, [99.0, 97.0], 98.0, 97.4),
            "optimally-sized",
            "consistent ablative means",
        ),
        # Rule 4a: only ablation lifts any trial above ZeroR.
        (
            table(11.0, 11.0, 11.0, [11.0, 11.0, 60.0], 11.0, 11.0),
            "chaotic-optimization",
            "only ablation beat ZeroR",
        ),
        # Rule 4b: the ablative mean beats the baseline mean by more than 0.5.
        (table(50.0, 50.0, 50.0, 52.0, 52.0, 52.0), "chaotic-optimization", "muA > muB + 0.5"),
        # Rule 4c: a baseline std above 15 (here 20).
        (
            table([20.0, 60.0], 40.0, 40.0, [18.2, 60.0], 39.9, 39.9),
            "chaotic-optimization",
            "baseline std above 15",
        ),
    ],
)
def test_each_rule_decides_its_hand_built_table(stats, expected, rule):
    key, reason = regime(stats)
    assert key == expected
    assert rule in reason


def test_fewer_than_six_modes_is_unknown():
    stats = stats_of(none=98.0, decay=98.0, dropout=98.0, full=98.0, hidden=98.0)
    assert regime(stats) == ("unknown", "no trials for output")


def test_ablative_mean_exactly_sigma_e_from_mub_is_within():
    assert regime(table(98.0, 98.0, 98.0, 97.5, 97.5, 97.5))[0] == "beneficial-regularization"
    assert regime(table(98.0, 98.0, 98.0, 97.49, 97.49, 97.49))[0] == "optimally-sized"


def test_gate_skips_beneficial_when_an_ablative_mean_is_far_above_the_baseline():
    # Without the S gate, bws and (best A mean - worst B mean >= 0.01) would call this beneficial.
    key, reason = regime(table(90.0, 90.0, 90.0, 92.0, 90.0, 90.0))
    assert (key, reason) == ("chaotic-optimization", "muA > muB + 0.5")
    # At exactly muB + sigma_e the gate stays open.
    assert regime(table(90.0, 90.0, 90.0, 90.5, 90.0, 90.0))[0] == "beneficial-regularization"


def test_one_hundredth_margin_is_decided_on_printed_decimals_not_floats():
    # 98.13 - 98.12 is 0.00999... in binary floats; as printed it is exactly 0.01.
    stats = table(98.12, 98.12, 98.12, 98.13, 97.0, 97.0)
    assert regime(stats) == (
        "beneficial-regularization",
        "best ablative mean >= worst baseline mean + 0.01",
    )
    assert regime(table(98.12, 98.12, 98.12, 98.129, 97.0, 97.0))[0] == "optimally-sized"


def test_tied_best_trials_do_not_make_an_optimally_sized_network():
    assert regime(table(99.0, 97.0, 98.0, 99.0, 98.0, 97.0))[0] != "optimally-sized"


def test_ablative_mean_exactly_half_a_point_above_is_not_chaotic():
    # sigma_e = std(49, 50, 51) > 0.5 keeps the gate open; baseline spread blocks rule 2.
    assert regime(table(49.0, 50.0, 51.0, 50.5, 50.5, 50.5)) == ("unknown", "no rule matched")
    assert regime(table(49.0, 50.0, 51.0, 50.51, 50.51, 50.51))[0] == "chaotic-optimization"


def test_baseline_std_of_exactly_15_is_not_chaotic():
    stats = table([25.0, 55.0], 40.0, 40.0, [18.2, 60.0], 39.9, 39.9)
    assert regime(stats) == ("unknown", "no rule matched")


def test_zeror_is_configurable():
    stats = table(12.0, 12.0, 12.0, 12.0, 12.0, 12.0)
    assert regime(stats)[0] == "beneficial-regularization"
    assert regime(stats, zeror=12.0)[0] == "untrainable"


def test_untrainable_marker_works_on_partial_data():
    assert is_untrainable(stats_of(none=10.0, full=11.0))
    assert not is_untrainable(stats_of(none=10.0, full=11.5))
    assert not is_untrainable({})


HAND_TABLE = """### Architecture: 1*2048

| Trial | None | Decay | Dropout | Full | Hidden | Output |
|:-----::----:|:----:|:----:|:----:|:----:|:----:|
| 1 | 98.00% | 98.20% | 97.90% | 98.10% | 98.00% | 98.30% |
| 2 | 98.00% | 98.20% | 97.90% | N/A | 98.00% | 98.30% |

### Architecture: 2*2

| Trial | None | Decay | Dropout | Full | Hidden | Output |
|:-----:|:----:|:----:|:----:|:----:|:----:|:----:|
| 1 | 11.02% | 11.02% | 11.02% | 11.02% | 11.02% | 11.02% |

### Architecture: 4*4

No successful trials found for this architecture.

### Architecture: 8*8

| Trial | None | Full |
|:-----:|:----:|:----:|
| 1 | 90.00% | 91.00% |
"""


def test_classify_trials_from_a_table_keeps_file_order_and_counts_regimes():
    classified = classify_trials(parse_trials_markdown(HAND_TABLE))
    assert classified["arch"].tolist() == ["1*2048", "2*2", "4*4", "8*8"]
    assert classified["regime"].tolist() == [
        "beneficial-regularization",
        "untrainable",
        "unknown",
        "unknown",
    ]
    first = classified.iloc[0]
    assert first["full_n"] == 1 and first["none_n"] == 2
    assert first["muB"] == pytest.approx(98.033333, abs=1e-5)
    counts = regime_counts(classified).set_index("regime")["count"]
    assert list(counts.index) == list(REGIMES)
    assert counts.to_dict() == {
        "beneficial-regularization": 1,
        "optimally-sized": 0,
        "chaotic-optimization": 0,
        "untrainable": 1,
        "unknown": 2,
    }


def test_classify_trials_honours_an_explicit_order():
    long = pd.DataFrame(
        [("1*1", 1, mode, 50.0, "ok") for mode in MODES],
        columns=["arch", "trial", "mode", "accuracy", "status"],
    )
    classified = classify_trials(long, arch_order=["9*9", "1*1"])
    assert classified["regime"].tolist() == ["unknown", "beneficial-regularization"]
