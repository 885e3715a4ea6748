"""TensorBoard event files equal the loop logs, and their HParams and test accuracy the trial
records, read back with TensorBoard's own readers (and its server): written live by sweep and
train (also across a stop and a resume), and rebuilt by export-tensorboard after a merge."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util.tensor_util import make_ndarray

from psa import results as results_tables
from psa.cli import run
from psa.commands import export, merge_results, train
from psa.commands import sweep as sweep_command
from psa.store import ResultsStore
from psa.store.tensorboard import EVENT_FILE, TENSORBOARD_DIR
from psa.sweep import runner as sweep_runner
from psa.sweep.runner import BatchRunner

ROOT = Path(__file__).resolve().parents[1]
ARCHS, MODES, TRIALS, LOOPS, SEED = ("[1*8]", "[2*4]"), "none,hidden", 2, 3, 3
# The HParams of every run: the trials table's columns of the same names.
HPARAMS = {
    "arch", "depth", "width", "parameters", "model", "mode", "trial",
    "seeds.run", "seeds.init", "seeds.data", "seeds.ablation",
    "hyperparameters.lr", "hyperparameters.batch_size", "hyperparameters.weight_decay",
    "hyperparameters.dropout", "hyperparameters.precision", "hyperparameters.hidden_targets",
    "hyperparameters.full_sampling",
}  # fmt: skip
SWEEP_HPARAMS = HPARAMS | {"seeds.base"}


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
            values = {
                # The loader migrates simple values to scalar tensors, as TensorBoard shows them.
                v.tag: float(make_ndarray(v.tensor))
                for v in event.summary.value
                if v.metadata.plugin_data.plugin_name != hparams_metadata.PLUGIN_NAME
            }
            if values:
                found.append((event.step, values))
    return found


def f32(value: float) -> float:  # simple_value is a float32
    return float(numpy.float32(value))


def expected(lines: list[dict], tests: dict[int, float] | None = None) -> list[tuple[int, dict]]:
    found = []
    for line in lines:
        values = {
            "accuracy/validation": f32(line["val_accuracy"]),
            "accuracy/lkg": f32(line["lkg_accuracy"]),
            "promotion": 1.0 if line["promoted"] else 0.0,
        }
        found.append((line["loop"], values))
        if tests and line["loop"] in tests:
            found.append((line["loop"], {"accuracy/test": f32(tests[line["loop"]])}))
    return found


def loaded(board: Path) -> EventMultiplexer:
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(board))
    multiplexer.Reload()
    return multiplexer


def session_hparams(multiplexer: EventMultiplexer) -> dict[str, dict]:
    """Each run's HParams as the hparams plugin reads them, by run."""
    found = {}
    for name, tags in multiplexer.PluginRunToTagToContent(hparams_metadata.PLUGIN_NAME).items():
        start = hparams_metadata.parse_session_start_info_plugin_data(
            tags[hparams_metadata.SESSION_START_INFO_TAG]
        )
        assert start.group_name == name
        found[name] = {key: getattr(v, v.WhichOneof("kind")) for key, v in start.hparams.items()}
    return found


def table_hparams(row) -> dict:
    """The HParams a trials-table row says its run has: seeds as decimal strings."""
    return {
        name: str(int(row[name])) if name.startswith("seeds.") else row[name]
        for name in row.index
        if name in SWEEP_HPARAMS and row[name] == row[name]  # no NaN: a column it lacks
    }


def run_of(row) -> str:
    return f"{row['arch'].replace('*', 'x').replace(', ', '-')}/{row['mode']}/t{row['trial']}"


def assert_runs_equal_records(results: Path, multiplexer: EventMultiplexer) -> None:
    """Every run of a recorded trial has its record's HParams, and its test accuracy at its last
    loop, as the trials table shows them."""
    trials = results_tables.load(results).trials
    assert len(trials) > 0
    hparams = session_hparams(multiplexer)
    for _, row in trials.iterrows():
        name = run_of(row)
        assert hparams[name] == table_hparams(row)
        assert set(hparams[name]) == SWEEP_HPARAMS
        [test] = multiplexer.Scalars(name, "accuracy/test")
        assert (test.step, test.value) == (row["loops_run"], f32(row["test_accuracy"]))


