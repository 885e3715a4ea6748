import json
import math
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import seaborn as sns
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_hex
from matplotlib.text import Annotation, Text
from scipy import stats as scipy_stats

from documented import assert_printed, quoted
from psa.arch import parse_arch, parse_key, read_config_file
from psa.modes import MODES
from psa.report import convergence as convergence_module
from psa.report import design_space as design_space_module
from psa.report import heatmaps as heatmaps_module
from psa.report import plotting
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
    heatmap_instability,
    heatmap_parameter_matching,
    heatmap_path,
    heatmap_regimes,
    make_heatmaps,
)
from psa.report.plotting import SIZED_AREAS, area_scale
from psa.report.regimes import classify_trials
from psa.report.style import FigureOptions
from psa.store import ResultsFormatError
from schemas import long_form, loop_record

DPI = 20
KINDS = ("png", "csv")
REPRODUCTION = Path(__file__).parents[1] / "reproduction"
SHIPPED = Path(__file__).parents[1] / "results"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NONE_TRIALS = [90.0, 92.0, 94.0, 96.0, 98.0]
CONFIGS = [parse_key(key) for key in ("1*64", "4*4", "18*18", "64*1", "2*2", "8*8")]
CONFIGS.append(parse_arch("[4*4, 2*8]"))
MIRRORS = [parse_arch("[64*1]")]


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


OPTIONS = FigureOptions(dpi=DPI)


@pytest.fixture(scope="module")
def drawn():
    """Every figure saved while the module runs, by path: its Figure and the CSV beside it."""
    figures = {}
    original = plotting.save_figure

    def capture(figure, path, options, data):
        written = original(figure, path, options, data)
        figures[Path(path)] = figure
        return written

    patch = pytest.MonkeyPatch()
    for module in (heatmaps_module, design_space_module, convergence_module):
        patch.setattr(module, "save_figure", capture)
    yield figures
    patch.undo()


@pytest.fixture(scope="module")
def heatmaps(tmp_path_factory, drawn):
    out = tmp_path_factory.mktemp("heatmaps")
    long = long_form(results_cells(), paired=True)
    paired = make_heatmaps(long, CONFIGS, MIRRORS, out / "paired", options=OPTIONS)
    unpaired = long_form(results_cells(), paired=False)
    table = architecture_summary(design_points(CONFIGS), unpaired)
    path = heatmap_path(out / "welch", "mlp", "Ablation_Effects")
    welch = {
        "Ablation_Effects": heatmap_ablation_effects(
            table, unpaired, path, "mlp", OPTIONS, correction="none"
        )
    }
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


def test_six_heatmaps_are_written_with_the_model_prefix_and_a_csv_each(heatmaps):
    out, paired, welch = heatmaps
    assert list(paired) == list(HEATMAP_NAMES)
    written = sorted(path.name for path in (out / "paired").iterdir())
    expected = [f"ResMLP_Heatmap_{name}.{kind}" for name in HEATMAP_NAMES for kind in KINDS]
    assert written == sorted(expected)
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
    assert full["p_adjusted"] >= full["p"]
    assert data.loc[("1*64", "hidden"), "outcome"] == "harmful"
    assert data.loc[("1*64", "output"), "outcome"] == "no-spread"  # output repeats none exactly
    assert data.loc[("18*18", "full"), "outcome"] == "too-few-trials"
    assert data.loc[("4*4", "full"), "outcome"] == "untrainable"
    assert data.loc[("2*2", "output"), "outcome"] == "missing"
    assert set(data.index.get_level_values("mode")) == {"full", "hidden", "output"}
    width, height = OPTIONS.inches("panels")
    columns = 2  # a page-wide figure holds the three panels two by two
    assert heatmaps_module._panel_grid(width, height) == (2, columns)
    smallest, largest = (area * area_scale(width / columns) for area in SIZED_AREAS)
    assert data["size"].between(smallest, largest).all()


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
    scale = area_scale(OPTIONS.inches("map")[0])
    assert data["size"].min() == pytest.approx(SIZED_AREAS[0] * scale)
    assert data["size"].max() == pytest.approx(SIZED_AREAS[1] * scale)
    assert data["size"].idxmax() == "1*64"


