"""The results store: the one owner of a results directory's files and formats.

Layout of a results dir (every name is spelled out here and nowhere else):

    settings.json                       what every trial shares; a rerun must match it
    trials.jsonl                        the trial records, merged (one JSON object per trial)
    records/<batch key>.jsonl           the records of one batch, written once when it ends
    logs/<arch slug>/<mode>-t<i>.jsonl  one line per completed meta-loop of trial i
    batches/<batch key>.safetensors     a running batch's LKG weights and counters
    claims/<arch slug>/<mode>-t<i>.claim  which live worker runs trial i
    plan.json                           the batch plan that shards split (psa.sweep.plan)
    launcher/                           submitit's and --devices workers' files and logs
      submitted.json                    what sweep --launcher submitted, for --status
      worker-<i>-of-<n>.log             the output of --devices worker i
    psa_<model>_trials.md, psa_<model>_summary.md   the upstream tables, rendered from records

What stays true at any instant, whatever kill lands (pinned by tests/test_store.py and the chaos
test, tests/test_chaos.py):

- A loop is committed at its boundary, while SIGINT and SIGTERM are held: the loop's line is
  appended to each trial's log (one write, fsync), then the batch's state is saved atomically. A
  kill between the two leaves a log line of an uncommitted loop, which resuming cuts away and
  recomputes (every random stream derives from (seed, loop), so the line comes back the same);
  so every committed loop is in its log exactly once, and a kill -9 loses only the loop in
  flight. A torn last line (a kill inside an append) is dropped with a warning and the log
  rewritten atomically.
- A finished batch's records appear whole, exactly once: ``records/<batch key>.jsonl`` is
  hard-linked into place (which fails if it exists) after every loop of the batch is logged;
  then the batch's state goes. ``trials.jsonl`` is the merge of those files, rewritten
  atomically when a sweep ends; readers take the union, so a merge that was never made or raced
  another loses nothing.

Concurrent writers (two sweeps, or the shards of one grid, on one dir, possibly on a network
filesystem) claim their work per trial with claim files created exclusively (psa.store.claims):
a worker skips trials a live worker holds and takes over those of a dead one. Claims were
chosen over one lock for the whole dir because advisory locks (flock, fcntl) are not reliable on
NFS and a dir-wide lock would serialise the shards; over per-worker files alone because those
keep two workers from interleaving a file but not from running the same trial twice. Per-trial
claims (not per-batch) also hold when two workers plan different batches (different memory,
different --max-batch). No file is appended to by two processes: records are per-batch files
and a log has one writer, its trial's claimant.

A worker's use of it (sweep's, and any runner of a share of a grid):

    store = ResultsStore(results_dir)          # stale_seconds= for another-host timeout
    status = store.status(trials, model)       # .done, .running (live claims), .pending
    claim = store.claim(batch_trials)          # all of them or None (a live worker has one)
    with claim:                                # released on exit, also on a stop
        ...                                    # claim.check() before each commit
    store.merge_records()                      # trials.jsonl, at the end
"""

from psa.store.claims import Claim, ClaimLost
from psa.store.jsonlines import LineLog, ResultsFormatError
from psa.store.results import (
    SETTINGS_NAME,
    TRIALS_FILE_NAME,
    BatchState,
    ResultsStore,
    Status,
    StoreError,
    Trial,
    read_records_table,
    repair_run_logs,
    run_log_path,
    run_logs,
    summary_name,
    trials_table_name,
    upstream_results_name,
    worker_log_name,
)
from psa.store.schema import REQUIRED_LOG_KEYS, REQUIRED_RECORD_KEYS

__all__ = [
    "REQUIRED_LOG_KEYS",
    "REQUIRED_RECORD_KEYS",
    "SETTINGS_NAME",
    "TRIALS_FILE_NAME",
    "Claim",
    "BatchState",
    "ClaimLost",
    "LineLog",
    "ResultsFormatError",
    "ResultsStore",
    "Status",
    "StoreError",
    "Trial",
    "read_records_table",
    "repair_run_logs",
    "run_log_path",
    "run_logs",
    "summary_name",
    "trials_table_name",
    "upstream_results_name",
    "worker_log_name",
]
