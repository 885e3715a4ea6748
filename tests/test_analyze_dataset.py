"""``analyze-dataset`` on the real data: tables for terminals and pipes, JSON, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torchvision.datasets import MNIST

from command_support import refusal
from psa import data
from psa.commands import analyze_dataset

REPO_DATASET = Path(data.__file__).resolve().parents[2] / "dataset"


def test_text_output_shows_the_validation_baseline(capsys):
    analyze_dataset.main(["--data-dir", str(REPO_DATASET), "--format", "text"])
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    assert header[:3] == ["Class", "Full", "Train"]
    ones = next(line for line in lines if line.startswith("1 "))
    assert ones.split()[-2:] == ["1,102", "(11.02%)"]
    zeror = next(line for line in lines if line.startswith("ZeroR"))
    assert zeror.endswith("class 1: 11.02%")
    assert "11.24%" in zeror and "11.35%" in zeror and "11.28%" in zeror


def test_a_pipe_gets_plain_text_without_terminal_codes(capsys):
    analyze_dataset.main(["--data-dir", str(REPO_DATASET)])
    output = capsys.readouterr().out
    assert "\x1b[" not in output and "┃" not in output
    assert "Split Validation" in output


def test_json_output_carries_every_set(capsys):
    analyze_dataset.main(["--data-dir", str(REPO_DATASET), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"data_dir", "full_train", "full_test", "split_train", "split_validation"}
    validation = report["split_validation"]
    assert validation["class_counts"]["1"] == 1102
    assert validation["zeror_class"] == 1
    assert validation["zeror_accuracy"] == pytest.approx(11.02)


def test_missing_data_is_one_line_on_stderr_and_a_non_zero_exit(tmp_path, monkeypatch, capsys):
    def offline(self):
        raise OSError("network is unreachable")

    monkeypatch.setattr(MNIST, "download", offline)
    message = refusal(capsys, analyze_dataset.main, ["--data-dir", str(tmp_path)])[1]
    assert message.startswith("analyze-dataset: ") and "is missing" in message


@pytest.mark.parametrize(
    "path, printed",
    [
        ("split_validation.zeror_accuracy", "11.02"),
        ("split_validation.class_counts.1", "1102"),
        ("split_train.total_samples", "50000"),
        ("full_test.zeror_class", "1"),
    ],
)
def test_value_prints_one_number_of_the_report(capsys, path, printed):
    analyze_dataset.main(["--data-dir", str(REPO_DATASET), "--value", path])
    assert capsys.readouterr().out == printed + "\n"


@pytest.mark.parametrize(
    "path, message",
    [
        (
            "split_test.total_samples",
            "the report has no 'split_test'; it has full_train, full_test",
        ),
        ("full_test.class_counts", "is a table, not a number; add one of 0, 1, 2"),
        ("full_test.name", "full_test has no 'name'"),
    ],
)
def test_value_names_what_the_report_holds(capsys, path, message):
    argv = ["--data-dir", str(REPO_DATASET), "--value", path]
    status, line = refusal(capsys, analyze_dataset.main, argv)
    assert status == 2 and message in line