def test_regime_map_agrees_with_the_classifier(heatmaps):
    data = heatmaps[1]["Regimes"].set_index("arch")["regime"]
    long = long_form(results_cells(), True)
    expected = classify_trials(long, arch_order=data.index).set_index("arch")["regime"]
    assert data.to_dict() == expected.to_dict()
    assert data["4*4"] == "untrainable" and data["2*2"] == "unknown"


def test_design_space_boxes_end_exactly_at_depth_and_width(tmp_path, drawn):
    path = tmp_path / "space.png"
    data = design_space_figure(CONFIGS, path, options=OPTIONS).set_index("arch")
    csv = pd.read_csv(path.with_suffix(".csv"))
    (points,) = [c for c in drawn[path].axes[0].collections if isinstance(c, PathCollection)]
    assert points.get_offsets().tolist() == csv[["depth", "width"]].to_numpy(float).tolist()
    assert drawn_labels(drawn[path]) == sorted(csv["label"])
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert data.loc["64*1", ["x0", "y0", "x1", "y1"]].tolist() == [1.0, 1.0, 64.0, 1.0]
    assert "4*4, 2*8" not in data.index


def write_jsonl_log(path, arch, mode, trial, currents, start_loop=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    best = -1.0
    with path.open("a") as stream:
        for loop, current in enumerate(currents, start=start_loop):
            line = loop_record(arch, mode, trial, loop, current, max(best, current), best)
            best = max(best, current)
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


MORE_TRIALS = {3: [45.0, 72.0, 72.0], 4: [55.0, 74.0, 71.0], 5: [48.0, 76.0, 79.0]}


def add_trials(results_dir, mode, trials=MORE_TRIALS):
    for trial, currents in trials.items():
        path = results_dir / "logs" / "4x17" / f"{mode}-t{trial}.jsonl"
        write_jsonl_log(path, "4*17", mode, trial, currents)


def test_convergence_plots_each_trial_and_their_mean_with_its_band_from_five_trials(
    results_dir, tmp_path
):
    add_trials(results_dir, "none")
    logs = read_loop_logs(results_dir)
    path = convergence_path(tmp_path, "resmlp", late_breakthroughs=False)
    data = convergence_figure(logs, ["4*17"], path, options=OPTIONS)
    assert path.name == "ResMLP_Plot_Convergence.png" and path.read_bytes()[:8] == PNG_MAGIC
    none = data[data["mode"] == "none"]
    assert sorted(none["series"].unique()) == ["1", "2", "3", "4", "5", "mean"]
    mean = none[none["series"] == "mean"]
    lkg = np.array([[50.0, 40.0, 45.0, 55.0, 48.0], [70.0, 80.0, 72.0, 74.0, 76.0]])
    lkg = np.vstack([lkg, [70.0, 80.0, 72.0, 74.0, 79.0]])
    assert mean["value"].to_numpy() == pytest.approx(lkg.mean(1))
    interval = scipy_stats.t.interval(0.95, 4, loc=lkg.mean(1), scale=scipy_stats.sem(lkg, axis=1))
    assert mean["ci_low"].to_numpy() == pytest.approx(interval[0])
    assert mean["ci_high"].to_numpy() == pytest.approx(interval[1])
    assert set(data[data["mode"] == "full"]["series"]) == {"1"}  # one trial, no mean


def test_fewer_than_five_trials_show_the_trials_and_mean_without_a_band(
    results_dir, tmp_path, drawn
):
    """With 3 trials a 95 % band of the 47*4 panel once spanned 0-100 % and hid every line."""
    add_trials(results_dir, "none", {3: [11.0, 11.0, 95.0]})
    logs = read_loop_logs(results_dir)
    path = tmp_path / "convergence.png"
    data = convergence_figure(logs, ["4*17"], path, options=OPTIONS)
    csv = pd.read_csv(path.with_suffix(".csv"))
    mean = csv[(csv["mode"] == "none") & (csv["series"] == "mean")]
    assert len(mean) == 3 and mean["ci_low"].isna().all() and mean["ci_high"].isna().all()
    ax = drawn[path].axes[0]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert ax.get_ylim()[0] >= data["value"].min() - 5  # the limits follow the lines
    assert "from 5 trials on" in drawn[path]._suptitle.get_text()


def test_convergence_best_trial_of_current_accuracy(results_dir, tmp_path):
    logs = read_loop_logs(results_dir)
    path = convergence_path(tmp_path, "mlp", late_breakthroughs=True)
    data = convergence_figure(
        logs, ["4*17"], path, "mlp", curve="current", show="best", options=OPTIONS
    )
    assert path.name == "SimpleMLP_Plot_Late_Breakthroughs.png"
    none = data[data["mode"] == "none"]
    assert none["series"].unique().tolist() == ["2"]
    assert none["value"].tolist() == [40.0, 80.0, 75.0]


def drawn_points(figure):
    """(panel title, depth, width, area, face colour) of every marker the figure's axes draw."""
    points = []
    for ax in figure.axes:
        for collection in ax.collections:
            if not isinstance(collection, PathCollection):
                continue
            sizes, faces = collection.get_sizes(), collection.get_facecolors()
            for index, (x, y) in enumerate(collection.get_offsets()):
                face = to_hex(faces[index if len(faces) > 1 else 0]) if len(faces) else "none"
                area = float(sizes[index if len(sizes) > 1 else 0])
                points.append((ax.get_title(), float(x), float(y), round(area, 6), face))
    return sorted(points)


def csv_points(csv, panel=None):
    rows = []
    for row in csv.itertuples():
        title = panel(row) if panel else ""
        face = "none" if row.colour == "none" or pd.isna(row.colour) else to_hex(row.colour)
        if row.marker == "x":
            face = to_hex(row.colour)
        rows.append((title, float(row.depth), float(row.width), round(float(row.size), 6), face))
    return sorted(rows)


def drawn_labels(figure):
    return sorted(text.get_text() for ax in figure.axes for text in ax.texts if text.get_text())


@pytest.mark.parametrize("name", HEATMAP_NAMES)
def test_each_heatmap_csv_holds_exactly_the_points_and_labels_it_draws(heatmaps, drawn, name):
    path = heatmap_path(heatmaps[0] / "paired", "resmlp", name)
    csv = pd.read_csv(path.with_suffix(".csv"), keep_default_na=False, na_values=[""])
    figure = drawn[path]
    if name == "Ablation_Effects":
        points = csv_points(csv, lambda row: f"{row.mode} - none")
        assert {"mean_difference", "test", "p", "p_adjusted", "ci_low"} <= set(csv.columns)
        assert drawn_points(figure) == points
    else:
        title = figure.axes[0].get_title()
        assert drawn_points(figure) == csv_points(csv, lambda row: title)
    assert drawn_labels(figure) == sorted(x for x in csv["label"] if isinstance(x, str) and x)


def label_boxes(figure):
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    return [  # the text alone (an Annotation's own extent also covers its leader line)
        Text.get_window_extent(text, renderer)
        for ax in figure.axes
        for text in ax.texts
        if isinstance(text, Annotation)
    ]


def assert_no_overlap(boxes):
    for i, first in enumerate(boxes):
        for second in boxes[i + 1 :]:
            assert not first.overlaps(second), (first, second)


@pytest.mark.parametrize("size", ["page", "column"])
def test_point_labels_never_overlap(tmp_path, drawn, size):
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    grid = configs if size == "page" else CONFIGS
    mirrors = {arch.key for arch in read_config_file(REPRODUCTION / "asymmetric.txt")}
    options = FigureOptions(size=size, dpi=DPI)
    path = tmp_path / "matching.png"
    data = heatmap_parameter_matching(design_points(grid), mirrors, path, "resmlp", options)
    boxes = label_boxes(drawn[path])
    assert len(boxes) == len(data) == len(design_points(grid))
    assert_no_overlap(boxes)
    frame = drawn[path].axes[0].get_window_extent()
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 for box in boxes)


