import json
import math
import os
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psa.modes import MODES
from psa.report.inputs import (
    is_paired,
    parse_summary_markdown,
    parse_trials_markdown,
    read_summary_markdown,
    read_trials,
    read_trials_markdown,
    wide_trials,
)
from psa.store import ResultsFormatError, read_records_table
from psa.store.tables import (
    PAIRED_MARKER,
    render_summary_markdown,
    render_trials_markdown,
    write_summary_markdown,
    write_trials_markdown,
)


def record(arch, mode, trial, bounty, paired=True, model="resmlp"):
    return {
        "arch": arch,
        "model": model,
        "mode": mode,
        "trial": trial,
        "val_bounty": bounty,
        "paired": paired,
        "test_accuracy": bounty - 0.1,
    }


UPSTREAM_TRIALS = """# Persistent Stochastic Ablation - ResMLP Raw Trial Data

## Raw Trial Data

### Architecture: 1*2048

| Trial | None | Decay | Dropout | Full | Hidden | Output |
|:-----::----:|:----:|:----:|:----:|:----:|:----:|
| 1 | 98.07% | 98.08% | 98.25% | 98.17% | 98.15% | 98.14% |
| 2 | 98.01% | N/A | 98.20% | N/A | 98.11% | 98.10% |

### Architecture: 32*32

No successful trials found for this architecture.

### Architecture: 2*2

| Trial | None | Full | Hidden | Output |
|:-----:|:----:|:------:|:------:|:------:|
| 1 | 11.02% | NO_JOB_FOUND | 20.50% | 11.35% |
"""


def test_trial_table_prints_paired_rows_with_na_for_missing_trials():
    records = [
        record("4*17", mode, trial, 90.0 + trial + index / 100)
        for index, mode in enumerate(MODES)
        for trial in (1, 2)
        if not (mode == "full" and trial == 2)
    ]
    text = render_trials_markdown(records, arch_order=["4*17", "1*1"])
    lines = text.splitlines()
    assert lines[2] == PAIRED_MARKER
    table = lines[lines.index("### Architecture: 4*17") + 2 :]
    assert table[0] == "| Trial | None | Decay | Dropout | Full | Hidden | Output |"
    assert table[1] == "|:-----:|:----:|:----:|:----:|:----:|:----:|:----:|"
    assert table[1].count("|") - 1 == 7
    assert table[2] == "| 1 | 91.00% | 91.01% | 91.02% | 91.03% | 91.04% | 91.05% |"
    assert table[3] == "| 2 | 92.00% | 92.01% | 92.02% | N/A | 92.04% | 92.05% |"
    after = lines[lines.index("### Architecture: 1*1") :]
    assert after[2] == "No successful trials found for this architecture."


def test_trial_table_of_unpaired_records_has_no_paired_marker():
    text = render_trials_markdown([record("2*2", "none", 1, 50.0, paired=False)])
    assert PAIRED_MARKER not in text
    assert not is_paired(parse_trials_markdown(text))


def test_reader_keeps_rows_with_na_cells_and_accepts_upstream_quirks():
    long = parse_trials_markdown(UPSTREAM_TRIALS)
    assert not is_paired(long)
    assert long.attrs["archs"] == ["1*2048", "32*32", "2*2"]
    big = wide_trials(long, "1*2048")
    assert list(big.index) == [1, 2]
    assert big.loc[2, "none"] == pytest.approx(98.01)
    assert math.isnan(big.loc[2, "full"]) and big.loc[2, "hidden"] == pytest.approx(98.11)
    small = wide_trials(long, "2*2")
    assert math.isnan(small.loc[1, "decay"]) and math.isnan(small.loc[1, "full"])
    token = long[(long["arch"] == "2*2") & (long["mode"] == "full")]
    assert token["status"].item() == "NO_JOB_FOUND"
    assert long[long["arch"] == "32*32"].empty


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("| 3 | 98.0% | 97.0% |", "row has 3 cells"),
        ("| 3 | 98.0% | 97.0% | 1% | 1% | 1% | banana |", "'banana'"),
        ("| x | 98.0% | 97.0% | 1% | 1% | 1% | 1% |", "trial index"),
        ("| 1 | 98.0% | 97.0% | 1% | 1% | 1% | 1% |", "trial 1 of 1*2048 appears twice"),
        ("some stray prose", "unrecognised line"),
    ],
)
def test_malformed_trial_table_names_file_and_line(tmp_path, bad_line, message):
    lines = UPSTREAM_TRIALS.splitlines()
    lines.insert(9, bad_line)
    path = tmp_path / "psa_resmlp_trials.md"
    path.write_text("\n".join(lines))
    with pytest.raises(
        ResultsFormatError, match=r"psa_resmlp_trials\.md:10: .*" + re.escape(message)
    ):
        read_trials_markdown(path)


