import contextlib
import json
import time

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from cloud_support import REGION, isolated_aws_env
from psa.cloud import cloudwatch
from psa.cloud.logparse import merge_jobs, parse_job_log
from psa.commands import sagemaker_logs as logs
from schemas import loop_record, trial_record

GROUP = cloudwatch.LOG_GROUP


@pytest.fixture
def cw(monkeypatch, tmp_path):
    isolated_aws_env(monkeypatch, tmp_path)
    with mock_aws():
        client = boto3.client("logs", region_name=REGION)
        client.create_log_group(logGroupName=GROUP)
        yield client


def put(client, stream, messages):
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    if messages:
        now = int(time.time() * 1000)
        events = [{"timestamp": now + i, "message": m} for i, m in enumerate(messages)]
        client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)


def lines(path):
    return [line.split("] ", 1)[1] for line in path.read_text().splitlines()]


def test_logs_are_downloaded_per_stream_with_a_summary_in_the_output_dir(cw, tmp_path, capsys):
    put(cw, "psa-4x17-all-aaaa/algo-1-1700000000", ["one", "two"])
    put(cw, "psa-4x17-all-aaaa/algo-1-1700000999", ["three"])
    put(cw, "psa-2x8-all-bbbb/algo-1-1700000000", [])
    put(cw, "other-job/algo-1-1", ["not ours"])

    assert logs.download_main(["--output-dir", "logs"]) == 0

    job_dir = tmp_path / "logs" / "psa-4x17-all-aaaa"
    assert lines(job_dir / "algo-1-1700000000.log") == ["one", "two"]
    assert lines(job_dir / "algo-1-1700000999.log") == ["three"]
    assert not (tmp_path / "logs" / "other-job").exists()
    summary = json.loads((tmp_path / "logs" / "download_summary.json").read_text())
    status = {job["job"]: job["status"] for job in summary["jobs"]}
    assert status == {"psa-2x8-all-bbbb": "empty", "psa-4x17-all-aaaa": "downloaded"}
    assert summary["totals"]["events"] == 3
    assert not (tmp_path / "results").exists()
    captured = capsys.readouterr()
    assert "psa-2x8-all-bbbb: empty" in captured.out and "1 empty" in captured.out
    progress = "sagemaker-get-training-logs: 2/2 jobs' logs downloaded"
    assert progress in captured.err.splitlines()


def test_a_rerun_fetches_only_new_events(cw, tmp_path):
    stream = "psa-a/algo-1-1"
    put(cw, stream, ["first", "second"])
    logs.download_main(["--job", "psa-a", "--output-dir", "logs"])
    put(cw, stream, ["third"])
    logs.download_main(["--job", "psa-a", "--output-dir", "logs"])
    log = tmp_path / "logs" / "psa-a" / "algo-1-1.log"
    assert lines(log) == ["first", "second", "third"]
    summary = json.loads((tmp_path / "logs" / "download_summary.json").read_text())
    assert summary["jobs"][0]["new_events"] == 1
    logs.download_main(["--job", "psa-a", "--output-dir", "logs"])
    summary = json.loads((tmp_path / "logs" / "download_summary.json").read_text())
    assert summary["jobs"][0]["status"] == "up to date"
    assert lines(log) == ["first", "second", "third"]


def test_an_interrupted_page_is_dropped_and_fetched_again(cw, tmp_path):
    put(cw, "psa-a/algo-1-1", ["first"])
    logs.download_main(["--job", "psa-a", "--output-dir", "logs"])
    log = tmp_path / "logs" / "psa-a" / "algo-1-1.log"
    with log.open("a") as handle:
        handle.write("[half a page")  # written, but the state file was never updated
    put(cw, "psa-a/algo-1-1", ["second"])
    logs.download_main(["--job", "psa-a", "--output-dir", "logs"])
    assert lines(log) == ["first", "second"]


def test_a_job_without_streams_is_reported_not_counted_as_success(cw, tmp_path, capsys):
    assert logs.download_main(["--job", "psa-never-started", "--output-dir", "logs"]) == 0
    summary = json.loads((tmp_path / "logs" / "download_summary.json").read_text())
    assert summary["jobs"][0]["status"] == "no log streams"
    assert "may not have started" in capsys.readouterr().out


def test_no_project_logs_yet_still_leaves_a_summary(cw, tmp_path, capsys):
    put(cw, "other-job/algo-1-1", ["not ours"])
    assert logs.download_main(["--output-dir", "logs"]) == 0
    summary = json.loads((tmp_path / "logs" / "download_summary.json").read_text())
    assert summary["totals"]["jobs"] == 0
    assert "no log streams of jobs named psa-" in capsys.readouterr().out


def test_every_page_is_followed_until_the_token_repeats(tmp_path, monkeypatch):
    isolated_aws_env(monkeypatch, tmp_path)
    client = boto3.client("logs", region_name=REGION)
    request = {"logGroupName": GROUP, "logStreamName": "j/s", "startFromHead": True}
    with Stubber(client) as stub:
        for number, (events, token) in enumerate(
            [(["a", "b"], "t1"), ([], "t2"), (["c"], "t3"), ([], "t3")]
        ):
            expected = {**request, "nextToken": f"t{number}"} if number else request
            page = {
                "events": [{"timestamp": 0, "message": m} for m in events],
                "nextForwardToken": token,
            }
            stub.add_response("get_log_events", page, expected)
        new, total, _ = cloudwatch.download_stream(client, "j/s", tmp_path / "s.log")
    assert (new, total) == (3, 3)
    assert lines(tmp_path / "s.log") == ["a", "b", "c"]