def marker_circles(figure):
    """(centre x, centre y, radius) in display units of every marker the axes draw."""
    circles = []
    for ax in figure.axes:
        for collection in ax.collections:
            if not isinstance(collection, PathCollection):
                continue
            sizes = collection.get_sizes()
            centres = ax.transData.transform(collection.get_offsets())
            for index, (x, y) in enumerate(centres):
                area = float(sizes[index if len(sizes) > 1 else 0])
                circles.append((x, y, math.sqrt(area) / 2 * figure.dpi / 72))
    return circles


def gap(box, circle):
    """Distance from a text box to the edge of a marker (negative where they overlap)."""
    x, y, radius = circle
    dx = max(box.x0 - x, x - box.x1, 0.0)
    dy = max(box.y0 - y, y - box.y1, 0.0)
    return math.hypot(dx, dy) - radius


def assert_labels_read_as_their_points(figure):
    """No label covers a marker; a label beside its point is nearer it than any other marker;
    a leader line passes through no marker but its own point's (and those overlapping it, which
    no line can avoid)."""
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    circles = marker_circles(figure)
    for ax in figure.axes:
        for text in ax.texts:
            if not isinstance(text, Annotation):
                continue
            box = Text.get_window_extent(text, renderer)
            own = tuple(ax.transData.transform(text.xy))
            gaps = [(gap(box, c), math.dist(own, c[:2]) < 1e-6) for c in circles]
            assert all(g > 0 for g, _ in gaps), f"{text.get_text()} covers a marker"
            if text.arrow_patch is None:
                nearest = min(gaps)
                assert nearest[1], f"{text.get_text()} sits nearer another point than its own"
                continue
            path = text.arrow_patch.get_path().interpolated(64).vertices
            own_radius = next(r for x, y, r in circles if math.dist(own, (x, y)) < 1e-6)
            for x, y, radius in circles:
                if math.dist(own, (x, y)) <= radius + own_radius:
                    continue
                reach = np.hypot(path[:, 0] - x, path[:, 1] - y).min()
                assert reach > radius, f"the leader line of {text.get_text()} crosses a marker"


