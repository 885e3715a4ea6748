import json
import re

import pytest

from command_support import refusal
from psa.commands.report import (
    architecture_table_main,
    classify_regimes_main,
    convergence_main,
    design_space_main,
    heatmaps_main,
    parse_targets,
    trial_accuracy_table_main,
)
from psa.modes import MODES
from psa.store.tables import write_summary_markdown, write_trials_markdown
from schemas import loop_record, trial_record

ARCHS = {"4*17": ("4x17", 95.0), "2*2": ("2x2", 11.02)}


def build_results_dir(root):
    """A results dir laid out as sweep writes it: settings, trial records, per-loop logs, tables."""
    records = []
    for arch, (slug, level) in ARCHS.items():
        for mode_index, mode in enumerate(MODES):
            for trial in (1, 2, 3):
                bounty = level if level < 12 else level + mode_index * 0.05 + trial * 0.1
                records.append(
                    trial_record(
                        arch, mode, trial, bounty, bounty_loop=3, test_accuracy=bounty - 0.2
                    )
                )
                log = root / "logs" / slug / f"{mode}-t{trial}.jsonl"
                log.parent.mkdir(parents=True, exist_ok=True)
                lines = [
                    loop_record(arch, mode, trial, loop, bounty - 3 + loop, bounty - 3 + loop)
                    for loop in (1, 2, 3)
                ]
                log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "settings.json").write_text(json.dumps({"model": "resmlp", "meta_loops": 3}))
    write_trials_markdown(records, root / "psa_resmlp_trials.md")
    write_summary_markdown(records, root / "psa_resmlp_summary.md")
    return root


@pytest.fixture
def results(tmp_path):
    return build_results_dir(tmp_path / "results")


@pytest.fixture
def configs(tmp_path):
    path = tmp_path / "configurations.txt"
    path.write_text("4*17\n2*2\n8*8\n")
    mirrors = tmp_path / "asymmetric.txt"
    mirrors.write_text("# mirrors\n17*4\n")
    return path, mirrors


def fail_line(capsys, main, argv):
    """Run a command that must fail as its console script does; return its one stderr line."""
    return refusal(capsys, main, argv)[1]


def test_classify_regimes_prints_a_table_and_counts(results, configs, capsys):
    argv = ["--trials-file", str(results), "--config-file", str(configs[0])]
    assert classify_regimes_main(argv) == 0
    out = capsys.readouterr().out
    assert "| 4*17 | Beneficial Regularization |" in out
    assert "| 2*2 | Untrainable | no trial beat ZeroR |" in out
    assert "| 8*8 | Unknown |" in out
    assert "| Untrainable | 1 |" in out and "| Unknown | 1 |" in out


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
def test_classify_regimes_says_on_stderr_why_rows_are_unknown(results, configs, fmt, capsys):
    lines = (results / "trials.jsonl").read_text().splitlines(keepends=True)
    kept = [line for line in lines if not ('"2*2"' in line and '"mode": "full"' in line)]
    assert len(kept) == len(lines) - 3
    (results / "trials.jsonl").write_text("".join(kept))  # 2*2 now lacks its full trials
    argv = ["--trials-file", str(results), "--config-file", str(configs[0]), "--format", fmt]
    assert classify_regimes_main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == [
        f"classify-regimes: note: 1 of the 3 architectures of {configs[0]} has no trials in "
        f"{results}; it is listed as Unknown",
        f"classify-regimes: note: 1 of the 3 architectures lacks the trials of some modes in "
        f"{results}; it is listed as Unknown",
    ]


def test_classify_regimes_json_and_csv_from_a_trial_table(results, capsys):
    table = results / "psa_resmlp_trials.md"
    classify_regimes_main(["--trials-file", str(table), "--format", "json", "--zeror", "97"])
    payload = json.loads(capsys.readouterr().out)
    assert payload["zeror"] == 97
    regimes = {row["architecture"]: row["regime"] for row in payload["architectures"]}
    assert regimes == {"4*17": "Untrainable", "2*2": "Untrainable"}
    assert payload["counts"]["Untrainable"] == 2
    classify_regimes_main(["--trials-file", str(table), "--format", "csv"])
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("architecture,regime,rule,muB,muA,none")
    assert "Untrainable: 1" in captured.err


