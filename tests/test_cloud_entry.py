import io
import json
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from cloud_support import jsonl
from psa.arch import Arch
from psa.cloud.aws_setup import AwsSetup
from psa.cloud.jobs import JobSpec
from psa.cloud.runner import Decision, training_request
from psa.cloud.sourcedir import default_source_dir
from psa.commands import sagemaker_job as entry
from psa.config import Hyperparameters, RunConfig
from psa.sweep import SweepRequest
from schemas import loop_record, trial_record


def toolkit_argv(hyperparameters: dict[str, str]) -> list[str]:
    """What the PyTorch training image passes to train.py: json-decoded, sagemaker_* dropped."""
    argv = []
    for key, encoded in hyperparameters.items():
        if key.startswith("sagemaker_"):
            continue
        argv += [f"--{key}", str(json.loads(encoded))]
    return argv


CONFIG = RunConfig("resmlp", 5, 99, Hyperparameters(1e-3, 64, 1e-4, 0.2, "fp32"))


def job_request(modes=("none", "full"), config=CONFIG) -> dict:
    spec = JobSpec(Arch([(2, 8)]), modes, 3, config)
    settings = AwsSetup(role="arn:aws:iam::1:role/r", region="us-east-1", bucket="b")
    decision = Decision(spec, "psa-x", "psa-x", True, None)
    return training_request(decision, settings, "s3://b/src.tar.gz", "s3://b/data/")


def test_the_runners_hyperparameters_reach_sweep_unchanged(tmp_path):
    args = entry.parse_args(toolkit_argv(job_request()["HyperParameters"]))
    request = entry.sweep_request(args, tmp_path / "out", tmp_path / "data")
    assert request == SweepRequest(
        archs=(Arch([(2, 8)]),),
        modes=("none", "full"),
        trials=3,
        config=CONFIG,
        results_dir=tmp_path / "out",
        data_dir=tmp_path / "data",
    )


@pytest.mark.parametrize(
    "method",
    [
        {"hidden_targets": "corrected"},
        {"full_sampling": "neuron"},
        {"precision": "bf16"},
        {"hidden_targets": "corrected", "full_sampling": "neuron", "precision": "bf16"},
    ],
)
def test_every_method_flag_reaches_the_jobs_sweep(tmp_path, method):
    config = replace(CONFIG, hyper=replace(CONFIG.hyper, **method))
    args = entry.parse_args(toolkit_argv(job_request(config=config)["HyperParameters"]))
    assert entry.sweep_request(args, tmp_path, None).config == config


def test_without_a_channel_sweep_gets_no_data_dir(tmp_path):
    args = entry.parse_args(toolkit_argv(job_request()["HyperParameters"]))
    assert entry.sweep_request(args, tmp_path, None).data_dir is None