@pytest.mark.parametrize("size", ["page", "column"])
def test_labels_of_the_shipped_grid_read_as_their_points_at_print_size(tmp_path, drawn, size):
    """At --size column the 1*4 label once sat beside the 4*4 marker, its leader line through
    the 2*4 and 4*4 markers: the overlap test compared labels only with each other."""
    configs = read_config_file(SHIPPED / "configurations.txt")
    mirrors = {arch.key for arch in read_config_file(REPRODUCTION / "asymmetric.txt")}
    path = tmp_path / "matching.png"
    options = FigureOptions(size=size, dpi=100)
    data = heatmap_parameter_matching(design_points(configs), mirrors, path, "resmlp", options)
    assert data["label"].astype(bool).all()
    assert_labels_read_as_their_points(drawn[path])


def test_the_shipped_ablation_effects_map_labels_every_point_at_page_size(tmp_path, drawn):
    """Its three panels once stood side by side at page width, too narrow to label any point."""
    from psa.report.inputs import read_trials

    long = read_trials(SHIPPED, "resmlp")
    configs = read_config_file(SHIPPED / "configurations.txt")
    table = architecture_summary(design_points(configs), long)
    path = tmp_path / "effects.png"
    heatmap_ablation_effects(table, long, path, "resmlp", FigureOptions(dpi=100))
    csv = pd.read_csv(path.with_suffix(".csv"), keep_default_na=False, na_values=[""])
    assert (csv["label"] == csv["arch"]).all() and len(csv) == 3 * len(configs)
    assert drawn_labels(drawn[path]) == sorted(csv["label"])
    assert_labels_read_as_their_points(drawn[path])
    width, height = drawn[path].get_size_inches()
    assert width == pytest.approx(7.0) and height <= 9.0  # within a page's text block


def test_labels_of_the_paper_grid_cover_no_marker_and_lead_past_none(tmp_path, drawn):
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    path = tmp_path / "matching.png"
    heatmap_parameter_matching(design_points(configs), set(), path, "resmlp", FigureOptions(dpi=50))
    assert_labels_read_as_their_points(drawn[path])


def test_the_crowded_diagonal_fans_out_with_leader_lines(tmp_path, drawn):
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    path = tmp_path / "space.png"
    design_space_figure(configs, path, options=FigureOptions(dpi=DPI))
    annotations = [text for text in drawn[path].axes[0].texts if isinstance(text, Annotation)]
    squares = [a for a in annotations if a.get_text().split("*")[0] == a.get_text().split("*")[1]]
    fanned = [a for a in squares if a.arrow_patch is not None]
    assert len(fanned) >= 20  # the run of squares from about 5*5 to 44*44
    assert_no_overlap(label_boxes(drawn[path]))