def test_row_before_any_architecture_heading_is_rejected():
    with pytest.raises(ResultsFormatError, match=":1: table row before"):
        parse_trials_markdown("| Trial | None |\n")


trial_values = st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda v: round(v, 2))


@settings(max_examples=40, deadline=None)
@given(
    cells=st.dictionaries(
        keys=st.tuples(
            st.sampled_from(["1*4", "2*8", "4*4, 2*8"]),
            st.sampled_from(MODES),
            st.integers(min_value=1, max_value=5),
        ),
        values=trial_values,
        max_size=30,
    ),
    paired=st.booleans(),
)
def test_trial_table_round_trips_every_cell(cells, paired):
    records = [record(a, m, t, v, paired=paired) for (a, m, t), v in cells.items()]
    order = ["2*8", "1*4", "4*4, 2*8"]
    long = parse_trials_markdown(render_trials_markdown(records, arch_order=order))
    assert long.attrs["archs"] == order
    assert is_paired(long) == (paired and bool(records))
    numeric = long.dropna(subset=["accuracy"])
    got = {(r.arch, r.mode, r.trial): r.accuracy for r in numeric.itertuples()}
    assert got == pytest.approx(cells)
    # Every printed row has six cells: the missing ones come back as N/A.
    assert len(long) == 6 * len({(a, t) for a, _, t in cells})


def test_summary_reports_population_statistics_says_so_and_real_parameter_count():
    values = [90.0, 92.0, 97.0]
    records = [record("18*18", "none", t, v) for t, v in enumerate(values, start=1)]
    records.append(record("18*18", "full", 1, 50.0))
    text = render_summary_markdown(
        records, arch_order=["18*18"], errors={("18*18", "hidden"): "NO_JOB_FOUND"}
    )
    lines = text.splitlines()
    assert lines[2] == (
        "## Statistical Summary: Std is the population standard deviation over the trials (ddof=0)."
    )
    assert "Results Shape {18*18} Parameters {26,632}" in lines
    std = np.std(values, ddof=0)
    assert f"* None: Mean=93.00% | Std={std:.2f}% | Min=90.00% | Max=97.00% (n=3)" in lines
    assert "* Full: Mean=50.00% | Std=0.00% | Min=50.00% | Max=50.00% (n=1)" in lines
    assert "* Hidden: NO_JOB_FOUND" in lines
    assert "* Decay: NO_RESULTS" in lines
    assert text.endswith("(n=1)\n* Hidden: NO_JOB_FOUND\n* Output: NO_RESULTS\n\n")


def test_summary_of_plain_mlp_uses_its_own_parameter_count():
    text = render_summary_markdown([record("1*2048", "none", 1, 98.0)], model="mlp")
    assert "SimpleMLP" in text.splitlines()[0]
    assert "Results Shape {1*2048} Parameters {1,628,170}" in text


def test_summary_round_trips_through_the_reader(tmp_path):
    records = [record("2*8", m, t, 80 + t * 1.5) for m in MODES for t in (1, 2, 3)]
    path = write_summary_markdown(records, tmp_path / "s.md", errors={("1*1", "full"): "ERROR: x"})
    summary = read_summary_markdown(path)
    assert summary.attrs["archs"] == ["2*8", "1*1"]
    row = summary[(summary["arch"] == "2*8") & (summary["mode"] == "dropout")].iloc[0]
    assert (row["mean"], row["min"], row["max"], row["n"]) == (83.0, 81.5, 84.5, 3)
    assert row["std"] == pytest.approx(round(np.std([81.5, 83, 84.5]), 2))
    assert row["parameters"] == 785 * 8 + 2 * 2 * (64 + 8) + 10 * 9
    failed = summary[(summary["arch"] == "1*1") & (summary["mode"] == "full")].iloc[0]
    assert failed["status"] == "ERROR: x" and math.isnan(failed["mean"])


def test_summary_reader_accepts_upstream_unformatted_parameter_counts():
    text = "Results Shape {1*2048} Parameters {1628170}\n* None: FAILED_OR_INCOMPLETE\n"
    summary = parse_summary_markdown(text)
    assert summary.iloc[0]["parameters"] == 1628170
    assert summary.iloc[0]["status"] == "FAILED_OR_INCOMPLETE"


