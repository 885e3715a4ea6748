"""check-reproduction: the shipped claims hold for the shipped results, an altered record fails the
claims it touches (named), a loop log that contradicts its record, a lost loop and a changed
value no other claim reads fail the integrity and digest claims, the facts' dataset claims hold
for the shipped MNIST, and a claims file that cannot be used is refused in one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

import psa
import psa.results
from psa.cli import run
from psa.integrity import digest, integrity

ROOT = Path(psa.__file__).resolve().parents[2]
SHIPPED = ROOT / "results"
CLAIMS = ROOT / "reproduction" / "claims"


def copy_of_shipped(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    for name in ("trials.jsonl", "settings.json"):
        shutil.copy(SHIPPED / name, results / name)
    shutil.copytree(SHIPPED / "logs", results / "logs")
    return results


def test_the_shipped_claims_pass_on_the_shipped_results(capsys):
    assert (
        run(
            "check-reproduction",
            ["--results-dir", str(SHIPPED), "--claims", str(CLAIMS / "shipped.toml")],
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("PASS  ") == 50 and "FAIL" not in out
    assert out.rstrip().endswith("50 of 50 claims pass")


def test_the_smoke_claims_hold_for_the_shipped_trials_they_retrain(capsys):
    argv = ["--results-dir", str(SHIPPED), "--claims", str(CLAIMS / "smoke.toml")]
    assert run("check-reproduction", argv) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_an_altered_record_fails_the_claim_it_touches_by_name(tmp_path, capsys):
    results = copy_of_shipped(tmp_path)
    lines = (results / "trials.jsonl").read_text().splitlines()
    for number, line in enumerate(lines):
        record = json.loads(line)
        if (record["arch"], record["mode"], record["trial"]) == ("18*18", "hidden", 2):
            lines[number] = json.dumps({**record, "val_bounty": record["val_bounty"] + 0.3})
    (results / "trials.jsonl").write_text("\n".join(lines) + "\n")
    assert failed_claims(results, capsys) == [
        "hidden-grid-val",
        "hidden-18x18-val",
        "records-agree-with-logs",
        "digest-trials",
    ]


def failed_claims(results: Path, capsys, claims: str = "shipped.toml") -> list[str]:
    argv = ["--results-dir", str(results), "--claims", str(CLAIMS / claims)]
    status = run("check-reproduction", argv)
    out = capsys.readouterr().out
    failed = [line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("FAIL")]
    assert status == (1 if failed else 0)
    if failed:
        assert out.rstrip().endswith(f"claims pass; failed: {', '.join(failed)}")
    return failed


def edit_lines(path: Path, edit) -> None:
    """Rewrite a JSON-lines file with ``edit(dict)`` applied to every line (None drops it)."""
    lines = [edit(json.loads(line)) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines if line is not None))


def is_trial(line: dict, arch: str, mode: str, trial: int) -> bool:
    return (line["arch"], line["mode"], line["trial"]) == (arch, mode, trial)


def test_a_changed_test_accuracy_fails_the_trials_digest(tmp_path, capsys):
    results = copy_of_shipped(tmp_path)
    edit_lines(
        results / "trials.jsonl",
        lambda r: (
            {**r, "test_accuracy": r["test_accuracy"] + 5} if is_trial(r, "2*30", "full", 1) else r
        ),
    )
    assert failed_claims(results, capsys) == ["digest-trials"]


def test_a_value_on_an_architecture_no_claim_names_fails_integrity_and_digest(tmp_path, capsys):
    # +0.02 moves the grid mean of full by 0.0003, inside its claim's rounding.
    results = copy_of_shipped(tmp_path)
    edit_lines(
        results / "trials.jsonl",
        lambda r: (
            {**r, "val_bounty": r["val_bounty"] + 0.02} if is_trial(r, "2*30", "full", 1) else r
        ),
    )
    assert failed_claims(results, capsys) == ["records-agree-with-logs", "digest-trials"]


def test_a_value_changed_in_record_and_log_alike_fails_both_digests(tmp_path, capsys):
    results = copy_of_shipped(tmp_path)

    def plus(line: dict) -> dict:
        if not is_trial(line, "2*30", "full", 1):
            return line
        if "loop" not in line:
            return {**line, "val_bounty": line["val_bounty"] + 0.02}
        if line["loop"] < 10:
            return line
        up = {
            "val_accuracy": line["val_accuracy"] + 0.02,
            "lkg_accuracy": line["lkg_accuracy"] + 0.02,
        }
        return {**line, **up}

    edit_lines(results / "trials.jsonl", plus)
    edit_lines(results / "logs" / "2x30" / "full-t1.jsonl", plus)
    assert failed_claims(results, capsys) == ["digest-trials", "digest-loops"]


def test_a_loop_log_that_contradicts_its_record_fails_the_integrity_claims(tmp_path, capsys):
    results = copy_of_shipped(tmp_path)
    edit_lines(
        results / "logs" / "30x2" / "output-t2.jsonl",
        lambda line: {**line, "promoted": not line["promoted"]} if line["loop"] == 4 else line,
    )
    assert failed_claims(results, capsys) == ["logs-consistent", "digest-loops"]
    edit_lines(
        results / "logs" / "30x2" / "output-t2.jsonl",
        lambda line: None if line["loop"] == 10 else line,
    )
    assert failed_claims(results, capsys) == [
        "loops",
        "records-agree-with-logs",
        "logs-complete",
        "logs-consistent",
        "digest-loops",
    ]


def test_the_integrity_table_names_each_problem(tmp_path):
    results = copy_of_shipped(tmp_path)
    log = results / "logs" / "1x64" / "none-t3.jsonl"
    edit_lines(log, lambda line: {**line, "loop": 12} if line["loop"] == 5 else line)
    tables = psa.results.load(results)
    table = integrity(tables.trials, tables.loops)
    assert len(table) == 360 and table["recorded"].all()
    bad = table[~table["log_complete"]]
    assert bad[["arch", "mode", "trial"]].values.tolist() == [["1*64", "none", 3]]
    assert bad["problem"].iloc[0].startswith("its log holds loops 1,2,3,4,6,7,8,9,10,12, not 1-10")
    log.unlink()
    tables = psa.results.load(results)
    table = integrity(tables.trials, tables.loops)
    row = table[(table["arch"] == "1*64") & (table["trial"] == 3) & (table["mode"] == "none")]
    assert row["problem"].iloc[0] == "no loop log" and row["loops_logged"].iloc[0] == 0


def test_a_digest_depends_on_every_value_not_on_row_order_or_type():
    frame = pd.DataFrame({"arch": ["1*8", "2*4"], "trial": [1, 2], "acc": [90.5, 91.0]})
    same = frame.iloc[::-1].astype({"trial": "Int64"})
    assert digest(frame, ["arch", "trial", "acc"]) == digest(same, ["arch", "trial", "acc"])
    changed = frame.assign(acc=[90.5, 91.02])
    assert digest(frame, ["arch", "trial", "acc"]) != digest(changed, ["arch", "trial", "acc"])
    assert digest(frame, ["arch", "acc"]) != digest(frame, ["arch", "trial", "acc"])


def test_the_facts_dataset_claims_hold_for_the_shipped_mnist(capsys):
    failed = failed_claims(SHIPPED, capsys, "facts.toml")
    # The shipped results hold no [1*1024] run: only the run's claims fail.
    assert failed and all(name.startswith(("run-", "1x1024-")) for name in failed)
    assert "run-records-agree-with-logs" not in failed


def claims_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "claims.toml"
    command = "psa results-value --results-dir {results_dir} --table summary --where "
    command += "\\\"arch == '16*1' and mode == 'none'\\\" --column regime --stat first"
    path.write_text(f'[[claim]]\nname = "c"\nstatement = "s"\ncommand = "{command}"\n{body}')
    return path


@pytest.mark.parametrize(
    "body, shown",
    [
        ('expected = "untrainable"\n', "PASS  c: s: untrainable (expected untrainable)"),
        ('expected = "chaotic-optimization"\n', "FAIL  c: s: untrainable (expected chaotic"),
        ("expected = 1\ntolerance = 0\n", "FAIL  c: s: untrainable (expected a number)"),
    ],
)
def test_a_claim_of_a_word_passes_only_on_that_word(tmp_path, capsys, body, shown):
    argv = ["--results-dir", str(SHIPPED), "--claims", str(claims_file(tmp_path, body))]
    run("check-reproduction", argv)
    assert shown in capsys.readouterr().out


@pytest.mark.parametrize(
    "bounds, passed",
    [
        ("minimum = 9.89", True),
        ("maximum = 9.89", True),
        ("minimum = 9.9", False),
        ("maximum = 9.88\nminimum = 0", False),
    ],
)
def test_a_claim_of_a_range_includes_its_bounds(tmp_path, capsys, bounds, passed):
    path = tmp_path / "claims.toml"
    command = (
        "psa results-value --results-dir {results_dir} --where \\\"arch == '16*1'\\\" --stat mean"
    )
    path.write_text(f'[[claim]]\nname = "c"\nstatement = "s"\ncommand = "{command}"\n{bounds}\n')
    status = run("check-reproduction", ["--results-dir", str(SHIPPED), "--claims", str(path)])
    assert status == (0 if passed else 1)
    assert "9.89 (expected at " in capsys.readouterr().out


def test_a_claim_whose_command_fails_is_a_failed_claim_with_the_reason(tmp_path, capsys):
    claims = tmp_path / "claims.toml"
    claims.write_text(
        '[[claim]]\nname = "no-such-arch"\nstatement = "[9*9] exists"\n'
        'command = "psa results-value --results-dir {results_dir} --where \\"arch == \'9*9\'\\""\n'
        "expected = 1\ntolerance = 0\n"
        '[[claim]]\nname = "program"\nstatement = "a program prints 2"\n'
        f'command = "{sys.executable} -c \\"print(2)\\""\nexpected = 2\ntolerance = 0\n'
    )
    argv = ["--results-dir", str(SHIPPED), "--claims", str(claims), "--allow-programs"]
    assert run("check-reproduction", argv) == 1
    out = capsys.readouterr().out
    assert "FAIL  no-such-arch: [9*9] exists: the command failed (" in out and "keeps no row" in out
    assert "PASS  program: a program prints 2: 2 (expected 2 ± 0)" in out


def program_claim(command: str) -> str:
    return (
        '[[claim]]\nname = "trials"\nstatement = "360 trials"\n'
        'command = "psa results-value --results-dir {results_dir} --stat count"\n'
        "expected = 360\ntolerance = 0\n"
        f'[[claim]]\nname = "program"\nstatement = "it prints 1"\ncommand = "{command}"\n'
        "expected = 1\ntolerance = 0\n"
    )


@pytest.mark.parametrize(
    "command, named",
    [
        ('sh -c \\"touch {marker}; echo 1\\"', "'sh'"),
        ("psa clean --all {marker}", "'clean'"),
        ("psa sweep --arch [1*1] --trials 1 --meta-loops 1 --results-dir {marker}", "'sweep'"),
    ],
)
def test_a_claims_file_that_runs_a_program_is_refused_before_any_claim_runs(
    tmp_path, capsys, command, named
):
    marker = tmp_path / "marker"
    if "clean" in command:  # clean would delete it
        marker.write_text("kept")
    claims = tmp_path / "claims.toml"
    claims.write_text(program_claim(command.replace("{marker}", str(marker))))
    assert run("check-reproduction", ["--results-dir", str(SHIPPED), "--claims", str(claims)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"claim 'program' runs {named}, not one of psa's queries" in captured.err
    assert "--allow-programs" in captured.err
    assert marker.exists() == ("clean" in command)


def test_allow_programs_runs_a_program_claim(tmp_path, capsys):
    marker = tmp_path / "marker"
    claims = tmp_path / "claims.toml"
    claims.write_text(program_claim(f'sh -c \\"touch {marker}; echo 1\\"'))
    argv = ["--results-dir", str(SHIPPED), "--claims", str(claims), "--allow-programs"]
    assert run("check-reproduction", argv) == 0
    assert marker.exists() and "2 of 2 claims pass" in capsys.readouterr().out


def test_a_query_claim_cannot_run_code_through_its_where(tmp_path, capsys):
    marker = tmp_path / "marker"
    claims = tmp_path / "claims.toml"
    where = f"@Path('{marker}').write_text('x') > 0"
    claims.write_text(
        '[[claim]]\nname = "sneaky"\nstatement = "a query"\n'
        f'command = "psa results-value --results-dir {{results_dir}} --where \\"{where}\\""\n'
        "expected = 1\ntolerance = 0\n"
    )
    assert run("check-reproduction", ["--results-dir", str(SHIPPED), "--claims", str(claims)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  sneaky" in out and "may only compare columns with values" in out
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[claim]]\nname = 1\n", "claim 1 needs name, statement, command, and expected"),
        (
            '[[claim]]\nname = "w"\nstatement = "s"\ncommand = "c"\nexpected = "x"\n'
            "tolerance = 1\n",
            "a word is expected exactly",
        ),
        (
            '[[claim]]\nname = "r"\nstatement = "s"\ncommand = "c"\nminimum = 2\nmaximum = 1\n',
            "a range is minimum <= maximum",
        ),
        ("claim = [", "is not TOML"),
        ("title = 'no claims'\n", "holds no [[claim]] tables"),
    ],
)
def test_a_claims_file_that_cannot_be_used_is_refused_in_one_line(tmp_path, capsys, text, message):
    claims = tmp_path / "claims.toml"
    claims.write_text(text)
    assert run("check-reproduction", ["--results-dir", str(SHIPPED), "--claims", str(claims)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("check-reproduction: ")
