"""The jobs' model.tar.gz on S3 -> a local results dir like sweep's (sagemaker-results-parser).

For each job of the grid (the same flags as sagemaker-runner) it takes the newest attempt that has
an output, reads its per-trial records (trials.jsonl) or, for upstream's jobs, results.txt, and
writes into --output-dir: trials.jsonl and the trial-table and summary markdown (through
psa.store and psa.store.tables, as sweep does), plus the per-loop logs and settings.json when the
outputs hold them (psa's jobs do; upstream's do not). Downloads go to a temporary dir and nothing
is written until every job has been read.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from boto3.exceptions import RetriesExceededError
from botocore.exceptions import ClientError

from psa.atomic import write_bytes_atomically
from psa.cloud.aws import error_code
from psa.cloud.aws_setup import AwsSetup
from psa.cloud.jobs import JobSpec, attempt_of, list_project_jobs
from psa.cloud.listing import list_objects
from psa.modes import MODES
from psa.store import SETTINGS_NAME, TRIALS_FILE_NAME, ResultsStore, upstream_results_name
from psa.store.provenance import PROVENANCE_NAME, write_provenance_file
from psa.store.results import BATCH_RECORDS_NAME, LOOP_LOG_NAME
from psa.store.tables import write_summary_markdown, write_trials_markdown

PROG = "sagemaker-results-parser"
NO_JOB_FOUND = "NO_JOB_FOUND"
FAILED_OR_INCOMPLETE = "FAILED_OR_INCOMPLETE"
RESULTS_NOT_FOUND = "RESULTS_NOT_FOUND"
EMPTY_RESULTS = "EMPTY_RESULTS"
_LOOP_LOG = LOOP_LOG_NAME
_BATCH_RECORDS = BATCH_RECORDS_NAME


@dataclass
class JobResult:
    """What one job's output gave: records, per-loop logs, or an error token per mode."""

    spec: JobSpec
    job: str | None = None
    records: list[dict] = field(default_factory=list)
    loop_logs: dict[str, bytes] = field(default_factory=dict)
    provenance: dict[str, bytes] = field(default_factory=dict)  # the job's provenance files
    settings: dict | None = None
    errors: dict[str, str] = field(default_factory=dict)  # mode -> token


def find_output(
    keys: list[str], prefix: str, candidates: list[str]
) -> tuple[str | None, str | None]:
    """The newest candidate job with a model.tar.gz: (job, key), or (None, error token)."""
    present = set(keys)
    for job in reversed(candidates):
        key = f"{prefix}/{job}/output/model.tar.gz"
        if key in present:
            return job, key
    return None, FAILED_OR_INCOMPLETE if candidates else NO_JOB_FOUND


def candidate_jobs(names: set[str], spec: JobSpec, setup: AwsSetup, naming: str) -> list[str]:
    """The jobs (S3 output dirs or SageMaker job names) that ran this spec, oldest first."""
    if naming == "upstream":
        return sorted(name for name in names if name.startswith(upstream_stem(spec, setup)))
    base = spec.base_name(setup.job_prefix)
    attempts = {name: attempt_of(name, base) for name in names}
    return sorted((name for name in names if attempts[name] is not None), key=attempts.get)


def upstream_stem(spec: JobSpec, setup: AwsSetup) -> str:
    """Upstream named its jobs ``psa-LxW-mode-<timestamp>``."""
    return f"{setup.job_prefix}-{spec.arch.slug}-{spec.modes[0]}-"


def read_output(archive_path: Path, result: JobResult) -> None:
    """Fill `result` from a model.tar.gz: records (trials.jsonl, else results*.txt) and logs."""
    spec = result.spec
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            members = {
                PurePosixPath(member.name).as_posix().removeprefix("./"): member
                for member in archive.getmembers()
                if member.isfile()
            }
            contents = {
                name: archive.extractfile(member).read()
                for name, member in members.items()
                if name in (TRIALS_FILE_NAME, SETTINGS_NAME)
                or name.startswith("results")
                or _LOOP_LOG.match(name)
                or _BATCH_RECORDS.match(name)
                or PROVENANCE_NAME.match(name)
            }
    except (tarfile.TarError, OSError, EOFError) as error:
        result.errors = {mode: f"ERROR: unreadable model.tar.gz ({error})" for mode in spec.modes}
        return
    try:
        # A job killed before its sweep merged them holds some records only in records/.
        record_files = [name for name in sorted(contents) if _BATCH_RECORDS.match(name)]
        if TRIALS_FILE_NAME in contents:
            record_files.insert(0, TRIALS_FILE_NAME)
        if record_files:
            records = _read_records(contents, record_files, archive_path.parent / "output")
        elif spec.shard:
            records = None  # a shard job writes trial records; results.txt is one arch's
        else:
            records = _records_from_results_txt(contents, spec)
        if SETTINGS_NAME in contents:
            result.settings = json.loads(contents[SETTINGS_NAME])
    except ValueError as error:
        result.errors = {mode: f"ERROR: {error}" for mode in spec.modes}
        return
    if records is None:
        result.errors = {mode: RESULTS_NOT_FOUND for mode in spec.modes}
        return
    result.records = [r for r in records if r["mode"] in spec.modes]
    result.loop_logs = {name: data for name, data in contents.items() if _LOOP_LOG.match(name)}
    result.provenance = {n: data for n, data in contents.items() if PROVENANCE_NAME.match(n)}
    found = {record["mode"] for record in result.records}
    result.errors = {mode: EMPTY_RESULTS for mode in spec.modes if mode not in found}


