"""The results store: layout, torn lines, records written once, merging, claims, status, and the
shipped results dir reading and rendering as committed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from psa.arch import Arch, parse_key, read_config_file
from psa.store import LineLog, ResultsStore, StoreError, Trial
from psa.store import claims as claim_files
from psa.store.results import BatchState
from psa.store.tables import render_summary_markdown, render_trials_markdown, write_tables
from schemas import loop_record, trial_record

SHIPPED = Path(__file__).resolve().parents[1] / "results"
ARCH = Arch([(1, 8)])
TRIAL = Trial(ARCH, "none", 1)


def log_lines(store: ResultsStore, trial: Trial, loops: int) -> list[dict]:
    return [
        loop_record(trial.arch.key, trial.mode, trial.index, k, 50.0 + k, 50.0 + k)
        for k in range(1, loops + 1)
    ]


@pytest.mark.parametrize(
    ("folder", "configs"),
    [
        ("", "configurations.txt"),
        ("precision/fp32", "precision-configurations.txt"),
        ("precision/bf16", "precision-configurations.txt"),
    ],
)
def test_the_shipped_results_render_from_their_records_byte_for_byte(folder, configs, tmp_path):
    root = SHIPPED / folder
    store = ResultsStore(root)
    records = store.records_table("resmlp")
    order = [arch.key for arch in read_config_file(SHIPPED / configs)]
    table = render_trials_markdown(records, "resmlp", order)
    assert table == store.table_path("resmlp").read_text()
    summary = render_summary_markdown(records, "resmlp", order)
    assert summary == store.summary_path("resmlp").read_text()
    copy = ResultsStore(tmp_path)
    for name in ("settings.json", "trials.jsonl"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    write_tables(copy, "resmlp", order)
    assert copy.table_path("resmlp").read_bytes() == store.table_path("resmlp").read_bytes()
    assert copy.summary_path("resmlp").read_bytes() == store.summary_path("resmlp").read_bytes()


def test_the_shipped_logs_and_records_are_where_the_store_says(tmp_path):
    store = ResultsStore(SHIPPED)
    for record in store.records():
        path = store.log_path(Trial(parse_key(record["arch"]), record["mode"], record["trial"]))
        loops = [json.loads(line)["loop"] for line in path.read_text().splitlines()]
        assert loops == list(range(1, record["loops_run"] + 1))
    assert store.read_settings()["seed"] == 2026


def test_a_log_comes_into_being_with_its_first_line(tmp_path):
    path = tmp_path / "logs" / "1x8" / "none-t1.jsonl"
    log = LineLog(path)
    assert not path.exists()
    log.append({"loop": 1})
    assert path.read_text() == '{"loop": 1}\n'
    log.append({"loop": 2}, {"loop": 3})
    log.close()
    assert [json.loads(line)["loop"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_a_torn_last_line_is_dropped_with_one_warning_and_the_log_rewritten(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    path = store.log_path(TRIAL)
    path.parent.mkdir(parents=True)
    whole = "".join(json.dumps(line) + "\n" for line in log_lines(store, TRIAL, 2))
    path.write_text(whole + '{"run_id": "run", "arch": "1*8", "mo')
    inode = path.stat().st_ino
    log, kept = store.open_loop_log(TRIAL, 2)
    log.close()
    assert [line["loop"] for line in kept] == [1, 2]
    assert path.read_text() == whole
    assert path.stat().st_ino != inode  # rewritten by rename, not in place
    [warning] = capsys.readouterr().err.splitlines()
    assert "incomplete last line" in warning and str(path) in warning


def test_a_last_line_that_lost_only_its_newline_is_kept(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    path = store.log_path(TRIAL)
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(json.dumps(line) for line in log_lines(store, TRIAL, 2)))
    _, kept = store.open_loop_log(TRIAL, 2)
    assert [line["loop"] for line in kept] == [1, 2] and capsys.readouterr().err == ""


def test_damage_before_the_last_line_is_an_error_not_a_torn_append(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.log_path(TRIAL)
    path.parent.mkdir(parents=True)
    lines = [json.dumps(line) for line in log_lines(store, TRIAL, 2)]
    path.write_text(lines[0][:20] + "\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"none-t1\.jsonl:1: not a JSON object"):
        store.open_loop_log(TRIAL, 2)


def test_opening_a_log_cuts_the_loops_its_batch_did_not_save(tmp_path):
    store = ResultsStore(tmp_path)
    log = LineLog(store.log_path(TRIAL))
    log.append(*log_lines(store, TRIAL, 3))
    log.close()
    _, kept = store.open_loop_log(TRIAL, 2)
    assert [line["loop"] for line in kept] == [1, 2]
    _, kept = store.open_loop_log(TRIAL, 0)
    assert kept == [] and not store.log_path(TRIAL).exists()


def test_a_batchs_records_are_written_once_and_whole(tmp_path):
    store = ResultsStore(tmp_path)
    records = [trial_record("1*8", mode, 1, 60.0) for mode in ("none", "full")]
    path = store.write_records("1x8-abc", records)
    assert [json.loads(line) for line in path.read_text().splitlines()] == records
    with pytest.raises(StoreError, match="already recorded"):
        store.write_records("1x8-abc", records[:1])
    assert [json.loads(line) for line in path.read_text().splitlines()] == records
    assert sorted(p.name for p in path.parent.iterdir()) == ["1x8-abc.jsonl"]
    assert store.recorded_trials("resmlp") == {Trial(ARCH, "none", 1), Trial(ARCH, "full", 1)}


def test_merging_keeps_trials_jsonl_as_it_was_and_adds_each_missing_record_once(tmp_path):
    store = ResultsStore(tmp_path)
    legacy = json.dumps(trial_record("[2*4]", "none", 1, 40.0)) + "\n"
    store.trials_path.write_text(legacy)
    store.write_records("1x8-a", [trial_record("1*8", "none", 1, 60.0)])
    store.write_records("1x8-b", [trial_record("1*8", "none", 2, 61.0)])
    store.merge_records()
    store.merge_records()
    lines = store.trials_path.read_text().splitlines(keepends=True)
    assert lines[0] == legacy and len(lines) == 3
    assert len(store.records()) == 3
    # A merge that raced another and lost (an older trials.jsonl won) loses no record.
    store.trials_path.write_text(legacy)
    assert len(store.records()) == 3


def test_a_batch_state_round_trips_with_its_seconds(tmp_path):
    store = ResultsStore(tmp_path)
    trials = [Trial(ARCH, "none", 1), Trial(ARCH, "full", 1)]
    state = BatchState("1x8-abc", trials, 3, [2, 3], 12.5)
    store.save_batch(state, {"trial0.w": torch.ones(2)})
    assert store.batch_state("1x8-abc", ARCH) == state
    assert store.saved_batches(ARCH) == [state]
    assert torch.equal(store.batch_tensors("1x8-abc")["trial0.w"], torch.ones(2))
    store.delete_batch("1x8-abc")
    assert store.saved_batches(ARCH) == [] and not (tmp_path / "batches").exists()


def test_a_claim_is_exclusive_until_released(tmp_path):
    store = ResultsStore(tmp_path)
    first = store.claim([TRIAL, Trial(ARCH, "full", 1)])
    assert first is not None
    assert store.claim([Trial(ARCH, "full", 1)]) is None
    assert store.claim([Trial(ARCH, "hidden", 1)]) is not None
    holder = json.loads(store.claim_path(TRIAL).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == claim_files.HOST
    first.release()
    assert store.claim([TRIAL]) is not None


def test_all_or_nothing_a_refused_claim_takes_none_of_its_trials(tmp_path):
    store = ResultsStore(tmp_path)
    assert store.claim([Trial(ARCH, "full", 1)]) is not None
    assert store.claim([TRIAL, Trial(ARCH, "full", 1)]) is None
    assert not store.claim_path(TRIAL).exists()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.claim_path(TRIAL)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": claim_files.HOST, "pid": dead_pid(), "token": "old"}))
    claim = store.claim([TRIAL])
    assert claim is not None and json.loads(path.read_text())["token"] == claim.token
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_claim_of_another_host_is_live_until_its_heartbeat_is_stale(tmp_path):
    store = ResultsStore(tmp_path, stale_seconds=60)
    path = store.claim_path(TRIAL)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "theirs"}))
    assert store.claim([TRIAL]) is None and store.is_claimed(TRIAL)
    old = time.time() - 61
    os.utime(path, (old, old))
    assert not store.is_claimed(TRIAL)
    assert store.claim([TRIAL]) is not None


def test_a_worker_whose_claim_was_taken_over_stops_before_writing(tmp_path):
    store = ResultsStore(tmp_path, stale_seconds=60)
    claim = store.claim([TRIAL])
    claim.check()
    path = store.claim_path(TRIAL)
    holder = json.loads(path.read_text())
    path.write_text(json.dumps({**holder, "token": "another"}))
    with pytest.raises(claim_files.ClaimLost):
        claim.check()
    claim.release()  # leaves the other worker's claim alone
    assert json.loads(path.read_text())["token"] == "another"


def test_the_heartbeat_refreshes_the_claims_mtime(tmp_path):
    store = ResultsStore(tmp_path)
    claim = store.claim([TRIAL])
    path = store.claim_path(TRIAL)
    old = time.time() - 100
    os.utime(path, (old, old))
    claim.heartbeat()
    assert time.time() - path.stat().st_mtime < 10


def test_status_tells_recorded_running_and_pending_trials(tmp_path):
    store = ResultsStore(tmp_path)
    trials = [Trial(ARCH, mode, 1) for mode in ("none", "full", "hidden", "output")]
    store.write_records("1x8-a", [trial_record("1*8", "none", 1, 60.0)])
    store.claim([trials[1]])
    store.save_batch(BatchState("1x8-b", trials[2:3], 2, [1], 1.0), {"trial0.w": torch.ones(1)})
    status = store.status(trials, "resmlp")
    assert status.done == {trials[0]} and status.running == {trials[1]}
    assert status.pending == {trials[2], trials[3]} and status.saved_loops == {trials[2]: 2}


def test_stale_claims_are_cleared_and_live_ones_kept(tmp_path):
    store = ResultsStore(tmp_path)
    live = store.claim([TRIAL])
    dead = store.claim_path(Trial(Arch([(2, 4)]), "full", 1))
    dead.parent.mkdir(parents=True)
    dead.write_text(json.dumps({"host": claim_files.HOST, "pid": dead_pid(), "token": "old"}))
    store.clear_stale_claims()
    assert store.claim_path(TRIAL).exists() and not dead.exists()
    assert not dead.parent.exists()
    live.release()


def test_the_engine_and_sweep_layers_do_not_import_the_markdown_layer():
    code = "import sys, psa.sweep.runner; print(sorted(m for m in sys.modules if 'markdown' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