def test_classify_regimes_rejects_a_malformed_table_without_touching_the_output(tmp_path, capsys):
    table = tmp_path / "trials.md"
    table.write_text("### Architecture: 1*4\n\n| Trial | None |\n|:--|:--|\n| 1 | lots |\n")
    output = tmp_path / "regimes.md"
    output.write_text("previous\n")
    argv = ["--trials-file", str(table), "--output-file", str(output)]
    err = fail_line(capsys, classify_regimes_main, argv)
    assert err.startswith("classify-regimes: trials.md:5: cell 'lots'")
    assert output.read_text() == "previous\n"


def test_zeror_flag_and_zeror_from_data_exclude_each_other(results, capsys):
    argv = ["--trials-file", str(results), "--zeror", "11", "--zeror-from-data"]
    err = fail_line(capsys, classify_regimes_main, argv)
    assert "not allowed with argument" in err


def test_missing_trials_file_says_what_to_do(tmp_path, capsys):
    err = fail_line(capsys, classify_regimes_main, ["--trials-file", str(tmp_path / "nope.md")])
    assert "does not exist; run `sweep` first" in err


def test_architecture_table_of_a_configurations_file(configs, capsys):
    architecture_table_main(
        ["--config-file", str(configs[0]), "--asymmetric-file", str(configs[1])]
    )
    out = capsys.readouterr().out
    assert r"4*17 & 15,973 & 14,443 & Matched \\" in out
    assert out.count(r"\\") >= 4


def test_architecture_table_names_the_bad_line_of_a_config_file(tmp_path, capsys):
    bad = tmp_path / "configs.txt"
    bad.write_text("4*17\n4x4\n")
    err = fail_line(capsys, architecture_table_main, ["--config-file", str(bad)])
    assert "configs.txt:2:" in err


def test_trial_accuracy_table_from_summary_and_records_agree(results, configs, capsys):
    order = ["--order", str(configs[0])]
    trial_accuracy_table_main(["--datafile", str(results / "psa_resmlp_summary.md"), *order])
    from_summary = capsys.readouterr()
    trial_accuracy_table_main(
        ["--datafile", str(results), *order, "--caption", "C", "--label", "L"]
    )
    from_records = capsys.readouterr().out
    rows = [line for line in from_summary.out.splitlines() if line.startswith("$")]
    assert rows == [line for line in from_records.splitlines() if line.startswith("$")]
    assert rows[0].endswith(r"\texttt{output} \\")
    assert rows[1].startswith("$2*2$") and "Tie: " in rows[1]
    assert "1 architectures of" in from_summary.err
    assert r"\caption{C. Std is the population standard deviation" in from_records
    assert r"\label{L} \\" in from_records
    trial_accuracy_table_main(["--datafile", str(results / "trials.jsonl"), *order])
    assert "over 3 Trials of 3 Meta-Loops for ResMLP" in capsys.readouterr().out


def test_trial_accuracy_table_states_the_std_it_shows_and_takes_the_sample_one(
    results, configs, capsys
):
    order = ["--order", str(configs[0])]
    trial_accuracy_table_main(["--datafile", str(results), *order])
    population = capsys.readouterr().out
    trial_accuracy_table_main(["--datafile", str(results), *order, "--ddof", "1"])
    sample = capsys.readouterr().out
    assert "Std is the population standard deviation over the trials (ddof=0).}" in population
    assert "Std is the sample standard deviation over the trials (ddof=1).}" in sample
    # Three trials: the sample std is sqrt(3/2) times the population one, the means are equal.
    cell = re.compile(r"\$(?:\\mathbf\{)?([0-9.]+) \\pm ([0-9.]+)")
    pairs = zip(cell.findall(population), cell.findall(sample), strict=True)
    for (mean0, std0), (mean1, std1) in pairs:
        assert mean0 == mean1
        assert float(std1) == pytest.approx(float(std0) * 1.5**0.5, abs=0.011)


