import json

import boto3
import numpy as np
import pytest
from moto import mock_aws

from cloud_support import (
    BUCKET,
    PREFIX,
    REGION,
    http_response,
    isolated_aws_env,
    jsonl,
    model_tar,
)
from command_support import refusal
from psa.arch import Arch
from psa.cloud import aws, results
from psa.cloud.jobs import JobSpec
from psa.commands import sagemaker_results as results_command
from psa.config import RunConfig
from psa.modes import MODES
from psa.report.inputs import read_summary_markdown, read_trials_markdown
from schemas import loop_record, trial_record

GRID = ["--trials", "2", "--meta-loops", "3"]


def spec(stacks, modes=MODES):
    return JobSpec(Arch(stacks), modes, 2, RunConfig(meta_loops=3, seed=1234))


@pytest.fixture
def s3(monkeypatch, tmp_path):
    isolated_aws_env(monkeypatch, tmp_path, S3_BUCKET_NAME=BUCKET, S3_PREFIX=PREFIX)
    (tmp_path / "configs.txt").write_text("4*17\n2*8\n1*4\n")
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


def put_output(s3, job, files):
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{job}/output/model.tar.gz", Body=model_tar(files))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_mode_records(arch, base=90.0):
    return [
        trial_record(arch, mode, trial, base + index + trial / 10)
        for index, mode in enumerate(MODES)
        for trial in (1, 2)
    ]


RUN = "20261203T171528045018Z-3e3547"  # a provenance id, as psa.provenance makes them


def test_outputs_become_the_same_tables_sweep_writes(s3, tmp_path, capsys):
    records = all_mode_records("4*17")
    put_output(
        s3,
        spec(((4, 17),)).base_name("psa"),
        {
            "trials.jsonl": jsonl(records),
            "settings.json": json.dumps({"model": "resmlp", "lr": 0.0001}),
            "logs/4x17/none-t1.jsonl": jsonl([loop_record("4*17", "none", 1, 1, 80.0, 80.0)]),
            f"provenance/{RUN}.json": json.dumps({"id": RUN}),
            "checkpoint.safetensors": b"ignored",
        },
    )
    before = sorted(p.name for p in tmp_path.iterdir())

    assert results_command.main(["--configs", "configs.txt", *GRID, "--output-dir", "out"]) == 0

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "out"])
    out = tmp_path / "out"
    summary = read_summary_markdown(out / "psa_resmlp_summary.md")
    assert summary.attrs["archs"] == ["4*17", "2*8", "1*4"]
    none = summary[(summary["arch"] == "4*17") & (summary["mode"] == "none")].iloc[0]
    expected = [r["val_bounty"] for r in records if r["mode"] == "none"]
    assert none["mean"] == pytest.approx(np.mean(expected), abs=0.005)
    assert none["std"] == pytest.approx(np.std(expected), abs=0.005)
    assert none["n"] == 2
    missing = summary[summary["arch"] == "2*8"]
    assert set(missing["status"]) == {results.NO_JOB_FOUND}
    trials = read_trials_markdown(out / "psa_resmlp_trials.md")
    assert len(trials[trials["arch"] == "4*17"]) == 12
    assert trials.attrs["paired"] is True
    assert read_jsonl(out / "trials.jsonl") == records
    assert (out / "logs" / "4x17" / "none-t1.jsonl").is_file()
    assert json.loads((out / "provenance" / f"{RUN}.json").read_text()) == {"id": RUN}
    assert json.loads((out / "settings.json").read_text())["lr"] == 0.0001
    assert not (out / "checkpoint.safetensors").exists()
    captured = capsys.readouterr()
    assert "12 trial record(s)" in captured.out
    assert "sagemaker-results-parser: 3/3 jobs read" in captured.err.splitlines()


def test_the_newest_attempt_with_an_output_wins(s3, tmp_path):
    base = spec(((4, 17),)).base_name("psa")
    put_output(s3, base, {"trials.jsonl": jsonl(all_mode_records("4*17", 50.0))})
    put_output(s3, f"{base}-r1", {"trials.jsonl": jsonl(all_mode_records("4*17", 90.0))})
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{base}-r2/output/failure", Body=b"oops")
    results_command.main(["--arch", "[4*17]", *GRID, "--output-dir", "out"])
    records = read_jsonl(tmp_path / "out/trials.jsonl")
    assert min(record["val_bounty"] for record in records) > 89


@pytest.mark.parametrize(
    ("files", "token"),
    [
        (None, results.FAILED_OR_INCOMPLETE),
        ({"psa_resmlp_trials.md": "# nothing else"}, results.RESULTS_NOT_FOUND),
        ({"trials.jsonl": ""}, results.EMPTY_RESULTS),
        # The store's message, as for a damaged trials.jsonl anywhere.
        (
            {"trials.jsonl": "{not json\n"},
            "ERROR: trials.jsonl:1: not a JSON object "
            "(Expecting property name enclosed in double quotes)",
        ),
    ],
)
def test_a_job_without_usable_results_gets_an_error_token(s3, tmp_path, files, token):
    base = spec(((4, 17),)).base_name("psa")
    if files is None:
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{base}/output/failure", Body=b"x")
    else:
        put_output(s3, base, files)
    results_command.main(["--arch", "[4*17]", *GRID, "--output-dir", "out"])
    summary = read_summary_markdown(tmp_path / "out/psa_resmlp_summary.md")
    assert set(summary["status"]) == {token}


