import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from psa.arch import parse_arch
from psa.modes import MODES
from psa.report.convergence import (
    convergence_figure,
    convergence_path,
    read_loop_logs,
    trial_bounties,
)
from psa.report.design_space import design_space_figure
from psa.report.heatmaps import (
    HEATMAP_NAMES,
    architecture_summary,
    design_points,
    heatmap_ablation_effects,
    heatmap_path,
    make_heatmaps,
)
from psa.report.regimes import classify_trials
from psa.store import ResultsFormatError
from schemas import loop_record

DPI = 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NONE_TRIALS = [90.0, 92.0, 94.0, 96.0, 98.0]
CONFIGS = [parse_arch(f"[{key}]") for key in ("1*64", "4*4", "18*18", "64*1", "2*2", "8*8")]
CONFIGS.append(parse_arch("[4*4, 2*8]"))
MIRRORS = [parse_arch("[64*1]")]


def long_form(cells, paired):
    """cells: {arch: {mode: [accuracy per trial]}} -> the readers' long form."""
    rows = [
        (arch, trial, mode, value, "ok")
        for arch, modes in cells.items()
        for mode, values in modes.items()
        for trial, value in enumerate(values, start=1)
    ]
    long = pd.DataFrame(rows, columns=["arch", "trial", "mode", "accuracy", "status"])
    long.attrs.update(paired=paired, archs=list(cells))
    return long


SHIFT = [0.4, 0.5, 0.6, 0.5, 0.5]  # a steady paired gain hidden in a wide spread
SHIFTED = [v + s for v, s in zip(NONE_TRIALS, SHIFT, strict=True)]


def results_cells():
    return {
        "1*64": {
            "none": NONE_TRIALS,
            "decay": [v + 0.1 for v in NONE_TRIALS],
            "dropout": [v - 0.1 for v in NONE_TRIALS],
            "full": SHIFTED,
            "hidden": [v - 5 for v in NONE_TRIALS],
            "output": NONE_TRIALS,
        },
        "4*4": {mode: [11.02, 10.5, 11.0] for mode in MODES},
        "18*18": {mode: [80.0 + i] for i, mode in enumerate(MODES)},
        "64*1": {"full": [50.0, 60.0]},
    }


@pytest.fixture(scope="module")
def heatmaps(tmp_path_factory):
    out = tmp_path_factory.mktemp("heatmaps")
    paired = make_heatmaps(
        long_form(results_cells(), paired=True), CONFIGS, MIRRORS, out / "paired", dpi=DPI
    )
    unpaired = long_form(results_cells(), paired=False)
    table = architecture_summary(design_points(CONFIGS), unpaired)
    path = heatmap_path(out / "welch", "mlp", "Ablation_Effects")
    welch = {"Ablation_Effects": heatmap_ablation_effects(table, unpaired, path, "mlp", dpi=DPI)}
    return out, paired, welch


def test_design_points_leave_out_multi_stack_architectures():
    points = design_points(CONFIGS)
    assert points["arch"].tolist() == ["1*64", "4*4", "18*18", "64*1", "2*2", "8*8"]
    assert points.loc[3, ["depth", "width"]].tolist() == [64, 1]


def test_status_uses_the_classifier_untrainable_rule():
    table = architecture_summary(design_points(CONFIGS), long_form(results_cells(), True))
    status = dict(zip(table["arch"], table["status"], strict=True))
    assert status == {
        "1*64": "ok",
        "4*4": "untrainable",
        "18*18": "ok",
        "64*1": "ok",
        "2*2": "missing",
        "8*8": "missing",
    }
    row = table.set_index("arch").loc["1*64"]
    assert row["hidden_mean"] == pytest.approx(89.0)
    assert row["none_std"] == pytest.approx(np.std(NONE_TRIALS))


def test_six_heatmaps_are_written_with_the_model_prefix(heatmaps):
    out, paired, welch = heatmaps
    assert list(paired) == list(HEATMAP_NAMES)
    written = sorted(path.name for path in (out / "paired").iterdir())
    assert written == sorted(f"ResMLP_Heatmap_{name}.png" for name in HEATMAP_NAMES)
    for name in HEATMAP_NAMES:
        assert heatmap_path(out / "paired", "resmlp", name).read_bytes()[:8] == PNG_MAGIC
    welch = out / "welch" / "SimpleMLP_Heatmap_Ablation_Effects.png"
    assert welch.read_bytes()[:8] == PNG_MAGIC


