"""The ``bench`` command: what its JSON report holds, and one-line refusals of bad lists.
Speeds are machine-dependent and never asserted."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from psa.arch import Arch
from psa.commands import bench, bench_engines
from psa.config import Hyperparameters
from psa.engine import Engine
from psa.model import build_network


@pytest.mark.slow
def test_bench_writes_the_matmul_peak_and_a_row_per_engine_and_batch_size(
    tmp_path, repo_dataset, capsys
):
    output = tmp_path / "out" / "bench.json"
    bench.main(
        [
            *("--archs", "1*8", "--trials", "1,2", "--precisions", "fp32", "--steps", "2"),
            *("--output", str(output), "--data-dir", str(repo_dataset), "--device", "cpu"),
        ]
    )
    report = json.loads(output.read_text())
    assert set(report["matmul_peak_gflops"]) == {"fp32"}
    assert report["matmul_peak_gflops"]["fp32"] > 0
    assert report["steps_timed"] == 2 and report["batch_size"] == 256
    rows = report["rows"]
    assert [(r["engine"], r["trials"]) for r in rows] == [
        ("upstream-style", 1),
        ("engine", 1),
        ("engine", 2),
    ]
    for row in rows:
        assert row["arch"] == "1*8" and row["precision"] == "fp32"
        assert row["parameters"] == Arch([(1, 8)]).resmlp_parameters
        assert row["epoch_seconds"] > 0 and row["gflops"] > 0
        assert row["seconds_per_trial_epoch"] == pytest.approx(
            row["epoch_seconds"] / row["trials"], abs=1e-4
        )
        assert row["fp32_floor_seconds_per_trial_epoch"] > 0
    assert report["device"] == "cpu"
    out = capsys.readouterr().out
    assert "Matmul peak" in out and f"Wrote {output}" in out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--trials", "1,x"], "--trials"),
        (["--trials", "0"], "--trials"),
        (["--trials", ""], "--trials"),
        (["--trials", "-6"], "--trials"),
        (["--precisions", "fp16"], "--precisions"),
        (["--archs", "4*x"], "4*x"),
        (["--archs", "0*8"], "0*8"),
        (["--archs", ","], "--archs"),
    ],
)
def test_bad_lists_are_refused_in_one_line_before_anything_runs(tmp_path, capsys, flags, named):
    output = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as raised:
        bench.main([*flags, "--output", str(output), "--steps", "1", "--device", "cpu"])
    message = str(raised.value.code)
    assert raised.value.code not in (0, None)
    assert message.startswith("bench:") and "\n" not in message
    assert named in message
    assert not output.exists()
    captured = capsys.readouterr()
    assert "Matmul peak" not in captured.out and "Traceback" not in captured.err


@pytest.mark.slow
def test_bench_compares_the_previous_and_the_flat_engine_side_by_side(tmp_path, repo_dataset):
    output = tmp_path / "engines.json"
    bench.main(
        [
            *("--compare-engines", "--archs", "1*8", "--steps", "2"),
            *("--output", str(output), "--data-dir", str(repo_dataset), "--device", "cpu"),
        ]
    )
    rows = json.loads(output.read_text())["rows"]
    assert [(r["arch"], r["engine"]) for r in rows] == [("1*8", "previous"), ("1*8", "flat")]
    for row in rows:
        assert row["trials"] == 60  # a grid batch of [1*8] on a CPU
        assert row["loop"] == pytest.approx(row["train"] + row["validate"] + row["commit"])
        assert min(row["train"], row["validate"], row["commit"], row["ops_per_step"]) > 0


def test_piped_bench_prints_plain_tables_and_a_small_rate_in_significant_figures(
    tmp_path, repo_dataset, capsys, monkeypatch
):
    monkeypatch.setattr(bench, "matmul_peak", lambda device, precision: 1000.0)
    monkeypatch.setattr(bench, "engine_epoch_seconds", lambda *args: 1000.0)  # a slow epoch
    output = tmp_path / "bench.json"
    bench.main(
        [
            *("--archs", "1*8", "--trials", "1", "--precisions", "fp32", "--no-upstream"),
            *("--output", str(output), "--data-dir", str(repo_dataset), "--device", "cpu"),
        ]
    )
    [row] = json.loads(output.read_text())["rows"]
    rate = 6 * row["parameters"] * 50_000 / 1000.0 / 1e9  # about 0.002 GFLOP/s
    assert row["gflops"] == pytest.approx(rate, rel=1e-3)
    out = capsys.readouterr().out
    assert f"1000.0000 s per trial-epoch, {rate:.3g} GFLOP/s" in out and " 0 GFLOP/s" not in out
    assert not re.search("[\u2500-\u257f]", out)  # no box-drawing characters
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("arch "))
    [table_row] = [line for line in lines if line.startswith("1*8 ")]
    assert f"{rate:.3g}" in table_row.split()
    end = header.index("GFLOP/s") + len("GFLOP/s")  # right-aligned under its header
    assert table_row[:end].endswith(f"{rate:.3g}")


def test_counting_ops_leaves_no_profiler_noise_on_stderr(capfd, mnist_small):
    """kineto's stage and start/stop lines, and its failed GPU probe without CUDA, stay out."""
    network = build_network("resmlp", Arch([(1, 8)]))
    engine = Engine(network, bench_engines.grid_trials(6), Hyperparameters(), mnist_small)
    assert bench_engines.ops_per_step(engine, mnist_small, 256) > 0
    err = capfd.readouterr().err
    assert "gpuGetDeviceCount" not in err and "USDT:" not in err and "STAGE:" not in err, err


def test_the_quiet_profiler_passes_real_errors_on(capfd):
    with bench_engines.quiet_profiler():
        os.write(2, b"USDT:2026-01-01 00:00:00 1:1 SyncActivityProfilerHandler.cpp:39] start\n")
        os.write(2, b"ERROR:2026-01-01 00:00:00 1:1 DeviceProperties.cpp:56] gpuGetDeviceCount ")
        os.write(2, b"failed with code 35\n")
        os.write(2, b"ERROR:2026-01-01 00:00:00 1:1 Other.cpp:1] a real failure\n")
        print("a warning from Python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "a real failure" in err and "a warning from Python" in err
    assert "USDT" not in err and "gpuGetDeviceCount" not in err
