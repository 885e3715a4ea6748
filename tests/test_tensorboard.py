"""TensorBoard event files equal the loop logs, read back with TensorBoard's own readers: written
live by sweep and train (also across a stop and a resume), and rebuilt by export-tensorboard
after a merge."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.util.tensor_util import make_ndarray

from psa.cli import run
from psa.commands import export, merge_results, train
from psa.commands import sweep as sweep_command
from psa.store import ResultsStore
from psa.store.tensorboard import EVENT_FILE, TENSORBOARD_DIR
from psa.sweep import runner as sweep_runner
from psa.sweep.runner import BatchRunner

ARCHS, MODES, TRIALS, LOOPS, SEED = ("[1*8]", "[2*4]"), "none,hidden", 2, 3, 3


def sweep_argv(results: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        *[flag for arch in ARCHS for flag in ("--arch", arch)],
        *("--modes", MODES, "--trials", str(TRIALS), "--meta-loops", str(LOOPS)),
        *("--seed", str(SEED), "--results-dir", str(results), "--data-dir", str(data_dir)),
        *("--device", "cpu", *extra),
    ]


@pytest.fixture
def small_data(monkeypatch, mnist_small):
    monkeypatch.setattr(sweep_runner, "load_mnist", lambda *args, **kwargs: mnist_small)
    monkeypatch.setattr(train, "load_mnist", lambda *args, **kwargs: mnist_small)


def events(run: Path) -> list[tuple[int, dict]]:
    """Every scalar event of a run's files, in file order (duplicates would show)."""
    found = []
    for path in sorted(run.glob("events.out.tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary"):
                # The loader migrates simple values to scalar tensors, as TensorBoard shows them.
                values = {v.tag: float(make_ndarray(v.tensor)) for v in event.summary.value}
                found.append((event.step, values))
    return found


def expected(lines: list[dict]) -> list[tuple[int, dict]]:
    def f32(value: float) -> float:  # simple_value is a float32
        import numpy

        return float(numpy.float32(value))

    return [
        (
            line["loop"],
            {
                "accuracy/validation": f32(line["val_accuracy"]),
                "accuracy/lkg": f32(line["lkg_accuracy"]),
                "promotion": 1.0 if line["promoted"] else 0.0,
            },
        )
        for line in lines
    ]


def assert_events_equal_logs(results: Path) -> None:
    store = ResultsStore(results)
    logs = {}
    for path in store.log_files():
        slug, name = path.parent.name, path.stem
        mode, trial = name.rsplit("-t", 1)
        logs[f"{slug}/{mode}/t{trial}"] = [json.loads(x) for x in path.read_text().splitlines()]
    board = results / TENSORBOARD_DIR
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(board))
    multiplexer.Reload()
    assert set(multiplexer.Runs()) == set(logs)
    for name, lines in logs.items():
        assert [line["loop"] for line in lines] == list(range(1, LOOPS + 1))
        assert events(board / name) == expected(lines)
        scalars = multiplexer.Scalars(name, "accuracy/lkg")
        assert [s.step for s in scalars] == [line["loop"] for line in lines]


def test_a_sweep_with_tensorboard_writes_one_run_per_trial_equal_to_its_log(
    tmp_path, repo_dataset, small_data
):
    results = tmp_path / "results"
    sweep_command.main(sweep_argv(results, repo_dataset, "--tensorboard"))
    assert_events_equal_logs(results)
    runs = sorted(
        p.parent.relative_to(results / TENSORBOARD_DIR).as_posix()
        for p in (results / TENSORBOARD_DIR).glob(f"*/*/*/{EVENT_FILE}")
    )
    assert runs[:2] == ["1x8/hidden/t1", "1x8/hidden/t2"] and len(runs) == 8

    # Rebuilt from the logs, the files are the same bytes; a run without a log goes.
    before = {p: p.read_bytes() for p in (results / TENSORBOARD_DIR).rglob(EVENT_FILE)}
    stale = results / TENSORBOARD_DIR / "9x9" / "none" / "t1"
    stale.mkdir(parents=True)
    (stale / EVENT_FILE).write_bytes(b"")
    export.tensorboard_main(["--results-dir", str(results)])
    assert {p: p.read_bytes() for p in (results / TENSORBOARD_DIR).rglob(EVENT_FILE)} == before