def upstream_lines(trials, test_accuracies):
    out = ["[2025-01-01T00:00:00.000Z] Starting training", "no loop here: Current: 5%"]
    for values, test in zip(trials, test_accuracies, strict=True):
        total = len(values)
        for loop, (current, lkg) in enumerate(values, start=1):
            out.append(
                f"[2025-01-01T00:00:{loop:02d}.000Z] Loop {loop}/{total} (Global: {loop}) | "
                f"Current: {current:.2f}% | LKG: {lkg:.2f}% | Bounty: {lkg:.2f}%"
            )
        out.append(f"[2025-01-01T00:01:00.000Z] 🧪 Final Test Accuracy: {test:.2f}%")
        out.append("[2025-01-01T00:01:00.000Z] 🏆 Run Finished.")
    return out


accuracy = st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 2))


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trials=st.lists(
        st.lists(st.tuples(accuracy, accuracy), min_size=1, max_size=12), min_size=1, max_size=4
    ),
    data=st.data(),
)
def test_upstream_loop_lines_parse_back_trial_by_trial(trials, data):
    tests = data.draw(st.lists(accuracy, min_size=len(trials), max_size=len(trials)))
    parsed = parse_job_log(
        "psa-18x18-output-2024-05-01-10-00-00-000", upstream_lines(trials, tests)
    )
    assert len(parsed) == len(trials)
    for trial, values, test in zip(parsed, trials, tests, strict=True):
        assert (trial.arch.key, trial.mode) == ("18*18", "output")
        assert [
            (trial.loops[k]["val_accuracy"], trial.loops[k]["lkg_accuracy"])
            for k in sorted(trial.loops)
        ] == values
        assert trial.test_accuracy == test


@given(noise=st.lists(st.text(max_size=80), max_size=20))
def test_noise_lines_yield_no_trials(noise):
    assert parse_job_log("psa-4x4-full-2024-01-01", noise) == []


def test_echoed_records_name_their_trial_and_win_over_text():
    records = [
        loop_record("4*17", "full", t, k, 50.0 + k, 50.0 + k) for t in (1, 2) for k in (1, 2)
    ]
    text = [json.dumps(r) for r in records]
    text.append("Loop 1/2 (Global: 1) | Current: 1.00% | LKG: 1.00% | Bounty: 1.00%")
    text.append(json.dumps(trial_record("4*17", "full", 2, 52.0, test_accuracy=51.5)))
    [first, second] = sorted(parse_job_log("psa-4x17-all-0123abcd", text), key=lambda t: t.trial)
    assert sorted(first.loops) == [1, 2] and first.test_accuracy is None
    assert second.loops[2]["val_accuracy"] == 52.0 and second.test_accuracy == 51.5


def test_a_retry_adds_to_the_trials_of_its_base_job():
    base = [loop_record("2*8", "none", 1, 1, 10.0, 10.0)]
    retry = [
        loop_record("2*8", "none", 1, 2, 20.0, 20.0),
        loop_record("2*8", "none", 2, 1, 5.0, 5.0),
    ]
    jobs = [
        ("psa-2x8-all-aaaa-r1", parse_job_log("psa-2x8-all-aaaa-r1", map(json.dumps, retry))),
        ("psa-2x8-all-aaaa", parse_job_log("psa-2x8-all-aaaa", map(json.dumps, base))),
    ]
    merged = merge_jobs(jobs)
    assert [(t.trial, sorted(t.loops)) for t in merged] == [(1, [1, 2]), (2, [1])]


def test_the_parser_writes_per_loop_tables_and_jsonl(tmp_path, capsys):
    job = "psa-18x18-output-2024-05-01-10-00-00-000"
    (tmp_path / "raw" / job).mkdir(parents=True)
    trials = [[(11.02, 11.02), (11.13, 11.13), (21.58, 21.58)], [(11.0, 11.0), (9.0, 11.0)]]
    text = "\n".join(upstream_lines(trials, [20.0, 10.5]))
    (tmp_path / "raw" / job / "algo-1-1714557600.log").write_text(text)

    assert (
        logs.parse_main(["--logs-dir", str(tmp_path / "raw"), "--output-dir", str(tmp_path)]) == 0
    )

    table = (tmp_path / "psa_resmlp_trials_convergence.md").read_text().splitlines()
    assert table[0] == (
        "| Architecture | Mode | Trial | Meta-Loop 1 | Meta-Loop 2 | Meta-Loop 3 | Final Test |"
    )
    assert table[2] == "| 18x18 | output | 1 | 11.02 | 11.13 | 21.58 | 20.00 |"
    assert table[3] == "| 18x18 | output | 2 | 11.00 | 9.00 | N/A | 10.50 |"
    growth = (tmp_path / "psa_resmlp_trials_lkg_growth.md").read_text().splitlines()
    assert growth[2] == "| 18x18 | output | 1 | 0.00 | 0.11 | 10.45 | 20.00 |"
    log = tmp_path / "logs" / "18x18" / "output-t2.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["promoted"] for r in records] == [True, False]
    assert records[0]["arch"] == "18*18" and records[0]["run_id"] == job


def test_the_parser_says_what_to_do_without_logs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PSA_RUN_PREFIX", "scripts/poetry run")
    with pytest.raises(SystemExit):
        logs.parse_main(["--logs-dir", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert "run `scripts/poetry run sagemaker-get-training-logs` first" in err
    assert err.count("\n") == 1
