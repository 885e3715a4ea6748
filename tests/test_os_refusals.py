"""What the operating system refuses ends a command with one line, the right cause and advice
that keeps saved progress: a file where a folder is needed, a full disk, no permission to write
(a finished dir that may not be written reruns all the same), damaged batch states and files
that are not UTF-8 text."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import safetensors.torch
from safetensors import safe_open

from command_support import refusal
from psa.cli import run as run_command
from psa.store import ResultsStore
from psa.store.results import BATCH_METADATA_KEY
from psa.sweep import runner
from psa.sweep.events import LoopDone


def sweep_argv(results: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        *("--arch", "[1*2]", "--modes", "none", "--trials", "1", "--meta-loops", "2"),
        *("--seed", "11", "--device", "cpu", "--data-dir", str(data_dir)),
        *("--results-dir", str(results), *extra),
    ]


def train_argv(model_dir: Path, data_dir: Path) -> list[str]:
    return [
        *("--arch", "[1*2]", "--meta-loops", "1", "--seed", "1", "--device", "cpu"),
        *("--data-dir", str(data_dir), "--model-dir", str(model_dir)),
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, repo_dataset) -> Path:
    results = tmp_path_factory.mktemp("finished") / "R"
    assert run_command("sweep", sweep_argv(results, repo_dataset)) == 0
    return results


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, repo_dataset) -> Path:
    """A sweep stopped after its first of two loops: its batch state is saved."""
    results = tmp_path_factory.mktemp("stopped") / "R"

    def stop_after_first_loop(event) -> None:
        if isinstance(event, LoopDone):
            signal.raise_signal(signal.SIGINT)

    request = runner_request(results, repo_dataset)
    with pytest.raises(KeyboardInterrupt):
        runner.run(request, stop_after_first_loop)
    [state] = (results / "batches").glob("*.safetensors")
    assert state.is_file()
    return results


def runner_request(results: Path, data_dir: Path):
    from psa.commands.sweep import build_parser, request_of

    return request_of(build_parser().parse_args(sweep_argv(results, data_dir)))


@pytest.mark.parametrize(
    ("command", "flag"),
    [("sweep", "--results-dir"), ("train", "--model-dir"), ("merge-results", "--results-dir")],
)
def test_a_file_where_a_folder_is_needed_is_named_in_one_line(
    tmp_path, repo_dataset, finished, capsys, command, flag
):
    blocking = tmp_path / "F"
    blocking.write_text("mine\n")
    argv = {
        "sweep": sweep_argv(blocking / "sub", repo_dataset),
        "train": train_argv(blocking, repo_dataset),
        "merge-results": ["--results-dir", str(blocking / "sub"), str(finished)],
    }[command]
    assert flag in argv
    status, line = refusal(capsys, command, argv)
    assert status == 1
    assert (
        line
        == f"{command}: {blocking} is a file where a folder is needed; give a folder's path instead"
    )
    assert blocking.read_text() == "mine\n"


@pytest.fixture
def small_disk(tmp_path):
    """A 48 KiB file system: a sweep's batch state of [1*8] does not fit on it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_one_line_that_keeps_what_was_saved(small_disk, repo_dataset, capsys):
    results = small_disk / "R"
    argv = sweep_argv(results, repo_dataset)
    argv[argv.index("[1*2]")] = "[1*8]"
    status, line = refusal(capsys, "sweep", argv)
    assert status == 1
    assert line.startswith("sweep: no space left on the device")
    assert line.endswith(
        "; free some space and rerun the same command (what was saved before is kept)"
    )
    assert json.loads((results / "settings.json").read_text())["seed"] == 11


def immutable(path: Path):
    done = subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here ({done.stderr.decode().strip()})")


def test_a_finished_dir_that_may_not_be_written_reruns_and_a_new_trial_is_refused(
    tmp_path, finished, repo_dataset, capsys
):
    results = tmp_path / "R"
    shutil.copytree(finished, results)
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    immutable(results)
    try:
        assert run_command("sweep", sweep_argv(results, repo_dataset)) == 0
        assert "Nothing to run: every trial is recorded" in capsys.readouterr().out
        status, line = refusal(capsys, "sweep", sweep_argv(results, repo_dataset, "--trials", "2"))
        assert status == 1
        assert line.startswith(f"sweep: permission denied for {results}")
        assert "what is there was left as it is" in line
    finally:
        subprocess.run(["chattr", "-R", "-i", str(results)], check=True)
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before


def rewrite_state(path: Path, tensors: dict | None = None, **changes) -> None:
    loaded = safetensors.torch.load_file(path)
    with safe_open(path, framework="pt") as handle:
        metadata = json.loads(handle.metadata()[BATCH_METADATA_KEY])
    metadata.update(changes)
    for key in [key for key, value in changes.items() if value is None]:
        del metadata[key]
    payload = safetensors.torch.save(
        loaded if tensors is None else tensors,
        metadata={"format": "pt", BATCH_METADATA_KEY: json.dumps(metadata)},
    )
    path.write_bytes(payload)


@pytest.mark.parametrize(
    "damage", ["not safetensors", "missing key", "bounty loops", "misshaped lkg", "extra tensor"]
)
def test_a_damaged_batch_state_is_one_line_that_keeps_the_file(
    tmp_path, stopped, repo_dataset, capsys, damage
):
    results = tmp_path / "R"
    shutil.copytree(stopped, results)
    [state] = (results / "batches").glob("*.safetensors")
    lkg = safetensors.torch.load_file(state)["lkg"]
    if damage == "not safetensors":
        state.write_bytes(b"\x00" * 64)
    elif damage == "missing key":
        rewrite_state(state, loops_completed=None)
    elif damage == "bounty loops":
        rewrite_state(state, bounty_loops=[1, 2, 3])
    elif damage == "misshaped lkg":
        rewrite_state(state, {"lkg": lkg[:-1].clone()})
    else:
        rewrite_state(state, {"lkg": lkg, "other": lkg.clone()})
    before = state.read_bytes()
    status, line = refusal(capsys, "sweep", sweep_argv(results, repo_dataset))
    assert status == 1
    assert str(state) in line and "move" in line and "out of the results dir" in line
    assert "delete" not in line and "No such file" not in line
    assert state.read_bytes() == before


@pytest.mark.parametrize("name", ["plan.json", "settings.json"])
def test_a_results_file_that_is_not_utf8_is_one_line(
    tmp_path, finished, repo_dataset, capsys, name
):
    results = tmp_path / "R"
    shutil.copytree(finished, results)
    (results / name).write_bytes(b"\xff\xfe{")
    status, line = refusal(capsys, "sweep", sweep_argv(results, repo_dataset))
    assert status == 1 and f"{name} is unreadable" in line
    status, line = refusal(capsys, "sweep", ["--status", "--results-dir", str(results)])
    assert status == 1 and f"{name} is unreadable" in line
    assert (results / name).read_bytes() == b"\xff\xfe{"


def test_a_configs_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    configs = tmp_path / "configs.txt"
    configs.write_bytes(b"[1*2]\n\xff\xfe\n")
    argv = ["--configs", str(configs), "--results-dir", str(tmp_path / "R"), "--dry-run"]
    status, line = refusal(capsys, "sweep", argv)
    assert status in (1, 2) and "is not UTF-8 text" in line


def test_the_store_reads_a_saved_batch_state_back(stopped):
    [state] = (stopped / "batches").glob("*.safetensors")
    store = ResultsStore(stopped)
    arch = runner_request(stopped, Path(".")).archs[0]
    [saved] = store.saved_batches(arch)
    assert saved.loops_completed == 1 and saved.key == state.stem