def test_the_sweep_writes_into_checkpoints_when_the_job_has_them(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    environ = {"SM_MODEL_DIR": str(tmp_path / "model"), "SM_CHANNEL_TRAINING": "/in/training"}
    without = entry.job_paths(environ, checkpoint_dir=checkpoints)
    assert without.work_dir == tmp_path / "model"
    checkpoints.mkdir()
    within = entry.job_paths(environ, checkpoint_dir=checkpoints)
    assert within.work_dir == checkpoints / "sweep"
    assert within.model_dir == tmp_path / "model"
    assert str(within.data_channel) == "/in/training"
    assert entry.job_paths({}, checkpoint_dir=checkpoints).data_channel is None


def test_results_txt_holds_one_bounty_per_line_in_trial_order(tmp_path):
    records = [
        trial_record("2*8", "full", 2, 91.234),
        trial_record("2*8", "full", 1, 90.0),
        trial_record("2*8", "none", 1, 88.555),
    ]
    (tmp_path / "trials.jsonl").write_text(jsonl(records))
    [single] = entry.write_results_txt(tmp_path, ("full",))
    assert single.name == "results.txt"
    assert single.read_text() == "90.00\n91.23\n"
    written = entry.write_results_txt(tmp_path, ("none", "full"))
    assert [path.name for path in written] == ["results-none.txt", "results-full.txt"]
    assert written[0].read_text() == "88.56\n"


def test_the_relay_echoes_each_complete_line_once(tmp_path):
    out = io.StringIO()
    relay = entry.RecordRelay(tmp_path, out)
    log = tmp_path / "logs" / "2x8" / "full-t1.jsonl"
    log.parent.mkdir(parents=True)
    first = json.dumps(loop_record("2*8", "full", 1, 1, 50.0, 50.0))
    log.write_text(first + "\n" + '{"partial": ')
    assert relay.flush() == 1
    assert relay.flush() == 0
    with log.open("a") as handle:
        handle.write("true}\n")
    (tmp_path / "trials.jsonl").write_text(jsonl([trial_record("2*8", "full", 1, 50.0)]))
    assert relay.flush() == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == first
    assert lines[1] == '{"partial": true}'
    assert json.loads(lines[2])["val_bounty"] == 50.0
    log.write_text(first + "\n")  # a resumed sweep rewrote the file
    assert relay.flush() == 1


@pytest.fixture
def fake_sweep(monkeypatch):
    """A stand-in for the sweep a job runs that writes what a finished sweep leaves behind."""
    calls = []

    def run_reported(request, printer=None):
        calls.append(request)
        out, modes = request.results_dir, request.modes
        records = [trial_record("2*8", mode, t, 90.0 + t) for mode in modes for t in (1, 2)]
        (out / "trials.jsonl").write_text(jsonl(records))
        (out / "logs" / "2x8").mkdir(parents=True)
        (out / "logs" / "2x8" / "none-t1.jsonl").write_text(
            jsonl([loop_record("2*8", "none", 1, 1, 80.0, 80.0)])
        )

    monkeypatch.setattr(entry, "run_reported", run_reported)
    return calls


def test_a_job_publishes_the_sweep_results_and_results_txt(
    tmp_path, monkeypatch, fake_sweep, capsys
):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    channel = tmp_path / "channel"
    channel.mkdir()
    (channel / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    monkeypatch.setattr(entry, "CHECKPOINT_DIR", checkpoints)
    monkeypatch.setattr(entry.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    environ = {"SM_MODEL_DIR": str(tmp_path / "model"), "SM_CHANNEL_TRAINING": str(channel)}
    argv = toolkit_argv(job_request(modes=("none",))["HyperParameters"])

    assert entry.main(argv, environ) == 0

    [request] = fake_sweep
    assert request.results_dir == checkpoints / "sweep"
    staged = tmp_path / "tmp" / "psa-dataset"
    assert request.data_dir == staged
    assert (staged / "train-images-idx3-ubyte.gz").read_bytes() == b"x"
    model = tmp_path / "model"
    assert (model / "results.txt").read_text() == "91.00\n92.00\n"
    assert (model / "trials.jsonl").is_file()
    assert (model / "logs" / "2x8" / "none-t1.jsonl").is_file()
    echoed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(echoed) == 3


def test_requirements_leave_the_images_torch_alone():
    text = (default_source_dir() / "requirements.txt").read_text()
    names = {
        re.split(r"[<>=!~ ]", line, maxsplit=1)[0].lower()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert names
    assert not names & {"torch", "torchvision", "numpy", "sagemaker", "psa"}


@pytest.mark.slow
def test_a_job_runs_the_real_sweep_and_leaves_upstream_compatible_outputs(
    tmp_path, monkeypatch, capsys
):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    monkeypatch.setattr(entry, "CHECKPOINT_DIR", checkpoints)
    argv = [
        *("--arch", "[1*4]", "--modes", "none,output", "--trials", "1", "--meta-loops", "2"),
        *("--lr", "0.001", "--batch-size", "1024", "--weight-decay", "0.0001"),
        *("--dropout", "0.1", "--seed", "7"),
    ]
    entry.main(argv, {"SM_MODEL_DIR": str(tmp_path / "model")})

    model = tmp_path / "model"
    records = [json.loads(line) for line in (model / "trials.jsonl").read_text().splitlines()]
    assert sorted(r["mode"] for r in records) == ["none", "output"]
    assert all(r["loops_run"] == 2 and r["test_accuracy"] > 11 for r in records)
    for record in records:
        results_txt = (model / f"results-{record['mode']}.txt").read_text()
        assert results_txt == f"{record['val_bounty']:.2f}\n"
    assert (model / "psa_resmlp_summary.md").is_file()
    assert (checkpoints / "sweep" / "trials.jsonl").is_file()
    echoed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    assert sum("loop" in record for record in echoed) == 4
    assert sum("val_bounty" in record for record in echoed) == 2


def test_the_entry_needs_neither_boto3_nor_dotenv():
    check = (
        "import sys, psa.commands.sagemaker_job; "
        "assert not {'boto3', 'botocore', 'dotenv'} & set(sys.modules), sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