def assert_events_equal_logs(results: Path) -> None:
    store = ResultsStore(results)
    logs = {}
    for path in store.log_files():
        slug, name = path.parent.name, path.stem
        mode, trial = name.rsplit("-t", 1)
        logs[f"{slug}/{mode}/t{trial}"] = [json.loads(x) for x in path.read_text().splitlines()]
    tests = {
        f"{r['arch'].replace('*', 'x')}/{r['mode']}/t{r['trial']}": r["test_accuracy"]
        for r in store.records()
    }
    board = results / TENSORBOARD_DIR
    multiplexer = loaded(board)
    assert set(multiplexer.Runs()) == set(logs) == set(tests)
    for name, lines in logs.items():
        assert [line["loop"] for line in lines] == list(range(1, LOOPS + 1))
        assert events(board / name) == expected(lines, {LOOPS: tests[name]})
        scalars = multiplexer.Scalars(name, "accuracy/lkg")
        assert [s.step for s in scalars] == [line["loop"] for line in lines]
    assert_runs_equal_records(results, multiplexer)


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
    # Not recorded yet, the run has the HParams its record will give it.
    name = started[0].relative_to(results / TENSORBOARD_DIR).as_posix()
    unrecorded = session_hparams(loaded(results / TENSORBOARD_DIR))[name]
    assert set(unrecorded) == SWEEP_HPARAMS
    monkeypatch.setattr(BatchRunner, "_save", save)

    sweep_command.main(sweep_argv(results, repo_dataset, "--tensorboard"))
    assert_events_equal_logs(results)
    assert session_hparams(loaded(results / TENSORBOARD_DIR))[name] == unrecorded


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
    tmp_path, repo_dataset, small_data, capsys
):
    model_dir = tmp_path / "model"
    argv = ["--arch", "[1*8]", "--seed", "4", "--batch-size", "64", "--device", "cpu"]
    argv += ["--model-dir", str(model_dir), "--data-dir", str(repo_dataset), "--tensorboard"]
    printed = []
    for _ in range(2):
        train.main([*argv, "--meta-loops", "2"])
        [line] = [x for x in capsys.readouterr().out.splitlines() if "Final Test Accuracy" in x]
        printed.append(float(line.split(": ")[1].rstrip("%")))
    lines = [
        json.loads(line)
        for path in sorted(model_dir.glob("mnist_lkg.*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert [line["loop"] for line in lines] == [1, 2, 3, 4]
    board = model_dir / TENSORBOARD_DIR
    found = events(board / "1x8" / "none" / "t1")
    # Each train run's final test accuracy, at its last loop.
    tests = {step: values["accuracy/test"] for step, values in found if "accuracy/test" in values}
    assert list(tests) == [2, 4]
    assert [round(value, 2) for value in tests.values()] == pytest.approx(printed)
    assert found == expected(lines, tests)
    hparams = session_hparams(loaded(board))["1x8/none/t1"]
    assert set(hparams) == HPARAMS
    assert hparams["seeds.run"] == "4" and hparams["hyperparameters.batch_size"] == 64
    assert (hparams["arch"], hparams["mode"], hparams["trial"]) == ("1*8", "none", 1)

    # export-tensorboard rebuilds the same file from the run logs, the checkpoint's settings and
    # the test accuracies the run holds; train keeps those nowhere else.
    run = board / "1x8" / "none" / "t1" / EVENT_FILE
    written = run.read_bytes()
    export.tensorboard_main(["--model-dir", str(model_dir)])
    assert run.read_bytes() == written
    shutil.rmtree(board)
    export.tensorboard_main(["--model-dir", str(model_dir)])
    assert events(run.parent) == expected(lines)
    assert session_hparams(loaded(board))["1x8/none/t1"] == hparams


def shipped(target: Path, slugs: tuple[str, ...] | None = None) -> Path:
    """A copy of the shipped results' records, settings and loop logs (of ``slugs`` only, when
    given) to export, without its figures and tables."""
    source = ROOT / "results"
    target.mkdir()
    shutil.copy(source / "settings.json", target)
    records = (source / "trials.jsonl").read_text().splitlines(keepends=True)
    kept = [r for r in records if not slugs or run_of(json.loads(r)).split("/")[0] in slugs]
    (target / "trials.jsonl").write_text("".join(kept))
    for folder in sorted((source / "logs").iterdir()):
        if not slugs or folder.name in slugs:
            shutil.copytree(folder, target / "logs" / folder.name)
    return target


def test_export_tensorboard_gives_each_shipped_run_its_records_hparams_and_test_accuracy(
    tmp_path, capsys
):
    results = shipped(tmp_path / "results", ("1x1", "4x17", "18x18"))
    export.tensorboard_main(["--results-dir", str(results)])
    assert capsys.readouterr().out.startswith("54 runs in ")
    multiplexer = loaded(results / TENSORBOARD_DIR)
    assert len(multiplexer.Runs()) == 54
    assert_runs_equal_records(results, multiplexer)


def test_export_tensorboard_writes_the_same_bytes_in_every_process(tmp_path):
    """The HParams are a protobuf map, which serializes in an order of the process's hash seed
    unless asked for a deterministic one."""
    written = []
    for hash_seed in ("1", "2"):
        results = shipped(tmp_path / f"results-{hash_seed}", ("4x17",))
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run(
            [sys.executable, "-m", "psa", "export-tensorboard", "--results-dir", str(results)],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        board = results / TENSORBOARD_DIR
        written.append({p.relative_to(board): p.read_bytes() for p in board.rglob(EVENT_FILE)})
    assert len(written[0]) == 18 and written[0] == written[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hparams_api(port: int, route: str, request: dict) -> dict:
    """POST ``request`` to the hparams plugin's ``route`` of a local TensorBoard (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    posted = urllib.request.Request(
        f"http://127.0.0.1:{port}/data/plugin/hparams/{route}",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    with opener.open(posted, timeout=10) as answer:
        return json.load(answer)


STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def test_tensorboard_lists_every_shipped_run_with_its_hparams_and_metrics(tmp_path):
    results = shipped(tmp_path / "results")
    export.tensorboard_main(["--results-dir", str(results)])
    trials = results_tables.load(results).trials
    assert len(trials) == 360
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(results / TENSORBOARD_DIR)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(tmp_path / "tensorboard.log", "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        groups, deadline = {"totalSize": 0}, time.monotonic() + 90
        while groups.get("totalSize") != len(trials) and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()
            time.sleep(0.5)
            try:
                request = {"allowedStatuses": STATUSES, "startIndex": 0, "sliceSize": 1000}
                groups = hparams_api(port, "session_groups", request)
            except OSError:  # not listening yet, or still loading the runs
                continue
        experiment = hparams_api(port, "experiment", {"includeMetrics": True})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert {info["name"] for info in experiment["hparamInfos"]} == SWEEP_HPARAMS
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert metrics == {"accuracy/validation", "accuracy/lkg", "accuracy/test", "promotion"}
    listed = {group["name"]: group for group in groups["sessionGroups"]}
    assert groups["totalSize"] == len(listed) == len(trials)
    for _, row in trials.iterrows():
        group = listed[run_of(row)]
        assert group["hparams"] == table_hparams(row)
        values = {m["name"]["tag"]: m for m in group["metricValues"]}
        assert values["accuracy/test"]["value"] == f32(row["test_accuracy"])
        assert values["accuracy/test"]["trainingStep"] == row["loops_run"]
        assert values["accuracy/lkg"]["value"] == f32(row["val_bounty"])


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
