import os
from pathlib import Path

import pandas as pd
import pytest

from psa.arch import parse_arch
from psa.report.inputs import parse_summary_markdown
from psa.report.latex import (
    architecture_table,
    default_accuracy_caption,
    trial_accuracy_table,
    winners,
)

GOLDEN = Path(__file__).parent / "golden"
# Set PSA_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate format change.
UPDATE = os.environ.get("PSA_UPDATE_GOLDEN") == "1"

CONFIGS = [parse_arch(text) for text in ("[1*2048]", "[18*18]", "[4*17]", "[17*4]")]
MIRRORS = [parse_arch("[17*4]")]

SUMMARY = """# Persistent Stochastic Ablation - ResMLP Results Summary

## Statistical Summary

Results Shape {1*2048} Parameters {10,020,874}
* None: Mean=98.12% | Std=0.07% | Min=98.01% | Max=98.28% (n=10)
* Decay: Mean=98.13% | Std=0.05% | Min=98.05% | Max=98.20% (n=10)
* Dropout: Mean=98.25% | Std=0.04% | Min=98.19% | Max=98.31% (n=10)
* Full: Mean=98.24% | Std=0.06% | Min=98.15% | Max=98.33% (n=10)
* Hidden: Mean=98.23% | Std=0.06% | Min=98.15% | Max=98.30% (n=10)
* Output: Mean=98.10% | Std=0.09% | Min=97.95% | Max=98.22% (n=10)

Results Shape {18*18} Parameters {26,632}
* None: Mean=94.50% | Std=0.30% | Min=94.00% | Max=95.00% (n=10)
* Decay: Mean=94.40% | Std=0.20% | Min=94.10% | Max=94.80% (n=10)
* Dropout: Mean=93.90% | Std=0.50% | Min=93.00% | Max=94.60% (n=10)
* Full: NO_JOB_FOUND
* Hidden: Mean=95.10% | Std=0.40% | Min=94.40% | Max=95.70% (n=10)
* Output: Mean=94.90% | Std=0.35% | Min=94.30% | Max=95.50% (n=10)

"""


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()


def test_architecture_table_prints_real_and_mlp_equivalent_counts():
    text = architecture_table(CONFIGS, MIRRORS, "resmlp")
    check_golden("architecture_table_resmlp.tex", text)
    assert r"1*2048 & 10,020,874 & 1,628,170 & Matched \\" in text
    assert r"17*4 & " in text and text.count("Asymmetric") == 1


def test_architecture_table_of_the_plain_mlp_has_one_count_column():
    text = architecture_table(CONFIGS, MIRRORS, "mlp", caption="Plain", label="tab:plain")
    check_golden("architecture_table_mlp.tex", text)
    assert r"18*18 & 20,134 & Matched \\" in text
    assert r"\caption{Plain}" in text and r"\label{tab:plain}" in text


def summary_stats():
    summary = parse_summary_markdown(SUMMARY)
    return summary[summary["status"] == "ok"].drop(columns=["parameters", "status"])


def test_trial_accuracy_table_bolds_winners_and_names_ties():
    stats = summary_stats()
    text, skipped = trial_accuracy_table(
        stats, ["18*18", "1*2048", "2*2"], caption="My caption", label="tab:mine"
    )
    check_golden("trial_accuracy_table.tex", text)
    assert skipped == ["2*2"]
    caption = r"\caption{My caption. Std is the population standard deviation over the trials"
    assert caption + " (ddof=0).}" in text and r"\label{tab:mine} \\" in text
    rows = [line for line in text.splitlines() if line.startswith("$")]
    assert rows[0].startswith("$18*18$") and rows[1].startswith("$1*2048$")
    assert " & N/A & " in rows[0] and rows[0].endswith(r"\texttt{hidden} \\")
    # 98.25 best; 98.24 is within 0.01 (a tie); 98.23 is not.
    assert rows[1].endswith(r"Tie: \texttt{dropout}/\texttt{full} \\")
    assert rows[1].count(r"\mathbf") == 2


@pytest.mark.parametrize(
    ("means", "expected"),
    [
        ({"none": 98.12, "decay": 98.13}, ["none", "decay"]),
        ({"none": 98.12, "decay": 98.14}, ["decay"]),
        ({"output": 50.0, "none": 50.004}, ["none", "output"]),
        ({}, []),
    ],
)
def test_winners_are_within_one_hundredth_of_the_printed_best(means, expected):
    assert winners(means) == expected


def test_default_caption_reports_trials_and_loops():
    stats = pd.DataFrame({"n": [10, 10]})
    caption = default_accuracy_caption("resmlp", stats, 100)
    assert "over 10 Trials of 100 Meta-Loops for ResMLP" in caption
    assert "over 3--10 Trials for SimpleMLP" in default_accuracy_caption(
        "mlp", pd.DataFrame({"n": [3, 10]}), None
    )
