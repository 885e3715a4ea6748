"""check-reproduction: the shipped claims hold for the shipped results, an altered record fails the
claim it touches (named), and a claims file that cannot be used is refused in one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import psa
from psa.cli import run

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
    assert out.count("PASS  ") == 32 and "FAIL" not in out
    assert out.rstrip().endswith("32 of 32 claims pass")


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
    argv = ["--results-dir", str(results), "--claims", str(CLAIMS / "shipped.toml")]
    assert run("check-reproduction", argv) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1] for line in failed] == ["hidden-grid-val:", "hidden-18x18-val:"]
    assert out.rstrip().endswith("30 of 32 claims pass; failed: hidden-grid-val, hidden-18x18-val")


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
        ("[[claim]]\nname = 1\n", "claim 1 needs name, statement, command, expected and tolerance"),
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