def test_trial_accuracy_table_refuses_the_sample_std_of_a_summary(results, configs, capsys):
    argv = ["--datafile", str(results / "psa_resmlp_summary.md"), "--order", str(configs[0])]
    status, line = refusal(capsys, trial_accuracy_table_main, [*argv, "--ddof", "1"])
    assert status == 2 and "whose stds are population ones (ddof=0)" in line


def test_figure_commands_write_their_files_with_a_csv_each(results, configs, tmp_path, capsys):
    out = tmp_path / "figures"
    design_space_main(
        ["--config-file", str(configs[0]), "--output-file", str(out / "d.png"), "--dpi", "20"]
    )
    common = ["--config-file", str(configs[0]), "--asymmetric-file", str(configs[1])]
    heatmaps_main(["--trials-file", str(results), *common, "--output-dir", str(out), "--dpi", "20"])
    convergence_main(["--logs-dir", str(results), "--output-dir", str(out), "--dpi", "20"])
    printed = capsys.readouterr().out.split()
    assert len(printed) == 16
    names = sorted(path.name for path in out.iterdir())
    assert "ResMLP_Heatmap_Ablation_Effects.png" in names
    assert "ResMLP_Plot_Convergence.png" in names and "d.png" in names and "d.csv" in names
    assert sorted(printed) == sorted(str(out / name) for name in names)


def test_a_figure_with_labels_it_had_no_room_for_names_them_on_stderr(tmp_path, capsys):
    """The 98 configurations at column size were once drawn without any label."""
    import pandas as pd

    target = tmp_path / "d.png"
    argv = ["--config-file", "reproduction/configurations.txt", "--output-file", str(target)]
    assert design_space_main([*argv, "--size", "column", "--labels", "--dpi", "40"]) == 0
    err = capsys.readouterr().err.strip()
    drawn = pd.read_csv(target.with_suffix(".csv"), keep_default_na=False)
    left = drawn.loc[drawn["label"] == "", "arch"]
    assert 0 < len(left) < len(drawn) and "\n" not in err
    assert err == (
        f"make-figure-design-space: note: {len(left)} of {len(drawn)} point labels left out for "
        f"want of room at this size ({', '.join(left)}); a larger --size fits more"
    )


def test_the_output_suffix_or_format_flag_picks_the_file_format(results, configs, tmp_path):
    out = tmp_path / "figures"
    design_space_main(["--config-file", str(configs[0]), "--output-file", str(out / "d.pdf")])
    assert (out / "d.pdf").read_bytes().startswith(b"%PDF-")
    argv = ["--logs-dir", str(results), "--output-dir", str(out), "--format", "svg"]
    convergence_main([*argv, "--size", "column"])
    assert (out / "ResMLP_Plot_Convergence.svg").read_text().lstrip().startswith("<?xml")


def test_a_format_that_disagrees_with_the_suffix_is_one_line(configs, tmp_path, capsys):
    target = tmp_path / "d.pdf"
    argv = ["--config-file", str(configs[0]), "--output-file", str(target), "--format", "svg"]
    err = fail_line(capsys, design_space_main, argv)
    assert "--format svg disagrees with --output-file" in err and "drop one" in err
    err = fail_line(capsys, design_space_main, ["--output-file", str(tmp_path / "d.jpg")])
    assert "suffix .jpg; use .png, .pdf or .svg" in err
    err = fail_line(capsys, design_space_main, ["--size", "wide"])
    assert "is not column, page or W,H in inches; give" in err
    assert not list(tmp_path.glob("d.*"))


