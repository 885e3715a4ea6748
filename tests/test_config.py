"""The run configuration: one set of flags and defaults for every command, its settings file,
and validation before anything runs (a SageMaker job included)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psa.cloud.jobs import SEED
from psa.commands import bench, sweep, train
from psa.commands import sagemaker_job as entry
from psa.commands import sagemaker_runner as runner
from psa.config import (
    FULL_SAMPLING,
    HIDDEN_TARGETS,
    MODELS,
    PRECISIONS,
    ConfigError,
    Hyperparameters,
    RunConfig,
)

ROOT = Path(__file__).resolve().parents[1]


configs = st.builds(
    RunConfig,
    model=st.sampled_from(MODELS),
    meta_loops=st.integers(1, 10_000),
    seed=st.integers(0, 2**63 - 1),
    hyper=st.builds(
        Hyperparameters,
        lr=st.floats(0, 1, allow_subnormal=False),
        batch_size=st.integers(1, 60_000),
        weight_decay=st.floats(0, 1, allow_subnormal=False),
        dropout=st.floats(0, 1, exclude_max=True, allow_subnormal=False),
        precision=st.sampled_from(PRECISIONS),
        hidden_targets=st.sampled_from(HIDDEN_TARGETS),
        full_sampling=st.sampled_from(FULL_SAMPLING),
    ),
)


@pytest.mark.parametrize(
    ("parse", "expected"),
    [
        (lambda: train.build_parser().parse_args([]), RunConfig()),
        (lambda: sweep.build_parser().parse_args([]), RunConfig()),
        (lambda: runner.build_parser().parse_args([]), RunConfig(seed=SEED)),
        (lambda: entry.parse_args(["--arch", "[2*8]", "--trials", "1"]), RunConfig()),
        (lambda: bench.build_parser().parse_args([]), RunConfig()),
    ],
    ids=["train", "sweep", "sagemaker-runner", "job entry", "bench"],
)
def test_every_command_takes_the_defaults_of_the_one_run_configuration(parse, expected):
    assert RunConfig.from_args(parse()) == expected


@given(configs)
def test_the_flags_of_a_configuration_parse_back_to_it(config):
    parser = argparse.ArgumentParser()
    RunConfig.add_flags(parser)
    argv = [part for name, value in config.flag_values().items() for part in (f"--{name}", value)]
    assert RunConfig.from_args(parser.parse_args(argv)) == config


@given(configs)
def test_a_configuration_round_trips_through_its_settings_file_form(config):
    assert RunConfig.from_flat(json.loads(json.dumps(config.flat()))) == config


def test_the_shipped_results_settings_file_is_accepted():
    stored = json.loads((ROOT / "results" / "settings.json").read_text())
    config = RunConfig.from_flat(stored)
    assert config == RunConfig("resmlp", 10, 2026)
    assert config.flat() == stored


def test_a_settings_file_written_before_the_method_flags_holds_upstreams_method():
    stored = RunConfig("resmlp", 10, 2026).flat()
    del stored["hidden_targets"], stored["full_sampling"]
    config = RunConfig.from_flat(stored)
    assert (config.hyper.hidden_targets, config.hyper.full_sampling) == ("upstream", "layer")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dropout": 1.5}, "--dropout 1.5 must be in [0, 1)"),
        ({"lr": -1.0}, "--lr -1.0 must not be negative"),
        ({"batch_size": 0}, "--batch-size 0 must be at least 1"),
        ({"batch_size": "256"}, "--batch-size '256' is not a whole number"),
        ({"precision": "fp16"}, "--precision 'fp16' is not one of fp32, bf16"),
        ({"model": "cnn"}, "--model 'cnn' is not one of resmlp, mlp"),
        ({"seed": -3}, "--seed -3 must be between 0 and 2**63 - 1"),
    ],
)
def test_a_settings_file_with_a_bad_value_is_refused_naming_the_flag(change, message):
    stored = {**RunConfig("resmlp", 10, 2026).flat(), **change}
    with pytest.raises(ConfigError) as refused:
        RunConfig.from_flat(stored)
    assert str(refused.value) == message


def test_a_settings_file_without_a_required_setting_is_refused_naming_it():
    stored = RunConfig("resmlp", 10, 2026).flat()
    del stored["lr"], stored["seed"]
    with pytest.raises(ConfigError, match="the settings lack lr, seed"):
        RunConfig.from_flat(stored)


def test_differences_name_each_setting_that_differs():
    here = RunConfig("resmlp", 10, 2026)
    asked = replace(here, seed=7, hyper=replace(here.hyper, hidden_targets="corrected"))
    assert here.differences(asked) == [
        "seed 2026 here vs 7 asked",
        "hidden_targets 'upstream' here vs 'corrected' asked",
    ]
    assert here.differences(here) == []


def test_hyperparameters_outside_their_range_cannot_be_built():
    with pytest.raises(ConfigError, match="--dropout"):
        Hyperparameters(dropout=1.5)
    with pytest.raises(ConfigError, match="--lr"):
        Hyperparameters(lr=float("nan"))


@pytest.mark.parametrize(
    "flags",
    [("--dropout", "1.5"), ("--hidden-targets", "all"), ("--full-sampling", "row")],
)
def test_the_runner_refuses_a_bad_method_setting_before_anything_is_launched(
    flags, capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        runner.main(["--arch", "[2*8]", "--trials", "1", "--dry-run", *flags])
    assert refused.value.code == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"sagemaker-runner: argument {flags[0]}: ")
    assert captured.out == ""


def test_the_runner_passes_every_method_flag_to_its_jobs(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    flags = ["--hidden-targets", "corrected", "--full-sampling", "neuron", "--precision", "bf16"]
    assert runner.main(["--arch", "[2*8]", "--trials", "1", "--dry-run", *flags]) == 0
    [request] = json.loads(capsys.readouterr().out)
    sent = {key: json.loads(value) for key, value in request["HyperParameters"].items()}
    assert (sent["hidden-targets"], sent["full-sampling"]) == ("corrected", "neuron")
    assert sent["precision"] == "bf16"
    argv = [
        part
        for key, value in sent.items()
        if not key.startswith("sagemaker_")
        for part in (f"--{key}", str(value))
    ]
    config = RunConfig.from_args(entry.parse_args(argv))
    assert config == RunConfig(
        seed=SEED,
        hyper=Hyperparameters(
            precision="bf16", hidden_targets="corrected", full_sampling="neuron"
        ),
    )