def test_a_stopped_and_resumed_sweep_repeats_and_skips_no_step(
    tmp_path, repo_dataset, small_data, monkeypatch
):
    results = tmp_path / "results"
    save = BatchRunner._save
    calls = []

    def stop_at_second_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # loop 2's lines and events are written, its state is not
            raise KeyboardInterrupt
        return save(self, *args, **kwargs)

    monkeypatch.setattr(BatchRunner, "_save", stop_at_second_save)
    with pytest.raises(SystemExit) as stopped:
        sweep_command.main(sweep_argv(results, repo_dataset, "--tensorboard"))
    assert stopped.value.code == 130
    # The batch that ran first (the costliest by the cost model) has loops 1 and 2 written, and
    # loop 2 not committed; no other batch has started.
    started = sorted((results / TENSORBOARD_DIR).glob("*/none/t1"))
    assert len(started) == 1
    assert [step for step, _ in events(started[0])] == [1, 2]
    monkeypatch.setattr(BatchRunner, "_save", save)

    sweep_command.main(sweep_argv(results, repo_dataset, "--tensorboard"))
    assert_events_equal_logs(results)


def test_export_tensorboard_after_merge_results_equals_the_merged_logs(
    tmp_path, repo_dataset, small_data
):
    first, second, merged = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    sweep_command.main(sweep_argv(first, repo_dataset, "--shard", "1/2"))
    sweep_command.main(sweep_argv(second, repo_dataset, "--shard", "2/2"))
    merge_results.main(["--results-dir", str(merged), str(first), str(second)])
    export.tensorboard_main(["--results-dir", str(merged)])
    assert_events_equal_logs(merged)


def test_train_with_tensorboard_continues_its_run_across_a_resume(
    tmp_path, repo_dataset, small_data
):
    model_dir = tmp_path / "model"
    argv = ["--arch", "[1*8]", "--seed", "4", "--batch-size", "64", "--device", "cpu"]
    argv += ["--model-dir", str(model_dir), "--data-dir", str(repo_dataset), "--tensorboard"]
    train.main([*argv, "--meta-loops", "2"])
    train.main([*argv, "--meta-loops", "2"])
    lines = [
        json.loads(line)
        for path in sorted(model_dir.glob("mnist_lkg.*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert [line["loop"] for line in lines] == [1, 2, 3, 4]
    assert events(model_dir / TENSORBOARD_DIR / "1x8" / "none" / "t1") == expected(lines)
    # export-tensorboard rebuilds the same file from the run logs.
    run = model_dir / TENSORBOARD_DIR / "1x8" / "none" / "t1" / EVENT_FILE
    written = run.read_bytes()
    shutil.rmtree(model_dir / TENSORBOARD_DIR)
    export.tensorboard_main(["--model-dir", str(model_dir)])
    assert run.read_bytes() == written


@pytest.mark.parametrize("command", ["sweep", "train", "export-tensorboard"])
def test_without_tensorboard_installed_the_flag_is_refused_before_anything_is_written(
    tmp_path, repo_dataset, monkeypatch, capsys, command
):
    for name in [n for n in sys.modules if n.split(".")[0] == "tensorboard"]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    target = tmp_path / "out"
    argv = {
        "sweep": sweep_argv(target, repo_dataset, "--tensorboard"),
        # Small enough that a refusal that does not happen fails in seconds, not a default run.
        "train": [
            *("--arch", "[1*8]", "--meta-loops", "1", "--data-dir", str(repo_dataset)),
            *("--model-dir", str(target), "--device", "cpu", "--tensorboard"),
        ],
        "export-tensorboard": ["--results-dir", str(target)],
    }[command]
    if command == "export-tensorboard":
        shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "logs", target / "logs")
    assert run(command, argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the optional extra tensorboard" in err
    assert not (target / TENSORBOARD_DIR).exists()
    if command != "export-tensorboard":
        assert not target.exists()


def test_export_tensorboard_names_tensorboard_as_the_user_runs_commands(
    tmp_path, monkeypatch, capsys
):
    """tensorboard is a command of psa's environment, reached as psa's commands are."""
    shipped = Path(__file__).resolve().parents[1] / "results"
    results = tmp_path / "results"
    results.mkdir()
    for name in ("settings.json", "trials.jsonl"):
        shutil.copy(shipped / name, results / name)
    shutil.copytree(shipped / "logs", results / "logs")
    monkeypatch.setenv("PSA_RUN_PREFIX", "scripts/poetry run")
    assert run("export-tensorboard", ["--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(
        f"view with: scripts/poetry run tensorboard --logdir {results / TENSORBOARD_DIR}"
    ), out
