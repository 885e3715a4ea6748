"""Counts that size what a command holds in memory before it starts are bounded: a count above
its bound is a usage error (exit status 2, one line naming the bound), refused while the command
line is parsed, before anything is allocated."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psa.arguments import (
    MAX_DPI,
    MAX_SHARDS,
    MAX_TIMED_STEPS,
    MAX_TRIALS,
    MAX_TRIALS_TOGETHER,
    argparse_shard,
    bounded_int,
)
from psa.cli import CommandParser
from psa.commands import bench, check_device, reproduction, sagemaker_runner, sweep
from psa.report.style import add_figure_flags

ROOT = Path(__file__).resolve().parent.parent
HUGE = "999999999999"


@given(most=st.integers(1, 10**6), value=st.integers(-(10**15), 10**15))
def test_a_bounded_count_is_accepted_from_1_to_its_bound_and_refused_in_one_line_past_it(
    most, value
):
    parse = bounded_int(most, "things (a reason)")
    if 1 <= value <= most:
        assert parse(str(value)) == value
        return
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        parse(str(value))
    message = str(refused.value)
    assert "\n" not in message
    if value > most:
        assert f"{value} is more than {most}, the most things (a reason)" in message
        assert message.endswith(f"; give at most {most}")


@given(text=st.text(max_size=30))
def test_a_bounded_count_refuses_any_text_that_is_not_a_whole_number_in_one_line(text):
    parse = bounded_int(10, "things")
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as refused:
        assert "\n" not in str(refused)
    else:
        assert 1 <= value <= 10 and value == int(text)


@given(index=st.integers(1, 50), count=st.integers(1, 10 * MAX_SHARDS))
def test_a_shard_of_more_shards_than_the_bound_is_refused(index, count):
    text = f"{min(index, count)}/{count}"
    if count <= MAX_SHARDS:
        assert argparse_shard(text).count == count
        return
    with pytest.raises(argparse.ArgumentTypeError, match=f"more than {MAX_SHARDS}"):
        argparse_shard(text)


def figure_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="make-figure-heatmaps")
    add_figure_flags(parser)
    return parser


@pytest.mark.parametrize(
    ("parser", "argv", "bound"),
    [
        (sweep.build_parser, ["--trials", HUGE, "--dry-run"], MAX_TRIALS),
        (sweep.build_parser, ["--shard", f"1/{HUGE}", "--dry-run"], MAX_SHARDS),
        (sweep.build_parser, ["--launcher", "local", "--shards", HUGE, "--dry-run"], MAX_SHARDS),
        (reproduction.build_parser, ["--trials", HUGE], MAX_TRIALS),
        (sagemaker_runner.build_parser, ["--trials", HUGE, "--dry-run"], MAX_TRIALS),
        (sagemaker_runner.build_parser, ["--shards", HUGE, "--dry-run"], MAX_SHARDS),
        (check_device.build_parser, ["--steps", HUGE], MAX_TIMED_STEPS),
        (figure_parser, ["--dpi", HUGE], MAX_DPI),
    ],
)
def test_a_huge_count_is_a_one_line_usage_error_while_parsing(parser, argv, bound, capsys):
    with pytest.raises(SystemExit) as refused:
        parser().parse_args(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{HUGE} is more than {bound}, the most " in err


def test_bench_refuses_more_trials_together_than_a_sweep_trains_before_it_starts(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("bench started measuring")

    monkeypatch.setattr(bench, "resolve_device", started)
    with pytest.raises(SystemExit) as refused:
        bench.main(["--trials", f"1,{MAX_TRIALS_TOGETHER + 1}", "--archs", "4*17"])
    message = str(refused.value.code)
    assert message.startswith(f"bench: --trials: {MAX_TRIALS_TOGETHER + 1} is more than ")
    assert "\n" not in message


def limited_memory() -> None:
    """In the child: 4 GB of address space, so a count that allocates fails fast, not by
    exhausting the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def test_sweep_refuses_a_trillion_trials_in_a_dry_run_with_exit_2_and_one_line(tmp_path):
    argv = ["--arch", "[4*17]", "--trials", HUGE, "--dry-run", "--results-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "psa", "sweep", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
        preexec_fn=limited_memory,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1
    assert f"argument --trials: {HUGE} is more than {MAX_TRIALS}" in done.stderr
    assert not any(tmp_path.iterdir())