def test_malformed_summary_statistics_name_the_line(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("# t\n\nResults Shape {1*2} Parameters {1}\n* None: Mean=9x% | Std=1%\n")
    with pytest.raises(ResultsFormatError, match=r"summary\.md:4: malformed statistics"):
        read_summary_markdown(path)


def test_writers_replace_the_file_whole_and_leave_it_alone_on_bad_input(tmp_path):
    path = tmp_path / "psa_resmlp_trials.md"
    write_trials_markdown([record("1*4", "none", 1, 50.0)], path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    before = path.read_text()
    with pytest.raises(ValueError, match="unknown modes"):
        write_trials_markdown([record("1*4", "sideways", 1, 50.0)], path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def write_jsonl(path, records, extra_lines=()):
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


def test_trial_records_from_a_results_dir_keep_the_last_rerun(tmp_path):
    records = [record("4*17", "none", 1, 50.0), record("[4*17]", "none", 1, 60.0)]
    records.append(record("4*17", "none", 1, 70.0, model="mlp"))
    write_jsonl(tmp_path / "trials.jsonl", records)
    frame = read_records_table(tmp_path, model="resmlp")
    assert frame["val_bounty"].tolist() == [60.0]
    assert frame["arch"].tolist() == ["4*17"]
    assert is_paired(frame)
    long = read_trials(tmp_path / "trials.jsonl", model="resmlp")
    assert list(long.columns) == ["arch", "trial", "mode", "accuracy", "status"]
    assert is_paired(long)


def test_bad_record_line_names_file_and_line(tmp_path):
    write_jsonl(tmp_path / "trials.jsonl", [record("1*4", "none", 1, 50.0)], ["{not json"])
    with pytest.raises(ResultsFormatError, match=r"trials\.jsonl:2: not a JSON object"):
        read_records_table(tmp_path)


def test_records_table_accepts_a_dataframe_with_the_minimal_columns():
    frame = pd.DataFrame({"arch": ["1*4"], "mode": ["none"], "trial": [1], "val_bounty": [12.345]})
    assert "| 1 | 12.35% | N/A |" in render_trials_markdown(frame)


TABLE_LINES = [
    "### Architecture: 1*4",
    "### Architecture: 2*8",
    "| Trial | None | Full |",
    "| Trial | None | Decay | Dropout | Full | Hidden | Output |",
    "|:-----::----:|:----:|",
    "|:--|:--|:--|",
    "| 1 | 50.00% | N/A |",
    "| 2 | NO_JOB_FOUND | 12% |",
    "| ² | 1.2.3% | 12% |",
    "### Architecture: 0*4",
    "No successful trials found for this architecture.",
    PAIRED_MARKER,
    "",
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(TABLE_LINES), st.text(max_size=40)),
        max_size=12,
    )
)
def test_trial_table_reader_either_parses_or_names_the_problem(lines):
    try:
        long = parse_trials_markdown("\n".join(lines))
    except ResultsFormatError as error:
        assert str(error).startswith("<trials>:")
    else:
        assert list(long.columns) == ["arch", "trial", "mode", "accuracy", "status"]


SUMMARY_LINES = [
    "Results Shape {1*4} Parameters {3,190}",
    "Results Shape {2*8} Parameters {6658}",
    "* None: Mean=50.00% | Std=1.00% | Min=49.00% | Max=51.00% (n=2)",
    "* Full: FAILED_OR_INCOMPLETE",
    "* Output: ERROR: boom",
    "* Hidden: Mean=1.2.3% | Std=1% | Min=1% | Max=1% (n=1)",
    "Results Shape {1*4} Parameters {,}",
    "Results Shape {x} Parameters {1}",
    "# Persistent Stochastic Ablation - ResMLP Results Summary",
    "",
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(SUMMARY_LINES), st.text(max_size=40)),
        max_size=12,
    )
)
def test_summary_reader_either_parses_or_names_the_problem(lines):
    try:
        summary = parse_summary_markdown("\n".join(lines))
    except ResultsFormatError as error:
        assert str(error).startswith("<summary>:")
    else:
        assert set(summary["mode"]) <= set(MODES)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        keys=st.sampled_from(MODES),
        values=st.lists(trial_values, min_size=1, max_size=6),
        min_size=1,
    )
)
def test_summary_statistics_survive_the_round_trip(values_by_mode):
    records = [
        record("4*4", mode, trial, value)
        for mode, values in values_by_mode.items()
        for trial, value in enumerate(values, start=1)
    ]
    summary = parse_summary_markdown(render_summary_markdown(records)).set_index("mode")
    for mode, values in values_by_mode.items():
        row = summary.loc[mode]
        assert row["status"] == "ok" and row["n"] == len(values)
        assert row["mean"] == pytest.approx(np.mean(values), abs=0.0051)
        assert row["std"] == pytest.approx(np.std(values, ddof=0), abs=0.0051)
        assert (row["min"], row["max"]) == pytest.approx((min(values), max(values)), abs=0.0051)
    missing = set(MODES) - set(values_by_mode)
    assert set(summary.loc[list(missing), "status"]) <= {"NO_RESULTS"}