def test_a_corrupt_archive_spoils_only_its_own_job(s3, tmp_path):
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{PREFIX}/{spec(((4, 17),)).base_name('psa')}/output/model.tar.gz",
        Body=b"not a tarball",
    )
    put_output(
        s3, spec(((2, 8),)).base_name("psa"), {"trials.jsonl": jsonl(all_mode_records("2*8"))}
    )
    results_command.main(["--configs", "configs.txt", *GRID, "--output-dir", "out"])
    summary = read_summary_markdown(tmp_path / "out/psa_resmlp_summary.md")
    by_arch = summary.groupby("arch")["status"].agg(set)
    assert all(token.startswith("ERROR: unreadable model.tar.gz") for token in by_arch["4*17"])
    assert by_arch["2*8"] == {"ok"}


def test_per_mode_jobs_are_collected_mode_by_mode(s3, tmp_path):
    for mode in ("none", "hidden"):
        job = spec(((1, 4),), (mode,)).base_name("psa")
        put_output(s3, job, {"trials.jsonl": jsonl([trial_record("1*4", mode, 1, 60.0)])})
    results_command.main(["--arch", "[1*4]", *GRID, "--job-per", "mode", "--output-dir", "out"])
    summary = read_summary_markdown(tmp_path / "out/psa_resmlp_summary.md")
    status = dict(zip(summary["mode"], summary["status"], strict=True))
    assert status["none"] == status["hidden"] == "ok"
    assert status["full"] == results.NO_JOB_FOUND


def test_upstream_results_txt_outputs_are_accepted(s3, tmp_path):
    for mode, lines in (("none", "97.10\n97.30\n"), ("full", "96.00\n")):
        put_output(s3, f"psa-4x17-{mode}-2025-01-01-00-00-00-000", {"results.txt": lines})
    put_output(s3, "psa-4x17-full-2024-01-01-00-00-00-000", {"results.txt": "10.00\n"})
    put_output(s3, "psa-4x170-none-2025-01-01-00-00-00-000", {"results.txt": "11.00\n"})
    results_command.main(["--arch", "[4*17]", "--naming", "upstream", "--output-dir", "out"])
    records = read_jsonl(tmp_path / "out/trials.jsonl")
    assert [(r["mode"], r["trial"], r["val_bounty"]) for r in records] == [
        ("none", 1, 97.1),
        ("none", 2, 97.3),
        ("full", 1, 96.0),
    ]
    assert set(records[0]) == {"arch", "model", "mode", "trial", "val_bounty"}
    summary = read_summary_markdown(tmp_path / "out/psa_resmlp_summary.md")
    assert summary[summary["mode"] == "decay"]["status"].item() == results.NO_JOB_FOUND


def test_missing_settings_stop_before_anything_is_written(monkeypatch, tmp_path, capsys):
    isolated_aws_env(monkeypatch, tmp_path)
    argv = ["--arch", "[4*17]", "--output-dir", "out"]
    assert "S3_BUCKET_NAME" in refusal(capsys, "sagemaker-results-parser", argv)[1]
    assert not (tmp_path / "out").exists()


def test_a_launched_job_without_output_is_incomplete_not_missing(s3, tmp_path):
    job = spec(((4, 17),)).base_name("psa")
    boto3.client("sagemaker", region_name=REGION).create_training_job(
        TrainingJobName=job,
        RoleArn="arn:aws:iam::123456789012:role/r",
        AlgorithmSpecification={"TrainingImage": "image", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/{PREFIX}"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    results_command.main(["--configs", "configs.txt", *GRID, "--output-dir", "out"])
    summary = read_summary_markdown(tmp_path / "out/psa_resmlp_summary.md")
    status = summary.groupby("arch")["status"].agg(set)
    assert status["4*17"] == {results.FAILED_OR_INCOMPLETE}
    assert status["2*8"] == {results.NO_JOB_FOUND}
    assert (tmp_path / "out/trials.jsonl").read_text() == ""
    assert not (tmp_path / "out/settings.json").exists()
    assert not (tmp_path / "out/logs").exists()


def test_a_download_cut_short_is_fetched_again(s3, tmp_path, monkeypatch):
    records = all_mode_records("4*17")
    archive = model_tar({"trials.jsonl": jsonl(records)})
    key = f"{PREFIX}/{spec(((4, 17),)).base_name('psa')}/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=archive)
    cut = []

    def cut_first_read(request, **_):
        if request.method == "GET" and request.url.split("?")[0].endswith(key) and not cut:
            cut.append(request.url)
            headers = {"Content-Length": str(len(archive))}
            return http_response(request.url, 200, headers, archive[: len(archive) // 2])
        return None

    def client_with_a_bad_line(service, settings):
        made = aws.client(service, settings)
        made.meta.events.register_first("before-send", cut_first_read)
        return made

    monkeypatch.setattr(results_command, "client", client_with_a_bad_line)
    assert results_command.main(["--arch", "[4*17]", *GRID, "--output-dir", "out"]) == 0
    assert len(cut) == 1
    assert read_jsonl(tmp_path / "out/trials.jsonl") == records