def crosses(segment, box, margin=0.5):
    """Whether the segment ((x0, y0), (x1, y1)) passes through the inside of ``box`` shrunk by
    ``margin`` display units (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = segment
    low, high = 0.0, 1.0
    for start, delta, near, far in (
        (x0, x1 - x0, box.x0 + margin, box.x1 - margin),
        (y0, y1 - y0, box.y0 + margin, box.y1 - margin),
    ):
        if delta == 0:
            if not near < start < far:
                return False
            continue
        t0, t1 = sorted(((near - start) / delta, (far - start) / delta))
        low, high = max(low, t0), min(high, t1)
    return low < high


def figure_note(figure):
    """The note under a figure that names (or counts) the points left unlabelled."""
    (note,) = [text for text in figure.texts if "not labelled" in text.get_text().lower()]
    return note


def assert_labels_and_leaders_keep_clear(figure):
    """No label box overlaps another; no leader line passes through another label's box, or
    through a marker but its own point's (and those overlapping it, which no line avoids)."""
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    assert_labels_read_as_their_points(figure)
    for ax in figure.axes:
        labels = [text for text in ax.texts if isinstance(text, Annotation)]
        boxes = [Text.get_window_extent(text, renderer) for text in labels]
        assert_no_overlap(boxes)
        for text in labels:
            if text.arrow_patch is None:
                continue
            line = text.arrow_patch.get_path().vertices
            for other, box in zip(labels, boxes, strict=True):
                if other is text:
                    continue
                for segment in zip(line, line[1:], strict=False):
                    assert not crosses(segment, box), (
                        f"the leader line of {text.get_text()} crosses the label {other.get_text()}"
                    )


def test_leader_lines_cross_no_label_on_the_design_space_at_print_size(tmp_path, drawn):
    """The 6*6 leader line once ran through the 5*5 label, and the fan's lines to its second
    and later columns clipped the labels beside them."""
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    path = tmp_path / "space.png"
    data = design_space_figure(configs, path, options=FigureOptions(dpi=100))
    assert (data["label"] == data["arch"]).all()
    assert_labels_and_leaders_keep_clear(drawn[path])


def test_leader_lines_cross_no_label_on_the_shipped_ablation_effects(tmp_path, drawn):
    """The 1*2 label once sat on the leader line of 1*1 in every panel."""
    from psa.report.inputs import read_trials

    long = read_trials(SHIPPED, "resmlp")
    configs = read_config_file(SHIPPED / "configurations.txt")
    table = architecture_summary(design_points(configs), long)
    path = tmp_path / "effects.png"
    data = heatmap_ablation_effects(table, long, path, "resmlp", FigureOptions(dpi=100))
    assert (data["label"] == data["arch"]).all()
    assert_labels_and_leaders_keep_clear(drawn[path])


def test_leader_lines_cross_no_label_on_the_paper_grids_parameter_matching(tmp_path, drawn):
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    mirrors = {arch.key for arch in read_config_file(REPRODUCTION / "asymmetric.txt")}
    path = tmp_path / "matching.png"
    options = FigureOptions(dpi=100)
    data = heatmap_parameter_matching(design_points(configs), mirrors, path, "resmlp", options)
    assert (data["label"] == data["arch"]).all()
    assert_labels_and_leaders_keep_clear(drawn[path])


def test_the_paper_grids_ablation_effects_labels_most_points_and_names_the_rest(tmp_path, drawn):
    """With the 98 configurations the three panels once had no room for every label at page
    size, and then showed none ("no room to label 2*30")."""
    from psa.report.inputs import read_trials

    long = read_trials(SHIPPED, "resmlp")
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    table = architecture_summary(design_points(configs), long)
    path = tmp_path / "effects.png"
    data = heatmap_ablation_effects(table, long, path, "resmlp", FigureOptions(dpi=100))
    csv = pd.read_csv(path.with_suffix(".csv"), keep_default_na=False, na_values=[""])
    labelled = csv["label"].fillna("") != ""
    assert (
        labelled.sum() > len(csv) / 2
        and (csv.loc[labelled, "label"] == csv.loc[labelled, "arch"]).all()
    )
    assert drawn_labels(drawn[path]) == sorted(csv.loc[labelled, "label"])
    assert_labels_and_leaders_keep_clear(drawn[path])
    left = csv[~labelled]
    note = data.attrs["note"]
    assert note.startswith(f"{len(left)} of {len(csv)} point labels left out for want of room")
    for mode, group in left.groupby("mode", sort=False):
        assert f"{mode} - none: {', '.join(group['arch'])}" in note
    line = f"make-figure-heatmaps: note: Ablation_Effects: {note}"  # as the command prints it
    assert_printed(quoted("TOOLS.md", "make-figure-heatmaps: note: Ablation_Effects:"), line)
    assert figure_note(drawn[path]).get_text() == (
        f"{len(left)} points not labelled for want of room (their CSV rows have an empty label)"
    )


