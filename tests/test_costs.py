"""The cost model of a sweep batch, and its calibration by a device's own check-device figures."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from psa.arch import parse_key
from psa.costs import CPU_MODEL, device_costs_path, model_for
from psa.model import build_network


def network(key: str):
    return build_network("resmlp", parse_key(key))


def test_deep_narrow_networks_cost_their_layers_not_their_arithmetic():
    deep, wide = network("[2048*1]"), network("[1*2048]")
    assert deep.parameter_count() < wide.parameter_count() / 1000
    dispatch, arithmetic = CPU_MODEL.loop_parts(deep, 12)
    assert dispatch > 2 * arithmetic
    dispatch, arithmetic = CPU_MODEL.loop_parts(wide, 1)
    assert arithmetic > 3 * dispatch


def test_a_loop_costs_more_with_more_trials_and_more_layers():
    assert CPU_MODEL.loop_seconds(network("[4*17]"), 60) > CPU_MODEL.loop_seconds(
        network("[4*17]"), 6
    )
    assert CPU_MODEL.loop_seconds(network("[64*4]"), 60) > CPU_MODEL.loop_seconds(
        network("[8*4]"), 60
    )


def test_calibration_recovers_a_devices_dispatch_and_arithmetic_scales():
    device = replace(CPU_MODEL, dispatch_scale=0.05, arithmetic_scale=0.01)
    timings = [
        {"network": network(key), "trials": k, "seconds": device.loop_seconds(network(key), k)}
        for key, k in (("[1*1024]", 60), ("[64*4]", 60), ("[4*17]", 60))
    ]
    fitted = CPU_MODEL.calibrated(timings, "test")
    assert fitted.dispatch_scale == pytest.approx(0.05)
    assert fitted.arithmetic_scale == pytest.approx(0.01)
    assert fitted.source == "test"


def test_one_timing_scales_both_kinds_alike():
    timing = {"network": network("[4*17]"), "trials": 60, "seconds": 10.0}
    fitted = CPU_MODEL.calibrated([timing], "test")
    assert fitted.dispatch_scale == pytest.approx(fitted.arithmetic_scale)
    assert fitted.loop_seconds(network("[4*17]"), 60) == pytest.approx(10.0)


def stored_figures(directory, model: str, seconds: float) -> None:
    report = {
        "environment": {"device_model": model},
        "timings": [{"arch": "[4*17]", "trials": 60, "seconds_per_loop": seconds}],
    }
    path = device_costs_path(model, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def test_a_device_with_stored_figures_is_planned_by_them(tmp_path):
    stored_figures(tmp_path, "Some GPU 80GB", 2.0)
    model = model_for("Some GPU 80GB", tmp_path)
    assert model.loop_seconds(network("[4*17]"), 60) == pytest.approx(2.0)
    assert str(device_costs_path("Some GPU 80GB", tmp_path)) in model.source


def test_without_figures_of_this_device_the_cpu_model_plans(tmp_path):
    assert model_for("Some GPU 80GB", tmp_path) is CPU_MODEL
    stored_figures(tmp_path, "Some GPU 80GB", 2.0)
    path = device_costs_path("Some GPU 80GB", tmp_path)
    report = json.loads(path.read_text())
    report["environment"]["device_model"] = "another GPU"
    path.write_text(json.dumps(report))
    assert model_for("Some GPU 80GB", tmp_path) is CPU_MODEL
    path.write_text("{not json")
    assert model_for("Some GPU 80GB", tmp_path) is CPU_MODEL


def test_a_sweep_on_a_device_with_stored_figures_plans_by_them(tmp_path, monkeypatch, capsys):
    import torch

    from psa import cli
    from psa.provenance import device_model

    monkeypatch.chdir(tmp_path)
    argv = ["--arch", "[4*17]", "--trials", "10", "--meta-loops", "1", "--seed", "1"]
    argv += ["--device", "cpu", "--results-dir", "r", "--dry-run", "--train-decay"]  # K=60

    def plan_line() -> str:
        assert cli.run("sweep", argv) == 0
        return next(line for line in capsys.readouterr().out.splitlines() if "Batch plan" in line)

    assert plan_line().endswith("1 batch, ~7s")  # the CPU model: 6.8 s a loop of K=60
    stored_figures(tmp_path / "results" / "devices", device_model(torch.device("cpu")), 1000.0)
    assert plan_line().endswith("1 batch, ~17min")


def test_a_dry_run_gives_one_estimate_by_the_figures_it_names(tmp_path, monkeypatch, capsys):
    """Header, batch lines and total of a dry run agree, all by this device's stored figures,
    and its last line names them (where, when measured, how far repeated timings lay apart)."""
    import torch

    from psa import cli
    from psa.provenance import device_model

    monkeypatch.chdir(tmp_path)
    stored_figures(tmp_path / "results" / "devices", device_model(torch.device("cpu")), 1000.0)
    argv = ["--arch", "[4*17]", "--trials", "10", "--meta-loops", "1", "--seed", "1"]
    argv += ["--device", "cpu", "--results-dir", "r", "--dry-run", "--train-decay"]
    assert cli.run("sweep", argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("Batch plan"))
    [batch] = [line for line in lines if " K=" in line]
    total = next(line for line in lines if line.startswith("Estimated time:"))
    assert header.endswith("~17min") and batch.endswith("~17min")
    assert total.startswith("Estimated time: ~17min in one process, by check-device figures of")
    assert "measured " in total and "repeated timings within" in total


def test_a_sweep_runs_its_costliest_batches_first(tmp_path, monkeypatch, capsys):
    from psa import cli

    monkeypatch.chdir(tmp_path)
    argv = ["--arch", "[2*4]", "--arch", "[1*64]", "--arch", "[3*3]", "--trials", "1"]
    argv += ["--meta-loops", "1", "--seed", "1", "--device", "cpu", "--results-dir", "r"]
    assert cli.run("sweep", [*argv, "--dry-run"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if " K=" in line]
    costs = {key: CPU_MODEL.loop_seconds(network(key), 6) for key in listed}
    assert listed == sorted(costs, key=costs.get, reverse=True) and listed[0] == "[1*64]"