def test_baseline_map_plots_the_none_mean_and_marks_missing_baselines(heatmaps):
    data = heatmaps[1]["Baseline_Performance"].set_index("arch")
    assert data.loc["1*64", "none_mean"] == pytest.approx(94.0)
    assert data.loc["4*4", "status"] == "untrainable"
    assert data.loc["64*1", "status"] == "missing"  # trained, but never in mode none
    assert data.loc["2*2", "status"] == "missing"


def test_ablation_effects_use_a_paired_test_for_paired_trials(heatmaps):
    data = heatmaps[1]["Ablation_Effects"].set_index(["arch", "mode"])
    full = data.loc[("1*64", "full")]
    expected = scipy_stats.ttest_rel(SHIFTED, NONE_TRIALS)
    assert full["test"] == "paired t"
    assert full["p"] == pytest.approx(expected.pvalue)
    assert full["outcome"] == "beneficial"
    assert full["mean_difference"] == pytest.approx(0.5)
    assert data.loc[("1*64", "hidden"), "outcome"] == "harmful"
    assert data.loc[("1*64", "output"), "outcome"] == "neutral"
    assert data.loc[("18*18", "full"), "outcome"] == "too-few-trials"
    assert data.loc[("4*4", "full"), "outcome"] == "untrainable"
    assert data.loc[("2*2", "output"), "outcome"] == "missing"
    assert set(data.index.get_level_values("mode")) == {"full", "hidden", "output"}
    assert data["size"].between(7.5, 469.0).all()


def test_ablation_effects_use_welch_for_unpaired_trials(heatmaps):
    data = heatmaps[2]["Ablation_Effects"].set_index(["arch", "mode"])
    full = data.loc[("1*64", "full")]
    expected = scipy_stats.ttest_ind(SHIFTED, NONE_TRIALS, equal_var=False)
    assert full["test"] == "Welch t"
    assert full["p"] == pytest.approx(expected.pvalue)
    assert full["outcome"] == "neutral"  # the same gain is lost in the spread without pairing


def test_instability_is_the_largest_population_std_over_modes(heatmaps):
    data = heatmaps[1]["Instability"].set_index("arch")
    assert np.std(SHIFTED) > np.std(NONE_TRIALS)
    assert data.loc["1*64", "max_std"] == pytest.approx(np.std(SHIFTED))
    assert data.loc["18*18", "max_std"] == 0.0
    assert math.isnan(data.loc["2*2", "max_std"])


def test_winning_strategy_is_the_mode_with_the_highest_mean(heatmaps):
    data = heatmaps[1]["Winning_Strategy"].set_index("arch")["winner"].to_dict()
    assert data["1*64"] == "full"
    assert data["18*18"] == "output"
    assert data["64*1"] == "full"
    assert data["4*4"] == "untrainable" and data["8*8"] == "missing"


def test_parameter_matching_uses_mlp_equivalent_counts_and_marks_mirrors(heatmaps):
    data = heatmaps[1]["Parameter_Matching"].set_index("arch")
    assert data.loc["18*18", "parameters"] == 20_134
    assert data["asymmetric"].to_dict()["64*1"]
    assert not data["asymmetric"].to_dict()["1*64"]
    assert data["size"].min() == pytest.approx(7.5) and data["size"].max() == pytest.approx(469)
    assert data["size"].idxmax() == "1*64"


def test_regime_map_agrees_with_the_classifier(heatmaps):
    data = heatmaps[1]["Regimes"].set_index("arch")["regime"]
    long = long_form(results_cells(), True)
    expected = classify_trials(long, arch_order=data.index).set_index("arch")["regime"]
    assert data.to_dict() == expected.to_dict()
    assert data["4*4"] == "untrainable" and data["2*2"] == "unknown"


def test_design_space_boxes_end_exactly_at_depth_and_width(tmp_path):
    path = tmp_path / "space.png"
    data = design_space_figure(CONFIGS, path, dpi=DPI).set_index("arch")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert data.loc["64*1", ["x0", "y0", "x1", "y1"]].tolist() == [1.0, 1.0, 64.0, 1.0]
    assert "4*4, 2*8" not in data.index


