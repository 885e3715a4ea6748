"""merge-results: the union of results dirs, refusing other settings and conflicting trials in
one line, dropping exact duplicates, and never touching its inputs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from command_support import refusal
from documented import quoted
from psa.commands import merge_results
from psa.config import RunConfig
from psa.report.inputs import read_summary_markdown, read_trials_markdown
from schemas import loop_record, trial_record

SETTINGS = RunConfig("resmlp", 3, 11)


def sweep_record(arch: str, mode: str, trial: int, bounty: float, settings=SETTINGS) -> dict:
    """A record as sweep writes it, carrying its settings."""
    return trial_record(
        arch,
        mode,
        trial,
        bounty,
        hyperparameters=asdict(settings.hyper),
        meta_loops=settings.meta_loops,
        seeds={"base": settings.seed, "init": 1, "data": 2, "ablation": 3},
        seconds=1.5,
    )


def results_dir(path: Path, records: list[dict], settings: RunConfig | None = SETTINGS) -> Path:
    path.mkdir(parents=True)
    if settings is not None:
        (path / "settings.json").write_text(json.dumps(settings.flat(), indent=2) + "\n")
    (path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for record in records:
        slug = record["arch"].replace("*", "x")
        log = path / "logs" / slug / f"{record['mode']}-t{record['trial']}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        line = loop_record(record["arch"], record["mode"], record["trial"], 1, 50.0, 50.0)
        log.write_text(json.dumps({**line, "run_id": path.name}) + "\n")
    return path


def snapshot(*dirs: Path) -> dict[Path, bytes]:
    files = [path for d in dirs for path in sorted(d.rglob("*")) if path.is_file()]
    return {path: path.read_bytes() for path in files}


def refuse(capsys, argv: list[str]) -> str:
    """merge-results refusing ``argv``: exit status 1 and its one line, which is returned."""
    status, message = refusal(capsys, "merge-results", argv)
    assert status == 1 and message.startswith("merge-results: ")
    return message


def test_the_union_of_two_dirs_drops_exact_duplicates_and_writes_the_tables(tmp_path, capsys):
    first = [sweep_record("4*17", "none", 1, 90.0), sweep_record("4*17", "full", 1, 91.0)]
    a = results_dir(tmp_path / "a", first)
    duplicate = {**sweep_record("4*17", "full", 1, 91.0), "seconds": 7.0, "device": "cuda"}
    b = results_dir(tmp_path / "b", [duplicate, sweep_record("2*8", "none", 2, 80.0)])
    before = snapshot(a, b)
    out = tmp_path / "merged"
    merge_results.main(["--results-dir", str(out), str(a), str(b)])
    assert "3 trial records" in capsys.readouterr().out
    assert snapshot(a, b) == before
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    keys = [(r["arch"], r["mode"], r["trial"]) for r in records]
    assert sorted(keys) == sorted([("4*17", "none", 1), ("4*17", "full", 1), ("2*8", "none", 2)])
    kept = next(r for r in records if r["mode"] == "full")
    assert kept["seconds"] == 1.5  # the first input's record
    assert json.loads((out / "settings.json").read_text()) == SETTINGS.flat()
    log = out / "logs" / "4x17" / "full-t1.jsonl"
    assert json.loads(log.read_text())["run_id"] == "a"
    table = read_trials_markdown(out / "psa_resmlp_trials.md")
    cells = {(r.arch, r.mode, r.trial): r.accuracy for r in table.itertuples() if r.status == "ok"}
    assert cells == {("4*17", "none", 1): 90.0, ("4*17", "full", 1): 91.0, ("2*8", "none", 2): 80.0}
    summary = read_summary_markdown(out / "psa_resmlp_summary.md")
    assert set(summary["arch"]) == {"4*17", "2*8"}


def test_a_second_merge_into_the_same_dir_keeps_what_it_holds(tmp_path):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    b = results_dir(tmp_path / "b", [sweep_record("4*17", "none", 2, 92.0)])
    out = tmp_path / "merged"
    merge_results.main(["--results-dir", str(out), str(a)])
    merge_results.main(["--results-dir", str(out), str(b)])
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [(r["trial"], r["val_bounty"]) for r in records] == [(1, 90.0), (2, 92.0)]


@pytest.mark.parametrize(
    ("change", "difference"),
    [({"lr": 1e-3}, "lr 0.001 vs 0.0001"), ({"seed": 12}, "seed 12 vs 11")],
)
def test_other_settings_are_refused_in_one_line_and_nothing_is_written(
    tmp_path, change, difference, capsys
):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    other = RunConfig.from_flat({**SETTINGS.flat(), **change})
    b = results_dir(tmp_path / "b", [sweep_record("4*17", "none", 2, 90.0, other)], other)
    before = snapshot(a, b)
    out = tmp_path / "merged"
    message = refuse(capsys, ["--results-dir", str(out), str(a), str(b)])
    assert "other settings" in message and difference in message and str(b) in message
    if "lr" in change:  # as REPRODUCTION.md quotes it for its shards' dirs
        named = message.replace(str(b), "results/shard-b").replace(str(a), "results/shard-a")
        assert quoted("REPRODUCTION.md", "results/shard-b holds other settings") in named
    assert snapshot(a, b) == before
    assert not out.exists()


def test_settings_are_read_from_the_records_of_a_dir_without_a_settings_file(tmp_path, capsys):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    other = RunConfig.from_flat({**SETTINGS.flat(), "dropout": 0.2})
    b = results_dir(tmp_path / "b", [sweep_record("4*17", "none", 2, 90.0, other)], None)
    message = refuse(capsys, ["--results-dir", str(tmp_path / "merged"), str(a), str(b)])
    assert "dropout 0.2 vs 0.1" in message


def test_a_conflicting_duplicate_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "hidden", 3, 90.0)])
    b = results_dir(tmp_path / "b", [sweep_record("4*17", "hidden", 3, 90.01)])
    before = snapshot(a, b)
    out = tmp_path / "merged"
    message = refuse(capsys, ["--results-dir", str(out), str(a), str(b)])
    assert "[4*17] hidden trial 3 differs between" in message
    assert "val_bounty 90.0" in message and "val_bounty 90.01" in message
    assert snapshot(a, b) == before
    assert not out.exists()


def test_upstream_records_without_settings_are_refused(tmp_path, capsys):
    upstream = {"arch": "4*17", "model": "resmlp", "mode": "none", "trial": 1, "val_bounty": 90.0}
    a = results_dir(tmp_path / "a", [upstream], None)
    message = refuse(capsys, ["--results-dir", str(tmp_path / "m"), str(a)])
    assert "settings" in message and str(a) in message


def test_an_input_as_output_or_a_dir_without_records_is_refused(tmp_path, capsys):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    before = snapshot(a)
    assert "is the --results-dir itself" in refuse(capsys, ["--results-dir", str(a), str(a)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no trial records" in refuse(
        capsys, ["--results-dir", str(tmp_path / "m"), str(empty)]
    )
    assert snapshot(a) == before


def finished_sweep_dir(path: Path, records: list[dict]) -> Path:
    """A results dir as a finished sweep leaves it: trials.jsonl merged from its batches' own
    record files, which stay beside it."""
    results_dir(path, records)
    (path / "records").mkdir()
    (path / "records" / "batch-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_sweeps_results_dir_or_the_shipped_set_is_refused_as_the_output(tmp_path, capsys):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    sweep = finished_sweep_dir(tmp_path / "sweep", [sweep_record("4*17", "none", 2, 92.0)])
    shipped = results_dir(tmp_path / "shipped", [sweep_record("4*17", "none", 3, 93.0)])
    (shipped / "SHIPPED.md").write_text("the shipped set\n")
    before = snapshot(a, sweep, shipped)
    message = refuse(capsys, ["--results-dir", str(sweep), str(a)])
    assert f"--results-dir {sweep} is a sweep's results dir" in message
    assert "give a new --results-dir" in message
    # The shipped set is refused as every writer refuses it: a usage error (exit 2).
    status, message = refusal(capsys, "merge-results", ["--results-dir", str(shipped), str(a)])
    assert status == 2 and "the results set shipped with psa" in message
    assert snapshot(a, sweep, shipped) == before
    assert not (sweep / "provenance").exists() and not (shipped / "provenance").exists()
    # As an input, the sweep's dir merges; and a previous merge's dir takes more.
    merged = tmp_path / "merged"
    merge_results.main(["--results-dir", str(merged), str(sweep)])
    merge_results.main(["--results-dir", str(merged), str(a)])
    records = [json.loads(line) for line in (merged / "trials.jsonl").read_text().splitlines()]
    assert sorted(r["trial"] for r in records) == [1, 2]


def test_a_missing_input_is_a_usage_error(tmp_path, capsys):
    missing = str(tmp_path / "x")
    with pytest.raises(SystemExit) as refused:
        merge_results.main(["--results-dir", str(tmp_path / "m"), missing])
    assert refused.value.code == 2
    assert f"{missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def move_out_and_link(path: Path, outside: Path) -> None:
    """Move ``path`` to ``outside`` and leave a symlink to it in its place."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    path.rename(outside)
    path.symlink_to(outside)


