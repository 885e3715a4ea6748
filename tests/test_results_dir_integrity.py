"""One results dir, one truth: sweeps that start together publish one settings file and run
with it (or are refused), a sweep is "done" only when every trial it was asked for is recorded,
a claim that could not be written is not left behind, and what a results dir gets is written
with the user's umask."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from psa.arch import parse_arch
from psa.cli import run as run_command
from psa.config import RunConfig
from psa.store import ResultsStore, StoreError, claims
from psa.sweep import SweepError, SweepRequest, runner
from psa.sweep.events import Started
from psa.sweep.request import Shard

ARCH = "[1*2]"
TRIES = 8


class _Stop(Exception):
    """Raised where the sweep would load MNIST: what was decided up to there is the test's."""


def _start_together(barrier, results: str, seed: int | None, shard: Shard | None, answers):
    """A sweep process released by ``barrier``; reports the seed it started with, or its
    refusal, and stops before training."""
    runner.load_mnist = lambda *args, **kwargs: (_ for _ in ()).throw(_Stop())
    started: list[int] = []

    def on_event(event) -> None:
        if isinstance(event, Started):
            started.append(event.seed)

    request = SweepRequest(
        (parse_arch(ARCH),),
        ("none",),
        2,
        RunConfig("resmlp", 2, seed),
        Path(results),
        device="cpu",
        max_batch=1,  # a batch for each shard
        shard=shard,
    )
    barrier.wait()
    try:
        runner.run(request, on_event)
    except SweepError as error:
        answers.put(("refused", str(error)))
        return
    except _Stop:
        pass
    answers.put(("started", started[0]))


def _race(results: Path, seeds: tuple, shards: tuple) -> list[tuple]:
    context = multiprocessing.get_context("fork")
    barrier, answers = context.Barrier(2), context.Queue()
    processes = [
        context.Process(target=_start_together, args=(barrier, str(results), seed, shard, answers))
        for seed, shard in zip(seeds, shards)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    return sorted(answers.get(timeout=5) for _ in processes)


def test_two_sweeps_of_other_seeds_starting_together_never_share_a_results_dir(tmp_path):
    for attempt in range(TRIES):
        results = tmp_path / f"r{attempt}"
        answers = _race(results, (41, 42), (None, None))
        stored = json.loads((results / "settings.json").read_text())["seed"]
        assert [kind for kind, _ in answers] == ["refused", "started"], answers
        assert answers[1][1] == stored
        assert "holds a sweep with other settings (seed" in answers[0][1]


def test_shards_without_a_seed_starting_together_run_with_the_one_seed_published(tmp_path):
    for attempt in range(TRIES):
        results = tmp_path / f"r{attempt}"
        answers = _race(results, (None, None), (Shard(1, 2), Shard(2, 2)))
        stored = json.loads((results / "settings.json").read_text())["seed"]
        assert answers == [("started", stored), ("started", stored)], answers


def test_the_launchers_settle_one_seed_before_they_start_shards(tmp_path):
    request = SweepRequest(
        (parse_arch(ARCH),), ("none",), 1, RunConfig("resmlp", 1), tmp_path / "r", device="cpu"
    )
    seeded = runner.settled(request)
    assert seeded.config.seed is not None
    assert seeded.for_shard(Shard(1, 2)).config.seed == seeded.for_shard(Shard(2, 2)).config.seed
    store = ResultsStore(tmp_path / "r")
    store.write_settings(RunConfig("resmlp", 1, 77).flat())
    assert runner.settled(request).config.seed == 77  # a rerun resumes the dir's seed


def sweep_argv(results: Path, data_dir: Path) -> list[str]:
    return [
        *("--arch", ARCH, "--modes", "none", "--trials", "1", "--meta-loops", "3"),
        *("--seed", "11", "--device", "cpu", "--data-dir", str(data_dir)),
        *("--results-dir", str(results)),
    ]


def test_a_sweep_whose_trials_are_only_claimed_elsewhere_is_not_done(
    tmp_path, repo_dataset, capsys
):
    results = tmp_path / "R"
    claim = results / "claims" / "1x2" / "none-t1.claim"
    claim.parent.mkdir(parents=True)
    claim.touch()  # an unwritten claim of a moment ago: a worker is creating it
    status = run_command("sweep", sweep_argv(results, repo_dataset))
    out, err = capsys.readouterr()
    assert status == 3, err
    assert "Nothing to run" not in out and "Done:" not in out
    [line] = err.splitlines()
    assert line.startswith("sweep: 1 of 1 trial of this sweep not recorded yet")
    assert "1 trial held by another worker's claim" in line and "--status" in line
    assert not ResultsStore(results).records()


def test_a_sweep_of_another_hosts_fresh_claim_is_not_done(tmp_path, repo_dataset, capsys):
    results = tmp_path / "R"
    claim = results / "claims" / "1x2" / "none-t1.claim"
    claim.parent.mkdir(parents=True)
    holder = {"host": "elsewhere", "pid": 1, "started": 0.0, "token": "t"}
    claim.write_text(json.dumps(holder))
    assert run_command("sweep", sweep_argv(results, repo_dataset)) == 3
    assert "held by another worker's claim" in capsys.readouterr().err


def test_a_claim_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    path = tmp_path / "claims" / "1x2" / "none-t1.claim"

    def disk_full(descriptor, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(claims.os, "write", disk_full)
    with pytest.raises(OSError):
        claims.acquire([path])
    assert not path.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_what_a_results_dir_gets_follows_the_umask(tmp_path, umask):
    store = ResultsStore(tmp_path / "r")
    previous = os.umask(umask)
    try:
        store.write_plan_once("{}\n")
        store.write_settings_once(RunConfig("resmlp", 1, 1).flat())
        store.write_records("1x2-t1", [{"arch": "1*2", "mode": "none", "trial": 1}])
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for path in (store.plan_path, store.settings_path, store.root / "records" / "1x2-t1.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_records_are_still_written_exactly_once(tmp_path):
    store = ResultsStore(tmp_path / "r")
    record = {"arch": "1*2", "mode": "none", "trial": 1}
    path = store.write_records("1x2-t1", [record])
    with pytest.raises(StoreError, match="already recorded"):
        store.write_records("1x2-t1", [{**record, "trial": 2}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [record]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_a_rerun_with_another_thread_count_is_refused_and_one_without_keeps_it(
    tmp_path, repo_dataset, capsys
):
    results = tmp_path / "R"
    argv = sweep_argv(results, repo_dataset)
    assert run_command("sweep", [*argv, "--threads", "2", "--dry-run"]) == 0
    assert "2 torch threads a process" in capsys.readouterr().out
    assert run_command("sweep", [*argv, "--threads", "2"]) == 0
    assert "device cpu (2 threads)" in capsys.readouterr().out
    assert json.loads((results / "settings.json").read_text())["threads"] == 2
    assert run_command("sweep", [*argv, "--threads", "1"]) == 1
    assert "threads 2 here vs 1 asked" in capsys.readouterr().err
    assert run_command("sweep", argv) == 0  # without --threads: the dir's
    assert "Nothing to run" in capsys.readouterr().out
