"""Download training-job logs from CloudWatch Logs, resumably.

Each stream ``<job>/algo-1-<epoch>`` becomes ``<out>/<job>/algo-1-<epoch>.log`` with one
``[ISO time] message`` line per event, and a small state file beside it records the next page
token and the bytes written. A rerun truncates the log to those bytes (dropping a page cut short
by an interruption) and continues from the token, so it fetches only new events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import ClientError

from psa.atomic import write_text_atomically
from psa.cloud.aws import error_code

LOG_GROUP = "/aws/sagemaker/TrainingJobs"


@dataclass
class JobLogs:
    job: str
    status: str = "up to date"  # downloaded | up to date | empty | no log streams | error: …
    streams: int = 0
    events: int = 0  # all events on disk
    new_events: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)


def _describe_streams(logs, prefix: str) -> list[str]:
    pages = logs.get_paginator("describe_log_streams").paginate(
        logGroupName=LOG_GROUP, logStreamNamePrefix=prefix
    )
    try:
        return [stream["logStreamName"] for page in pages for stream in page.get("logStreams", [])]
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":  # no job has logged yet
            return []
        raise


def jobs_with_logs(logs, job_prefix: str) -> list[str]:
    """Names of the project's jobs that have log streams, from the streams themselves."""
    streams = _describe_streams(logs, f"{job_prefix}-")
    return sorted({stream.split("/", 1)[0] for stream in streams})


def _format_event(event: dict) -> str:
    moment = datetime.fromtimestamp(event["timestamp"] / 1000, tz=UTC)
    stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"[{stamp}] {event['message'].rstrip(chr(10))}\n"


def _read_state(path: Path, log_path: Path) -> dict:
    fresh = {"next_token": None, "bytes": 0, "events": 0}
    if not path.is_file() or not log_path.is_file():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return fresh
    if not isinstance(state, dict) or set(state) != set(fresh):
        return fresh
    if log_path.stat().st_size < state["bytes"]:  # the log was cut behind our back: start over
        return fresh
    return state


def _write_state(path: Path, state: dict) -> None:
    write_text_atomically(path, json.dumps(state))


def download_stream(logs, stream: str, log_path: Path) -> tuple[int, int, int]:
    """Append the stream's new events to log_path: (new events, all events, bytes on disk)."""
    state_path = log_path.with_name(f".{log_path.name}.state")
    state = _read_state(state_path, log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as handle:
        handle.truncate(state["bytes"])
    request = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
    if state["next_token"]:
        request["nextToken"] = state["next_token"]
    new_events = 0
    while True:
        page = logs.get_log_events(**request)  # no paginator: the token is kept for a rerun
        events = page.get("events", [])
        if events:
            data = "".join(_format_event(event) for event in events).encode()
            with log_path.open("ab") as handle:
                handle.write(data)
            state["bytes"] += len(data)
            state["events"] += len(events)
            new_events += len(events)
        token = page.get("nextForwardToken")
        state["next_token"] = token
        _write_state(state_path, state)
        if not token or token == request.get("nextToken"):  # the same token back: end of stream
            return new_events, state["events"], state["bytes"]
        request = {**request, "nextToken": token}


def stream_file_name(job: str, stream: str) -> str:
    return stream.removeprefix(f"{job}/").replace("/", "_") + ".log"


def download_job(logs, job: str, output_dir: Path) -> JobLogs:
    result = JobLogs(job)
    try:
        streams = _describe_streams(logs, f"{job}/")
        for stream in streams:
            path = output_dir / job / stream_file_name(job, stream)
            new, total, size = download_stream(logs, stream, path)
            result.new_events += new
            result.events += total
            result.bytes += size
            result.files.append(path.relative_to(output_dir).as_posix())
    except ClientError as error:
        result.status = f"error: {error_code(error)}"
        return result
    result.streams = len(streams)
    if not streams:
        result.status = "no log streams"
    elif result.events == 0:
        result.status = "empty"
    elif result.new_events:
        result.status = "downloaded"
    return result


def read_job_logs(logs_dir: Path) -> dict[str, list[str]]:
    """job -> its log lines, streams in name order (a spot restart opens a later stream)."""
    jobs: dict[str, list[str]] = {}
    for path in sorted(logs_dir.rglob("*.log")):
        job = path.relative_to(logs_dir).parts[0]
        jobs.setdefault(job, []).extend(path.read_text(errors="replace").splitlines())
    return jobs
