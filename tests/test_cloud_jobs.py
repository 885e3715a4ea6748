import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psa.arch import Arch
from psa.arguments import mode_list
from psa.cloud.jobs import NAME_LIMIT, JobSpec, attempt_name, attempt_of
from psa.commands.sagemaker_flags import add_grid_flags, jobs_of
from psa.config import Hyperparameters, RunConfig
from psa.modes import MODES

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def grid(argv):
    parser = argparse.ArgumentParser()
    add_grid_flags(parser)
    return parser.parse_args(argv)


def planned(argv):
    """The jobs sagemaker-runner plans from the grid flags ``argv``."""
    parser = argparse.ArgumentParser()
    add_grid_flags(parser)
    return jobs_of(parser, parser.parse_args(argv))


JOB_FIELDS = ("arch", "modes", "trials")
CONFIG_FIELDS = ("model", "meta_loops", "seed")


def spec(**changes):
    """The paper's job of [4*17], with ``changes`` to the job, its config or hyperparameters."""
    job = {key: value for key, value in changes.items() if key in JOB_FIELDS}
    config = {key: value for key, value in changes.items() if key in CONFIG_FIELDS}
    hyper = {k: v for k, v in changes.items() if k not in JOB_FIELDS + CONFIG_FIELDS}
    base = JobSpec(Arch([(4, 17)]), MODES, 10, RunConfig(meta_loops=100, seed=1234))
    config = replace(base.config, hyper=replace(base.config.hyper, **hyper), **config)
    return replace(base, config=config, **job)


def test_job_names_are_deterministic_and_readable():
    # The same job named in another interpreter, with another string hash seed, gets this name.
    code = (
        "from psa.arch import Arch; from psa.cloud.jobs import JobSpec; "
        "from psa.config import RunConfig; from psa.modes import MODES; "
        "print(JobSpec(Arch([(4, 17)]), MODES, 10, RunConfig(meta_loops=100, seed=1234))"
        ".base_name('psa'))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    elsewhere = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert elsewhere.stdout.strip() == spec().base_name("psa")
    assert re.fullmatch(r"psa-4x17-all-[0-9a-f]{8}", spec().base_name("psa"))
    assert spec(modes=("hidden",)).base_name("psa").startswith("psa-4x17-hidden-")
    assert spec(modes=("none", "full")).base_name("psa").startswith("psa-4x17-mix-")


@pytest.mark.parametrize(
    "change",
    [
        {"trials": 3},
        {"meta_loops": 5},
        {"model": "mlp"},
        {"lr": 1e-3},
        {"batch_size": 128},
        {"weight_decay": 0.0},
        {"dropout": 0.2},
        {"seed": 7},
        {"precision": "bf16"},
        {"hidden_targets": "corrected"},
        {"full_sampling": "neuron"},
        {"modes": ("none", "decay")},
    ],
)
def test_any_setting_that_changes_results_changes_the_name(change):
    assert spec(**change).base_name("psa") != spec().base_name("psa")


def test_jobs_at_upstreams_method_keep_the_names_they_had_before_the_method_flags():
    identity = {
        "arch": "4*17",
        "modes": list(MODES),
        "trials": 10,
        "meta_loops": 100,
        "model": "resmlp",
        "lr": 1e-4,
        "batch_size": 256,
        "weight_decay": 1e-4,
        "dropout": 0.1,
        "seed": 1234,
        "precision": "fp32",
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    assert spec().base_name("psa") == f"psa-4x17-all-{digest}"


def test_the_grid_takes_every_method_flag_and_the_job_gets_them():
    [job] = planned(
        [
            *("--arch", "[4*17]", "--hidden-targets", "corrected"),
            *("--full-sampling", "neuron", "--precision", "bf16", "--dropout", "0.3"),
        ]
    )
    assert job.config.hyper == Hyperparameters(
        dropout=0.3, precision="bf16", hidden_targets="corrected", full_sampling="neuron"
    )
    arguments = job.entry_arguments()
    assert (arguments["hidden-targets"], arguments["full-sampling"]) == ("corrected", "neuron")
    assert (arguments["precision"], arguments["dropout"]) == ("bf16", "0.3")


@pytest.mark.parametrize(
    "flags",
    [
        ("--dropout", "1.5"),
        ("--dropout", "-0.1"),
        ("--lr", "nan"),
        ("--batch-size", "0"),
        ("--hidden-targets", "all"),
        ("--precision", "fp16"),
    ],
)
def test_a_setting_out_of_range_is_refused_by_the_grid_flags(flags, capsys):
    with pytest.raises(SystemExit):
        grid(["--arch", "[4*17]", *flags])
    assert flags[0] in capsys.readouterr().err


stacks = st.lists(st.tuples(st.integers(1, 800), st.integers(1, 99)), min_size=1, max_size=12).map(
    Arch
)


@given(
    stacks=stacks,
    modes=st.sampled_from([MODES, ("output",), ("none", "dropout")]),
    prefix=st.from_regex(r"[a-z0-9][a-z0-9-]{0,9}", fullmatch=True),
    attempt=st.integers(0, 99),
)
def test_every_name_is_a_valid_sagemaker_job_name(stacks, modes, prefix, attempt):
    name = attempt_name(spec(arch=stacks, modes=modes).base_name(prefix), attempt)
    assert len(name) <= NAME_LIMIT
    assert SAGEMAKER_NAME.match(name)


def test_long_architectures_keep_distinct_names():
    long_a = tuple((1, width) for width in range(100, 140))
    long_b = long_a[:-1] + ((1, 999),)
    assert spec(arch=Arch(long_a)).base_name("psa") != spec(arch=Arch(long_b)).base_name("psa")


def test_attempts_are_recognised_only_for_their_own_base():
    base = "psa-4x17-all-0123abcd"
    assert attempt_of(base, base) == 0
    assert attempt_of(attempt_name(base, 3), base) == 3
    assert attempt_of(base + "-r", base) is None
    assert attempt_of("psa-4x17-all-0123abce", base) is None


def test_a_configs_file_gives_one_job_per_arch_or_per_arch_and_mode(tmp_path):
    configs = tmp_path / "configs.txt"
    configs.write_text("# two archs\n4*17\n2*8\n")
    per_arch = planned(["--configs", str(configs)])
    assert [job.arch.key for job in per_arch] == ["4*17", "2*8"]
    assert all(job.modes == MODES for job in per_arch)
    per_mode = planned(["--configs", str(configs), "--job-per", "mode"])
    assert len(per_mode) == 12
    assert [job.modes for job in per_mode[:6]] == [(mode,) for mode in MODES]


def test_arch_flag_replaces_the_configs_file():
    jobs = planned(["--arch", "[2*8, 3*8]", "--modes", "full,none"])
    assert len(jobs) == 1
    assert jobs[0].arch.key == "5*8"
    assert jobs[0].modes == ("none", "full")
    assert jobs[0].entry_arguments()["arch"] == Arch([(5, 8)]).flag


def test_the_default_configs_file_is_the_reproduction_grid_wherever_it_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(planned([])) == 98


def test_unknown_modes_are_rejected():
    with pytest.raises(argparse.ArgumentTypeError, match="unknown mode"):
        mode_list("none,sideways")
    with pytest.raises(SystemExit):
        grid(["--modes", ""])