def test_pdf_and_svg_are_real_vector_files(tmp_path):
    pdf, svg = tmp_path / "space.pdf", tmp_path / "space.svg"
    design_space_figure(CONFIGS, pdf, options=FigureOptions(fmt="pdf"))
    design_space_figure(CONFIGS, svg, options=FigureOptions(fmt="svg"))
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert ElementTree.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert "18*18" in svg.read_text()  # text stays text
    assert (tmp_path / "space.csv").exists()


def test_print_sizes_set_the_figure_size(tmp_path, drawn):
    for size, inches in (("column", 3.5), ("page", 7.0), ((5.0, 4.0), 5.0)):
        path = tmp_path / f"space-{inches}.png"
        design_space_figure(CONFIGS, path, options=FigureOptions(size=size, dpi=DPI))
        assert drawn[path].get_size_inches()[0] == pytest.approx(inches)


def test_data_limits_fit_the_grid_and_paper_limits_are_upstreams(tmp_path, drawn):
    table = architecture_summary(design_points(CONFIGS), long_form(results_cells(), True))
    paper, data = tmp_path / "paper.png", tmp_path / "data.png"
    heatmap_instability(table, paper, "resmlp", OPTIONS)
    heatmap_instability(table, data, "resmlp", FigureOptions(limits="data", dpi=DPI))
    assert drawn[paper].axes[0].get_xlim() == pytest.approx((0.8, 4000))
    low, high = drawn[data].axes[0].get_xlim()
    assert 0.5 < low < 1 and 64 < high < 200
    assert drawn[data].axes[0].get_ylim() == pytest.approx((low, high))


def test_colorblind_palette_draws_regimes_in_seaborn_colorblind_colours(tmp_path):
    long = long_form(results_cells(), True)
    path = tmp_path / "regimes.png"
    data = heatmap_regimes(
        design_points(CONFIGS), long, path, "resmlp", 11.02, FigureOptions(palette="colorblind")
    )
    allowed = set(sns.color_palette("colorblind").as_hex()) | {"#000000"}
    assert set(data["colour"]) <= allowed
    assert data.loc[data["regime"] == "untrainable", "marker"].eq("X").all()


def test_convergence_csv_holds_the_lines_and_band_it_draws(results_dir, tmp_path, drawn):
    write_jsonl_log(results_dir / "logs" / "4x17" / "decay-t1.jsonl", "4*17", "decay", 1,
                    [50.0, 70.0, 60.0])  # fmt: skip
    write_jsonl_log(results_dir / "logs" / "4x17" / "decay-t2.jsonl", "4*17", "decay", 2,
                    [40.0, 80.0, 75.0])  # fmt: skip
    add_trials(results_dir, "none")
    add_trials(results_dir, "decay")
    logs = read_loop_logs(results_dir)
    path = tmp_path / "convergence.svg"
    data = convergence_figure(logs, ["4*17"], path, options=FigureOptions(fmt="svg"))
    csv = pd.read_csv(path.with_suffix(".csv"), keep_default_na=False, na_values=[""])
    assert set(csv.loc[csv["mode"] == "decay", "identical_to"]) == {"none"}
    assert csv.loc[csv["mode"] == "none", "dashes"].eq("solid").all()
    assert not csv.loc[csv["mode"] == "decay", "dashes"].eq("solid").any()
    ax = drawn[path].axes[0]
    lines = {
        (to_hex(line.get_color()), tuple(line.get_xdata()), tuple(line.get_ydata()))
        for line in ax.lines
    }
    for _, rows in csv.groupby(["mode", "series"]):
        colour = to_hex(rows["colour"].iloc[0])
        assert (colour, tuple(rows["loop"]), tuple(rows["value"])) in lines
    bands = [c.get_paths()[0].vertices for c in ax.collections if isinstance(c, PolyCollection)]
    for mode in ("none", "decay"):
        mean = csv[(csv["mode"] == mode) & (csv["series"] == "mean")]
        expected = {(loop, round(v, 9)) for loop, v in zip(mean["loop"], mean["ci_low"])}
        expected |= {(loop, round(v, 9)) for loop, v in zip(mean["loop"], mean["ci_high"])}
        assert any(expected <= {(x, round(y, 9)) for x, y in band} for band in bands)
    assert ax.get_title(loc="right") == "ResMLP 4*17\ndecay identical to none"
    assert len(data) == len(csv)