def test_model_is_taken_from_the_records(results, configs, tmp_path, capsys):
    records = (results / "trials.jsonl").read_text().replace('"resmlp"', '"mlp"')
    (results / "trials.jsonl").write_text(records)
    out = tmp_path / "figures"
    argv = ["--trials-file", str(results), "--config-file", str(configs[0]), "--dpi", "20"]
    heatmaps_main([*argv, "--output-dir", str(out)])
    assert (out / "SimpleMLP_Heatmap_Regimes.png").exists()
    err = fail_line(capsys, heatmaps_main, [*argv, "--output-dir", str(out), "--model", "resmlp"])
    assert "holds no resmlp results, only mlp; pass --model mlp or leave --model out" in err


def test_heatmaps_refuse_a_malformed_record_and_write_nothing(results, configs, tmp_path, capsys):
    with (results / "trials.jsonl").open("a") as stream:
        stream.write("{broken\n")
    out = tmp_path / "figures"
    argv = [
        "--trials-file",
        str(results),
        "--config-file",
        str(configs[0]),
        "--output-dir",
        str(out),
    ]
    err = fail_line(capsys, heatmaps_main, argv)
    assert "trials.jsonl:37: not a JSON object" in err
    assert not out.exists()


def test_late_breakthroughs_without_logs_for_any_target_is_an_error(results, tmp_path, capsys):
    argv = ["--logs-dir", str(results), "--output-dir", str(tmp_path), "--late-breakthroughs"]
    err = fail_line(capsys, convergence_main, argv)
    assert "none of the targets has logs" in err
    assert not list(tmp_path.glob("*.png"))


def test_convergence_targets_keep_only_logged_architectures(results, tmp_path, capsys):
    argv = ["--logs-dir", str(results / "logs"), "--output-dir", str(tmp_path), "--dpi", "20"]
    convergence_main([*argv, "--targets", "2*2,9*9", "--late-breakthroughs", "--show", "best"])
    captured = capsys.readouterr()
    assert "no logs for 9*9" in captured.err
    assert (tmp_path / "ResMLP_Plot_Late_Breakthroughs.png").exists()


def test_targets_accept_bracketed_multi_stack_architectures():
    assert parse_targets("1*1024, [4*4, 2*8],18*18") == ["1*1024", "4*4, 2*8", "18*18"]


@pytest.mark.slow
def test_every_command_runs_on_a_real_sweep(tmp_path, capsys):
    from psa.commands.sweep import main as sweep_main

    results = tmp_path / "results"
    sweep_main(
        ["--arch", "[1*8]", "--arch", "[2*2]", "--trials", "2", "--meta-loops", "2"]
        + ["--seed", "3", "--results-dir", str(results), "--device", "cpu"]
    )
    configs = tmp_path / "configs.txt"
    configs.write_text("1*8\n2*2\n")
    capsys.readouterr()
    classify_regimes_main(["--trials-file", str(results), "--format", "json"])
    payload = json.loads(capsys.readouterr().out)
    assert [row["architecture"] for row in payload["architectures"]] == ["1*8", "2*2"]
    assert all(row[mode] is not None for row in payload["architectures"] for mode in MODES)
    trial_accuracy_table_main(["--datafile", str(results), "--order", str(configs)])
    assert "over 2 Trials of 2 Meta-Loops" in capsys.readouterr().out
    architecture_table_main(["--config-file", str(configs)])
    figures = tmp_path / "figures"
    common = ["--output-dir", str(figures), "--dpi", "20"]
    heatmaps_main(["--trials-file", str(results), "--config-file", str(configs), *common])
    convergence_main(["--logs-dir", str(results), *common])
    convergence_main(["--logs-dir", str(results), "--curve", "current", *common])
    design_space_main(
        ["--config-file", str(configs), "--output-file", str(figures / "d.png"), "--dpi", "20"]
    )
    assert len(list(figures.glob("*.png"))) == 8
    assert len(list(figures.glob("*.csv"))) == 8
