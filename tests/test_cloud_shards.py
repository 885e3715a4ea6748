"""sagemaker-runner --shards N: one job per shard of the batched grid (sweep --shard i/N in the
job), and sagemaker-results-parser's output of those jobs merged with local shards."""

from __future__ import annotations

import json
from dataclasses import asdict

import boto3
import pytest
from moto import mock_aws

from cloud_support import (
    BUCKET,
    PREFIX,
    REGION,
    ROLE,
    isolated_aws_env,
    jsonl,
    model_tar,
    stand_in_dataset,
)
from psa.arch import Arch
from psa.commands import merge_results, sagemaker_results, sagemaker_runner
from psa.commands import sagemaker_job as entry
from psa.commands.sagemaker_flags import jobs_of
from psa.config import RunConfig
from psa.sweep import Shard
from schemas import trial_record

CONFIGS = "4*17\n2*8\n1*4\n"
GRID = ["--configs", "configs.txt", "--trials", "2", "--meta-loops", "3", "--seed", "7"]
SETTINGS = RunConfig("resmlp", 3, 7)


@pytest.fixture
def aws(monkeypatch, tmp_path):
    isolated_aws_env(
        monkeypatch, tmp_path, AWS_SAGEMAKER_ROLE=ROLE, S3_BUCKET_NAME=BUCKET, S3_PREFIX=PREFIX
    )
    (tmp_path / "configs.txt").write_text(CONFIGS)
    stand_in_dataset(monkeypatch, tmp_path)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield boto3.client("sagemaker", region_name=REGION)


def planned(argv):
    """The jobs sagemaker-results-parser reads for the grid flags ``argv``."""
    parser = sagemaker_results.build_parser()
    return jobs_of(parser, parser.parse_args(argv))


def launched(sagemaker) -> dict[str, dict]:
    names = [s["TrainingJobName"] for s in sagemaker.list_training_jobs()["TrainingJobSummaries"]]
    return {
        name: {
            key: json.loads(value)
            for key, value in sagemaker.describe_training_job(TrainingJobName=name)[
                "HyperParameters"
            ].items()
        }
        for name in sorted(names)
    }


def test_the_runner_launches_one_job_per_shard_of_the_whole_grid(aws, capsys):
    assert sagemaker_runner.main([*GRID, "--shards", "2"]) == 0
    jobs = launched(aws)
    assert [name.split("-")[1] for name in jobs] == ["shard1of2", "shard2of2"]
    for index, hyperparameters in enumerate(jobs.values(), start=1):
        assert hyperparameters["archs"] == "4*17;2*8;1*4"
        assert hyperparameters["shard"] == f"{index}/2"
        assert "arch" not in hyperparameters
    assert "launched 2" in capsys.readouterr().out
    # A rerun finds its own shard jobs; per-architecture jobs keep their names.
    assert sagemaker_runner.main([*GRID, "--shards", "2"]) == 0
    assert len(launched(aws)) == 2
    assert "skipped 2" in capsys.readouterr().out


def test_shards_and_job_per_mode_are_refused_together(aws, capsys):
    with pytest.raises(SystemExit) as raised:
        sagemaker_runner.main([*GRID, "--shards", "2", "--job-per", "mode"])
    assert raised.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_shard_job_runs_sweep_shard_over_the_grid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs.txt").write_text(CONFIGS)
    spec = planned([*GRID, "--shards", "3"])[1]
    argv = []
    for key, value in spec.entry_arguments().items():
        argv += [f"--{key}", value]
    args = entry.parse_args(argv)
    request = entry.sweep_request(args, tmp_path / "out", None)
    assert request.archs == (Arch([(4, 17)]), Arch([(2, 8)]), Arch([(1, 4)]))
    assert request.shard == Shard(2, 3)
    assert request.config.seed == 7


def sweep_record(arch: str, mode: str, trial: int, bounty: float) -> dict:
    return trial_record(
        arch,
        mode,
        trial,
        bounty,
        hyperparameters=asdict(SETTINGS.hyper),
        meta_loops=3,
        seeds={"base": 7, "init": 1, "data": 2, "ablation": 3},
    )


def test_shard_jobs_collected_merge_with_a_local_shard(aws, tmp_path):
    specs = planned([*GRID, "--shards", "2"])
    outputs = {
        specs[0]: [sweep_record("4*17", "none", 1, 90.0), sweep_record("1*4", "none", 1, 60.0)],
        specs[1]: [sweep_record("4*17", "none", 2, 91.0)],
    }
    s3 = boto3.client("s3", region_name=REGION)
    for spec, records in outputs.items():
        files = {"trials.jsonl": jsonl(records), "settings.json": json.dumps(SETTINGS.flat())}
        key = f"{PREFIX}/{spec.base_name('psa')}/output/model.tar.gz"
        s3.put_object(Bucket=BUCKET, Key=key, Body=model_tar(files))
    assert sagemaker_results.main([*GRID, "--shards", "2", "--output-dir", "cloud"]) == 0
    cloud = tmp_path / "cloud"
    assert len((cloud / "trials.jsonl").read_text().splitlines()) == 3

    local = tmp_path / "local"
    local.mkdir()
    (local / "settings.json").write_text(json.dumps(SETTINGS.flat()))
    mine = [sweep_record("2*8", "full", 1, 70.0), sweep_record("4*17", "none", 2, 91.0)]
    (local / "trials.jsonl").write_text(jsonl(mine))
    before = {p: p.read_bytes() for d in (cloud, local) for p in d.rglob("*") if p.is_file()}
    merge_results.main(["--results-dir", str(tmp_path / "all"), str(cloud), str(local)])
    merged = [json.loads(line) for line in (tmp_path / "all/trials.jsonl").read_text().splitlines()]
    assert sorted((r["arch"], r["mode"], r["trial"]) for r in merged) == [
        ("1*4", "none", 1),
        ("2*8", "full", 1),
        ("4*17", "none", 1),
        ("4*17", "none", 2),
    ]
    assert {p: p.read_bytes() for p in before} == before