@pytest.mark.parametrize(("size", "per_page"), [("page", 4), ("column", 3)])
def test_tall_convergence_figures_split_into_pages_of_a_text_blocks_height(
    results_dir, tmp_path, drawn, size, per_page
):
    """Four panels once made a 7 x 11.9 in figure, taller than a page's text block."""
    keys = ["1*64", "4*17", "18*18", "47*4", "2*8", "10*10", "30*2"]
    logs = read_loop_logs(results_dir)
    logs = pd.concat([logs.assign(arch=key) for key in keys], ignore_index=True)
    path = tmp_path / "convergence.pdf"
    data = convergence_figure(logs, keys, path, options=FigureOptions(size=size, fmt="pdf"))
    pages = data.attrs["paths"]
    assert pages[0] == path and pages[1] == tmp_path / "convergence-2.pdf"
    assert len(pages) == math.ceil(len(keys) / per_page)
    shown = []
    for page in pages:
        width, height = drawn[page].get_size_inches()
        assert height <= 9.0 and width == pytest.approx(3.5 if size == "column" else 7.0)
        assert page.read_bytes().startswith(b"%PDF-")
        shown += list(dict.fromkeys(pd.read_csv(page.with_suffix(".csv"))["arch"]))
    assert shown == keys


def test_labels_that_do_not_fit_are_left_out_and_named_under_the_figure(tmp_path, drawn):
    """At column size the 98 configurations' Parameter Matching once had no labels at all."""
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    points = design_points(configs)
    for labels in (None, True):  # the figure's default, and --labels
        path = tmp_path / f"matching-{labels}.png"
        options = FigureOptions(size="column", labels=labels, dpi=100)
        data = heatmap_parameter_matching(points, set(), path, "resmlp", options)
        left = data.loc[data["label"] == "", "arch"]
        assert 0 < len(left) < len(data)
        assert drawn_labels(drawn[path]) == sorted(data.loc[data["label"] != "", "arch"])
        assert data.attrs["note"] == (
            f"{len(left)} of {len(data)} point labels left out for want of room at this size "
            f"({', '.join(left)}); a larger --size fits more"
        )
        assert_labels_and_leaders_keep_clear(drawn[path])
        note = figure_note(drawn[path])
        assert note.get_text().startswith(f"{len(left)} points not labelled for want of room")
        renderer = drawn[path].canvas.get_renderer()
        below = note.get_window_extent(renderer)
        assert all(
            below.y1 <= ax.get_tightbbox(renderer).y0 for ax in drawn[path].axes
        )  # the note keeps clear of the plots, their axis labels and legends
        assert all(
            below.y1 <= legend.get_window_extent(renderer).y0 for legend in drawn[path].legends
        )


def test_a_short_list_of_unlabelled_points_is_named_under_the_figure(tmp_path, drawn):
    configs = read_config_file(REPRODUCTION / "configurations.txt")
    path = tmp_path / "space.png"
    data = design_space_figure(configs, path, options=FigureOptions(size=(5.0, 4.5), dpi=100))
    left = list(data.loc[data["label"] == "", "arch"])
    assert 0 < len(left) <= 12
    note = " ".join(figure_note(drawn[path]).get_text().split())
    assert note == f"Not labelled for want of room: {', '.join(left)}"


def test_colorblind_convergence_uses_the_palettes_lines_and_regime_badges(
    results_dir, tmp_path, drawn
):
    logs = read_loop_logs(results_dir)
    path = tmp_path / "convergence.png"
    options = FigureOptions(palette="colorblind", dpi=DPI)
    data = convergence_figure(logs, ["4*17"], path, options=options)
    colorblind = set(sns.color_palette("colorblind").as_hex()) | {"#000000"}
    assert set(data["colour"]) <= colorblind
    ax = drawn[path].axes[0]
    badges = [c for c in ax.get_children() if isinstance(c, Text) and c.get_bbox_patch()]
    assert [to_hex(badge.get_bbox_patch().get_facecolor()) for badge in badges] != []
    assert {to_hex(badge.get_bbox_patch().get_facecolor()) for badge in badges} <= colorblind
