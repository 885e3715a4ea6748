"""sagemaker-get-training-logs and sagemaker-logs-parser.

get-training-logs: CloudWatch Logs -> ``<output-dir>/<job>/<stream>.log``, resumable, with
``<output-dir>/download_summary.json``. logs-parser: those files -> per-loop tables (current
accuracy, LKG, LKG growth; a row per trial, a column per meta-loop, the final test accuracy) and
the per-loop JSON lines of the results-dir layout (``logs/<slug>/<mode>-t<trial>.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from psa.arguments import add_shipped_flag, existing_path, refuse_shipped
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.cloud.aws import client
from psa.cloud.aws_setup import require
from psa.cloud.cloudwatch import LOG_GROUP, download_job, jobs_with_logs, read_job_logs
from psa.cloud.jobs import read_jobs_file
from psa.cloud.logparse import loop_table, merge_jobs, parse_job_log
from psa.cloud.progress import Progress
from psa.commands.sagemaker_flags import add_setup_flags, aws_errors, setup_of
from psa.config import MODELS
from psa.errors import PsaError, command_hint
from psa.store import ResultsStore, Trial
from psa.store.jsonlines import encode

DOWNLOAD_PROG = "sagemaker-get-training-logs"
PARSE_PROG = "sagemaker-logs-parser"
DEFAULT_LOGS_DIR = Path("results/sagemaker-logs")


def _download_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=DOWNLOAD_PROG,
        description="Download training-job logs from CloudWatch Logs (resumable).",
    )
    parser.add_argument("--job", action="append", default=[], help="a job name (repeatable)")
    parser.add_argument("--jobs-file", type=existing_path, help="job names, one per line")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_LOGS_DIR,
        help=f"default: {DEFAULT_LOGS_DIR}; <job>/<stream>.log files and download_summary.json",
    )
    add_shipped_flag(parser, "--output-dir")
    add_setup_flags(parser, ("region", "job_prefix"))
    return parser


@aws_errors
def download_main(argv: list[str] | None = None) -> int:
    args = _download_parser().parse_args(argv)
    refuse_shipped("--output-dir", args.output_dir, args.add_to_shipped)
    setup = setup_of(args)
    require(setup, "region")
    jobs = list(args.job)
    if args.jobs_file is not None:
        jobs += read_jobs_file(args.jobs_file)
    logs = client("logs", setup)
    if not jobs:
        jobs = jobs_with_logs(logs, setup.job_prefix)
        if not jobs:
            print(f"no log streams of jobs named {setup.job_prefix}-… in {LOG_GROUP} yet")
    jobs = list(dict.fromkeys(jobs))
    results = []
    with Progress(DOWNLOAD_PROG, "jobs' logs downloaded", len(jobs)) as progress:
        for job in jobs:
            result = download_job(logs, job, args.output_dir)
            results.append(result)
            print(
                f"{job}: {result.status} ({result.new_events} new / {result.events} events, "
                f"{result.streams} stream(s), {result.bytes:,} bytes)"
            )
            progress.advance(job)
    counts = Counter(result.status.split(":")[0] for result in results)
    summary = {
        "log_group": LOG_GROUP,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "totals": {
            "jobs": len(results),
            "events": sum(result.events for result in results),
            "bytes": sum(result.bytes for result in results),
            **{status: count for status, count in sorted(counts.items())},
        },
        "jobs": [vars(result) for result in results],
    }
    summary_path = args.output_dir / "download_summary.json"
    write_text_atomically(summary_path, json.dumps(summary, indent=2) + "\n")
    told = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    told = f": {told}" if told else ""
    print(f"{len(results)} job(s){told}; summary in {args.output_dir / 'download_summary.json'}")
    if counts.get("empty") or counts.get("no log streams"):
        print("empty or missing logs: the job may not have started yet, or it printed nothing")
    return 1 if counts.get("error") else 0


def _parse_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PARSE_PROG,
        description="Per-loop tables and per-loop JSON lines from downloaded training-job logs.",
    )
    parser.add_argument(
        "--logs-dir",
        type=Path,
        default=DEFAULT_LOGS_DIR,
        help=f"what sagemaker-get-training-logs wrote (default: {DEFAULT_LOGS_DIR})",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("results/sagemaker"),
        help="default: results/sagemaker (the results dir sagemaker-results-parser writes)",
    )
    add_shipped_flag(parser, "--output-dir")
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="resmlp",
        help="the model upstream's logs are of, and the tables' file-name prefix (default: resmlp)",
    )
    return parser


def parse_main(argv: list[str] | None = None) -> int:
    parser = _parse_parser()
    args = parser.parse_args(argv)
    refuse_shipped("--output-dir", args.output_dir, args.add_to_shipped)
    if not args.logs_dir.is_dir():
        parser.error(
            f"logs dir {args.logs_dir} does not exist; run `{command_hint(DOWNLOAD_PROG)}` first"
        )
    jobs = read_job_logs(args.logs_dir)
    if not jobs:
        raise PsaError(
            f"no .log files under {args.logs_dir}; run `{command_hint(DOWNLOAD_PROG)}` first"
        )
    parsed = [(job, parse_job_log(job, lines, args.model)) for job, lines in jobs.items()]
    for job, trials in parsed:
        if not trials:
            print(f"{job}: no per-loop lines", file=sys.stderr)
    trials = merge_jobs(parsed)
    if not trials:
        raise PsaError(f"no per-loop lines in {len(jobs)} job log(s) under {args.logs_dir}")

    output = args.output_dir
    store = ResultsStore(output)
    written = []
    for kind in ("current", "lkg", "growth"):
        written.append(store.write_loop_table(args.model, kind, loop_table(trials, kind)))
    for trial in trials:
        lines = [trial.loops[k] for k in sorted(trial.loops)]
        store.write_log(Trial(trial.arch, trial.mode, trial.trial), encode(lines))
    loops = sum(len(trial.loops) for trial in trials)
    print(f"{len(trials)} trial(s), {loops} loop record(s) from {len(jobs)} job log(s)")
    for path in written:
        print(f"wrote {path}")
    print(f"wrote {output / 'logs'}/<arch>/<mode>-t<trial>.jsonl")
    return 0