def test_merge_refuses_a_loop_log_symlinked_to_a_secret_outside_its_inputs(tmp_path, capsys):
    secret = tmp_path / "home" / ".env"
    secret.parent.mkdir()
    secret.write_text("AWS_SECRET_ACCESS_KEY=do-not-leak\n")
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    log = a / "logs" / "4x17" / "none-t1.jsonl"
    log.unlink()
    log.symlink_to(secret)
    out = tmp_path / "merged"
    message = refuse(capsys, ["--results-dir", str(out), str(a)])
    assert f"{log} leads by a symlink to {secret}, outside the dirs merged" in message
    assert f"leave {a} out" in message
    assert "do-not-leak" not in message
    assert not out.exists()


@pytest.mark.parametrize(
    "name",
    [
        "settings.json",
        "plan.json",
        "trials.jsonl",
        "records/b1.jsonl",
        "logs/4x17/none-t1.jsonl",
        "logs/4x17",
        "provenance/20250101T000000000000Z-abcdef.json",
        "provenance/20250101T000000000000Z-abcdef.diff",
    ],
)
def test_merge_refuses_every_kind_of_file_it_copies_symlinked_outside_its_inputs(
    tmp_path, capsys, name
):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    (a / "plan.json").write_text("{}\n")
    (a / "records").mkdir()
    (a / "records" / "b1.jsonl").write_text(json.dumps(sweep_record("4*17", "full", 1, 91.0)))
    (a / "provenance").mkdir()
    (a / "provenance" / "20250101T000000000000Z-abcdef.json").write_text('{"id": "x"}\n')
    (a / "provenance" / "20250101T000000000000Z-abcdef.diff").write_text("diff\n")
    outside = tmp_path / "elsewhere" / "file"
    move_out_and_link(a / name, outside)
    out = tmp_path / "merged"
    message = refuse(capsys, ["--results-dir", str(out), str(a)])
    assert f"leads by a symlink to {outside}" in message and "outside the dirs merged" in message
    assert not out.exists()


def test_a_symlink_from_one_input_into_another_is_merged(tmp_path, capsys):
    a = results_dir(tmp_path / "a", [sweep_record("4*17", "none", 1, 90.0)])
    b = results_dir(tmp_path / "b", [sweep_record("4*17", "none", 2, 92.0)])
    log = b / "logs" / "4x17" / "none-t2.jsonl"
    move_out_and_link(log, a / "logs" / "4x17" / "kept-t2.jsonl")
    out = tmp_path / "merged"
    merge_results.main(["--results-dir", str(out), str(a), str(b)])
    assert "2 trial records" in capsys.readouterr().out
    copied = out / "logs" / "4x17" / "none-t2.jsonl"
    assert not copied.is_symlink() and copied.read_bytes() == log.read_bytes()