def _read_records(contents: dict[str, bytes], names: list[str], folder: Path) -> list[dict]:
    """The trial records of a job's output, read by the results store as it reads any results
    dir: each trial once, a later file's record winning (one merged into trials.jsonl is also
    in its batch's file). Raises ResultsFormatError (a ValueError) on a malformed record."""
    shutil.rmtree(folder, ignore_errors=True)
    for name in names:
        write_bytes_atomically(folder / name, contents[name])
    try:
        return ResultsStore(folder).records()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _records_from_results_txt(contents: dict[str, bytes], spec: JobSpec) -> list[dict] | None:
    """Upstream outputs: one ``%.2f`` validation bounty per line; records carry only that."""
    files = {}
    for mode in spec.modes:  # a one-mode job's results.txt, else results-<mode>.txt
        names = (upstream_results_name(mode, spec.modes), upstream_results_name(mode, MODES))
        found = [name for name in names if name in contents]
        if found:
            files[mode] = contents[found[0]]
    if not files:
        return None
    records = []
    for mode, data in files.items():
        lines = [line.strip() for line in data.decode().splitlines() if line.strip()]
        for trial, line in enumerate(lines, start=1):
            try:
                bounty = float(line)
            except ValueError:
                raise ValueError(
                    f"results.txt line {trial} is not a number: {line[:30]!r}"
                ) from None
            records.append(
                {
                    "arch": spec.arch.key,
                    "model": spec.config.model,
                    "mode": mode,
                    "trial": trial,
                    "val_bounty": bounty,
                }
            )
    return records


def collect(
    s3,
    setup: AwsSetup,
    specs: list[JobSpec],
    naming: str,
    scratch: Path,
    known_jobs: set[str] = frozenset(),
    on_job: Callable[[str], None] = lambda job: None,
):
    """Read every job's newest output; per-job problems become error tokens, not exceptions.

    `known_jobs` (from SageMaker) tells a job that has not written its output yet
    (FAILED_OR_INCOMPLETE) from one that was never launched (NO_JOB_FOUND). `on_job` is called
    with each job's name once it has been read.
    """
    keys = [key for key, _ in list_objects(s3, setup.bucket, f"{setup.prefix}/")]
    dirs = {key[len(setup.prefix) + 1 :].split("/", 1)[0] for key in keys}
    results = []
    for index, spec in enumerate(specs):
        result = JobResult(spec)
        candidates = candidate_jobs(dirs | set(known_jobs), spec, setup, naming)
        job, key_or_token = find_output(keys, setup.prefix, candidates)
        if job is None:
            result.job = candidates[-1] if candidates else None
            result.errors = {mode: key_or_token for mode in spec.modes}
        else:
            result.job = job
            archive = scratch / f"{index}.tar.gz"
            try:  # a read that breaks off is retried by the transfer manager
                s3.download_file(setup.bucket, key_or_token, str(archive))
            except ClientError as error:
                result.errors = {mode: f"CLIENT_ERROR: {error_code(error)}" for mode in spec.modes}
            except RetriesExceededError as error:
                reason = type(error.last_exception).__name__
                result.errors = {mode: f"CLIENT_ERROR: {reason}" for mode in spec.modes}
            else:
                read_output(archive, result)
                archive.unlink()
        results.append(result)
        on_job(result.job or spec.base_name(setup.job_prefix))
    return results


def write_results_dir(results: list[JobResult], output_dir: Path, model: str) -> Path:
    records = [record for result in results for record in result.records]
    arch_order = list(dict.fromkeys(arch.key for result in results for arch in result.spec.archs))
    # A shard job's problem belongs to no one architecture: its line says it, its trials are absent.
    errors = {
        (result.spec.arch.key, mode): token
        for result in results
        for mode, token in result.errors.items()
        if not result.spec.shard
    }
    store = ResultsStore(output_dir)
    store.write_trials(records)
    for result in results:
        for name, data in result.loop_logs.items():
            store.write_named_log(name, data)
        for name, data in result.provenance.items():  # the runs its records name
            write_provenance_file(output_dir, name, data)
    settings = next((result.settings for result in results if result.settings), None)
    if settings is not None:
        store.write_settings(settings)
    write_trials_markdown(records, store.table_path(model), model, arch_order)
    summary = store.summary_path(model)
    write_summary_markdown(records, summary, model, arch_order, errors)
    return summary


def training_jobs(sagemaker, job_prefix: str) -> set[str]:
    """The project's job names on SageMaker; empty (with a note) without permission to list."""
    try:
        return set(list_project_jobs(sagemaker, job_prefix))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in (
            "AccessDenied",
            "AccessDeniedException",
        ):
            raise
        print(f"{PROG}: cannot list training jobs ({error}); reading S3 only", file=sys.stderr)
        return set()