def write_jsonl_log(path, arch, mode, trial, currents, start_loop=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    best = -1.0
    with path.open("a") as stream:
        for loop, current in enumerate(currents, start=start_loop):
            best = max(best, current)
            line = loop_record(arch, mode, trial, loop, current, best)
            stream.write(json.dumps(line) + "\n")


@pytest.fixture
def results_dir(tmp_path):
    logs = tmp_path / "logs"
    write_jsonl_log(logs / "4x17" / "none-t1.jsonl", "4*17", "none", 1, [50.0, 70.0, 60.0])
    write_jsonl_log(logs / "4x17" / "none-t2.jsonl", "4*17", "none", 2, [40.0, 80.0, 75.0])
    write_jsonl_log(logs / "4x17" / "full-t1.jsonl", "4*17", "full", 1, [11.0, 11.0, 90.0])
    (tmp_path / "trials.jsonl").write_text("")
    return tmp_path


def test_jsonl_logs_keep_trials_separate(results_dir):
    logs = read_loop_logs(results_dir)
    assert len(logs) == 9
    none = logs[logs["mode"] == "none"].pivot(index="loop", columns="trial", values="lkg")
    assert none[1].tolist() == [50.0, 70.0, 70.0]
    assert none[2].tolist() == [40.0, 80.0, 80.0]
    bounties = trial_bounties(logs).set_index(["mode", "trial"])["accuracy"]
    assert bounties.to_dict() == {("none", 1): 70.0, ("none", 2): 80.0, ("full", 1): 90.0}


def test_a_resumed_run_replaces_the_loops_it_repeats(results_dir):
    logs_dir = results_dir / "logs"
    write_jsonl_log(logs_dir / "4x17" / "none-t1.z.jsonl", "4*17", "none", 1, [65.0], 3)
    logs = read_loop_logs(results_dir)
    assert len(logs) == 9
    row = logs[(logs["mode"] == "none") & (logs["trial"] == 1) & (logs["loop"] == 3)]
    assert row["current"].item() == 65.0


def test_cloudwatch_logs_of_any_loop_count_split_into_trials(tmp_path):
    job = tmp_path / "psa-18x18-output-2025-08-04-19-12-35-382" / "psa-18x18-output-2025"
    job.mkdir(parents=True)
    lines = ["[2025-08-04T19:12:40Z] starting"]
    for trial_offset in (0.0, 5.0):
        for loop in range(1, 6):
            current = 11.02 + loop * 10 + trial_offset
            lines.append(
                f"[ts] Loop {loop}/5 (Global: {loop}) | Current: {current:.2f}% | "
                f"LKG: {current:.2f}% | Bounty: {current:.2f}%"
            )
    (job / "algo-1-1754334760.log").write_text("\n".join(lines) + "\n")
    logs = read_loop_logs(tmp_path)
    assert set(logs["arch"]) == {"18*18"} and set(logs["mode"]) == {"output"}
    assert logs.groupby("trial")["loop"].apply(list).to_dict() == {
        1: [1, 2, 3, 4, 5],
        2: [1, 2, 3, 4, 5],
    }
    assert logs[logs["trial"] == 2]["current"].max() == pytest.approx(66.02)


def test_an_empty_logs_dir_is_an_error(tmp_path):
    with pytest.raises(ResultsFormatError, match="no per-loop logs"):
        read_loop_logs(tmp_path)


def test_a_malformed_log_line_names_file_and_line(results_dir):
    with (results_dir / "logs" / "4x17" / "none-t1.jsonl").open("a") as stream:
        stream.write('{"arch": "4*17"}\n')
    with pytest.raises(ResultsFormatError, match=r"none-t1\.jsonl:4: log line lacks mode"):
        read_loop_logs(results_dir)


def test_convergence_plots_each_trial_and_their_mean(results_dir, tmp_path):
    logs = read_loop_logs(results_dir)
    path = convergence_path(tmp_path, "resmlp", late_breakthroughs=False)
    data = convergence_figure(logs, ["4*17"], path, dpi=DPI)
    assert path.name == "ResMLP_Plot_Convergence.png" and path.read_bytes()[:8] == PNG_MAGIC
    none = data[data["mode"] == "none"]
    assert sorted(none["series"].unique()) == ["1", "2", "mean"]
    assert none[none["series"] == "mean"]["value"].tolist() == [45.0, 75.0, 75.0]
    assert set(data[data["mode"] == "full"]["series"]) == {"1"}  # one trial, no mean


def test_convergence_best_trial_of_current_accuracy(results_dir, tmp_path):
    logs = read_loop_logs(results_dir)
    path = convergence_path(tmp_path, "mlp", late_breakthroughs=True)
    data = convergence_figure(logs, ["4*17"], path, "mlp", curve="current", show="best", dpi=DPI)
    assert path.name == "SimpleMLP_Plot_Late_Breakthroughs.png"
    none = data[data["mode"] == "none"]
    assert none["series"].unique().tolist() == ["2"]
    assert none["value"].tolist() == [40.0, 80.0, 75.0]
