"""``generate-reproduction-tests``: a runnable script with one command per line and every trial."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from command_support import refusal
from psa.commands import reproduction, train
from psa.modes import MODES

# train's own flags, read from its parser: a flag renamed or dropped there fails here.
TRAINER_FLAGS = {flag for action in train.build_parser()._actions for flag in action.option_strings}


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    path = tmp_path / "configs.txt"
    path.write_text("# two small ones\n2*4\n\n[1*8, 2*4]  # mixed\n")
    return path


@pytest.fixture
def generated(tmp_path: Path, configs: Path, capsys) -> tuple[Path, str]:
    script = tmp_path / "repo" / "reproduction" / "run_reproduction.sh"
    reproduction.main(
        ["--configs", str(configs), "--output", str(script), "--trials", "3", "--meta-loops", "5"]
    )
    return script, capsys.readouterr().out


def train_lines(script: Path) -> list[list[str]]:
    return [
        shlex.split(line)[1:]
        for line in script.read_text().splitlines()
        if line.startswith("trial scripts/poetry run train ")
    ]


def flags(words: list[str]) -> dict[str, str]:
    pairs = words[3:]
    assert len(pairs) % 2 == 0, words
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def test_the_script_is_valid_bash(generated):
    script, _ = generated
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_every_line_is_a_comment_or_exactly_one_command(generated):
    script, _ = generated
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    for line in lines[lines.index("") :]:
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        assert not {";", "&&", "||", "|", "&"} & set(words), line
        if words[0] == "trial":
            words = words[1:]
        assert words[:3] in (["scripts/poetry", "run", "train"], ["echo", words[1]]), line
        if words[0] != "echo":
            parsed = flags(words)
            assert set(parsed) <= TRAINER_FLAGS, line
            train.build_parser().parse_args(words[3:])  # and train takes the line as written
            assert len(parsed) == (len(words) - 3) // 2, f"repeated flag in {line}"


def test_every_trial_of_every_mode_and_arch_is_run_once_in_its_own_model_dir(generated):
    script, _ = generated
    runs = [flags(words) for words in train_lines(script)]
    assert len(runs) == 2 * len(MODES) * 3
    combos = {(run["--arch"], run["--ablation-mode"], run["--model-dir"]) for run in runs}
    assert len(combos) == len(runs)
    assert len({run["--model-dir"] for run in runs}) == len(runs)
    assert {run["--arch"] for run in runs} == {"[2*4]", "[1*8, 2*4]"}
    assert "./models/repro/1x8-2x4_hidden_t3/" in {run["--model-dir"] for run in runs}
    assert all(run["--meta-loops"] == "5" for run in runs)


def test_modes_carry_their_hyperparameter_and_only_theirs(generated):
    script, _ = generated
    for run in map(flags, train_lines(script)):
        mode = run["--ablation-mode"]
        assert ("--weight-decay" in run) == (mode == "decay")
        assert ("--dropout" in run) == (mode == "dropout")
        if mode == "decay":
            assert float(run["--weight-decay"]) == 1e-4
        if mode == "dropout":
            assert float(run["--dropout"]) == 0.1


def test_a_trial_index_shares_its_seed_across_modes_and_trials_differ(generated):
    script, _ = generated
    seeds = defaultdict(set)
    for run in map(flags, train_lines(script)):
        trial = run["--model-dir"].rstrip("/").rsplit("_t", 1)[1]
        seeds[trial].add(run["--seed"])
    assert all(len(values) == 1 for values in seeds.values())
    assert len({next(iter(values)) for values in seeds.values()}) == 3


def test_the_same_arguments_write_the_same_script(generated, configs, tmp_path):
    script, _ = generated
    again = tmp_path / "again.sh"
    reproduction.main(
        ["--configs", str(configs), "--output", str(again), "--trials", "3", "--meta-loops", "5"]
    )
    assert again.read_text() == script.read_text()
    reproduction.main(["--configs", str(configs), "--output", str(again), "--seed", "7"])
    assert again.read_text() != script.read_text()


def test_stdout_lists_six_commands_per_architecture(generated):
    _, output = generated
    lines = output.splitlines()
    assert lines[0] == "=== Individual Commands ==="
    assert lines[1] == "# Architecture: [2*4] (2x4)"
    assert [shlex.split(line)[6] for line in lines[2:8]] == list(MODES)
    assert "# Architecture: [1*8, 2*4] (1x8-2x4)" in lines
    assert "=== Batch Script Generation ===" in lines


def fake_repo(script: Path, fail_on: str | None = None) -> Path:
    """A repo root whose scripts/poetry records each call and fails the one matching fail_on."""
    root = script.parent.parent
    (root / "scripts").mkdir(exist_ok=True)
    poetry = root / "scripts" / "poetry"
    # Like train, it creates the model dir, and leaves a checkpoint there when it fails.
    make_dir = 'for a in "$@"; do [ "${p:-}" = --model-dir ] && dir=$a; p=$a; done; mkdir -p "$dir"'
    check = f'case "$*" in *{fail_on}*) touch "$dir/mnist_lkg.safetensors"; exit 3;; esac'
    poetry.write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> calls.log\n{make_dir}\n'
        f"{check if fail_on else ''}\n"
    )
    poetry.chmod(0o755)
    return root


def run_script(script: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], cwd=root, capture_output=True, text=True)


def test_the_script_runs_every_command_with_its_arguments_intact(generated):
    script, _ = generated
    root = fake_repo(script)
    finished = run_script(script, root)
    assert finished.returncode == 0, finished.stderr
    calls = (root / "calls.log").read_text().splitlines()
    assert len(calls) == 36
    assert calls[0].startswith("run train --arch [2*4] --ablation-mode none")
    assert "all 36 runs finished" in finished.stdout


def test_the_first_failure_stops_the_script_and_names_the_command(generated):
    script, _ = generated
    root = fake_repo(script, fail_on="2x4_full_t2/")
    finished = run_script(script, root)
    assert finished.returncode != 0
    assert "stopped at the first failure; this command failed (exit 3): " in finished.stderr
    assert "--model-dir ./models/repro/2x4_full_t2/" in finished.stderr
    pasted = finished.stderr.strip().split("(exit 3): ", 1)[1]
    assert shlex.split(pasted)[:5] == ["scripts/poetry", "run", "train", "--arch", "[2*4]"]
    calls = (root / "calls.log").read_text().splitlines()
    assert "--model-dir ./models/repro/2x4_full_t2/" in calls[-1]
    assert len(calls) == len(MODES) + 4


def test_the_script_refuses_a_model_root_it_did_not_start(generated):
    script, _ = generated
    root = fake_repo(script)
    earlier = root / "models" / "repro" / "2x4_none_t1"
    earlier.mkdir(parents=True)
    (earlier / "mnist_lkg.safetensors").write_text("x")
    finished = run_script(script, root)
    assert finished.returncode == 1
    assert "holds a run this script did not start" in finished.stderr
    assert "clean-all --model-dir ./models/repro" in finished.stderr
    assert not (root / "calls.log").exists()


def test_a_stopped_script_rerun_skips_finished_trials_and_restarts_the_stopped_one(generated):
    script, _ = generated
    root = fake_repo(script, fail_on="2x4_full_t2/")
    assert run_script(script, root).returncode == 3
    first = (root / "calls.log").read_text().splitlines()
    stopped = root / "models" / "repro" / "2x4_full_t2"
    assert (stopped / "mnist_lkg.safetensors").exists()
    (root / "calls.log").unlink()
    rerun = run_script(script, fake_repo(script))
    assert rerun.returncode == 0, rerun.stderr
    assert "restarting the unfinished trial in ./models/repro/2x4_full_t2/" in rerun.stdout
    again = (root / "calls.log").read_text().splitlines()
    assert again[0] == first[-1] and len(first) - 1 + len(again) == 36
    assert not (stopped / "mnist_lkg.safetensors").exists()
    (root / "calls.log").unlink()
    assert run_script(script, root).returncode == 0
    assert not (root / "calls.log").exists()  # every trial finished: nothing runs again


def test_a_finished_trial_of_other_settings_is_refused(generated, configs, tmp_path):
    script, _ = generated
    root = fake_repo(script)
    assert run_script(script, root).returncode == 0
    reproduction.main(
        ["--configs", str(configs), "--output", str(script), "--trials", "3", "--meta-loops", "9"]
    )
    (root / "calls.log").unlink()
    refused = run_script(script, root)
    assert refused.returncode == 1
    assert "holds a finished trial of other settings" in refused.stderr
    assert not (root / "calls.log").exists()


def test_the_script_must_run_from_the_repository_root(generated, tmp_path):
    script, _ = generated
    finished = run_script(script, tmp_path)
    assert finished.returncode == 1
    assert "repository root" in finished.stderr


def test_a_bad_configs_line_is_reported_with_its_location(tmp_path, capsys):
    configs = tmp_path / "bad.txt"
    configs.write_text("4*4\n4x4\n")
    argv = ["--configs", str(configs), "--output", str(tmp_path / "out.sh")]
    assert f"{configs}:2" in refusal(capsys, reproduction.main, argv)[1]
    assert not (tmp_path / "out.sh").exists()


@pytest.mark.parametrize("argv", [["--trials", "0"], ["--meta-loops", "x"]])
def test_bad_counts_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as failed:
        reproduction.main(argv)
    assert failed.value.code == 2


# Like train: creates its model dir and writes provenance/ there at once; on the trial matching
# $PAUSE_ON it then waits (touching ./paused) until SIGINT ends it with status 130.
TRAIN_THAT_PAUSES = """#!/usr/bin/env bash
for a in "$@"; do [ "${p:-}" = --model-dir ] && dir=$a; p=$a; done
mkdir -p "$dir/provenance" && printf '{}' > "$dir/provenance/run.json"
printf '%s\\n' "$*" >> calls.log
if [ -n "${PAUSE_ON:-}" ] && [[ $* == *"$PAUSE_ON"* ]]; then
    sleep 60 >/dev/null 2>&1 &  # in the background, where bash runs it deaf to SIGINT
    trap "kill $!; exit 130" INT
    touch paused
    wait
fi
"""


def stop_with_ctrl_c(command: list[str], root: Path, env: dict, started: Path):
    """Run ``command`` in its own process group, and once ``started`` exists send the group
    SIGINT, as Ctrl-C in a terminal does; returns the finished process."""
    process = subprocess.Popen(
        command, cwd=root, env=env, start_new_session=True, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_ctrl_c_in_the_first_trial_or_a_later_one_and_a_rerun_finish_the_grid(generated):
    script, _ = generated
    root = fake_repo(script)
    (root / "scripts" / "poetry").write_text(TRAIN_THAT_PAUSES)
    env = {**os.environ}
    for trial in ("2x4_none_t1/", "1x8-2x4_full_t2/"):  # the first trial, then a later one
        (root / "paused").unlink(missing_ok=True)
        stopped = stop_with_ctrl_c(
            ["bash", str(script)], root, {**env, "PAUSE_ON": trial}, root / "paused"
        )
        assert stopped.returncode == 130, stopped.stderr
        last = stopped.stderr.strip().splitlines()[-1]
        assert last.startswith("run_reproduction.sh: stopped during: scripts/poetry run train ")
        assert "failure" not in last and f"rerun: bash {script}" in last
        during = shlex.split(last.split("stopped during: ", 1)[1].split(";")[0])
        assert during[during.index("--model-dir") + 1] == f"./models/repro/{trial}"
        assert during[during.index("--arch") + 1] in ("[2*4]", "[1*8, 2*4]")
    finished = run_script(script, root)
    assert finished.returncode == 0, finished.stderr
    assert "all 36 runs finished" in finished.stdout
    trials = sorted((root / "models" / "repro").iterdir())
    assert len(trials) == 36 and all((dir / ".trial-finished").is_file() for dir in trials)
    (root / "calls.log").unlink()
    assert run_script(script, root).returncode == 0 and not (root / "calls.log").exists()


@pytest.mark.slow
def test_ctrl_c_during_real_trains_and_reruns_finish_the_grid(tmp_path):
    """The same with train itself (on the first rows of MNIST, but the full set in a trial to be
    stopped, whose first loop takes seconds): stopped in the first trial, then in the fourth."""
    configs = tmp_path / "configs.txt"
    configs.write_text("1*8\n")
    script = tmp_path / "repo" / "reproduction" / "run_reproduction.sh"
    argv = ["--configs", str(configs), "--output", str(script), "--trials", "1"]
    reproduction.main([*argv, "--meta-loops", "2"])
    root = script.parent.parent
    (root / "scripts").mkdir()
    entry = Path(__file__).with_name("chaos_entry.py")
    poetry = root / "scripts" / "poetry"
    poetry.write_text(
        "#!/usr/bin/env bash\nshift\n"
        '[ -n "${SLOW_TRIAL:-}" ] && [[ $* == *"$SLOW_TRIAL"* ]] && unset PSA_CHAOS_SUBSET\n'
        f'exec {shlex.quote(sys.executable)} {shlex.quote(str(entry))} "$@"\n'
    )
    poetry.chmod(0o755)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PSA_CHAOS_SUBSET": "1"}
    env["PYTHONPATH"] = str(Path(reproduction.__file__).resolve().parents[2])
    repro = root / "models" / "repro"
    for trial in ("1x8_none_t1", "1x8_full_t1"):
        stopped = stop_with_ctrl_c(
            ["bash", str(script)],
            root,
            {**env, "SLOW_TRIAL": f"{trial}/"},
            repro / trial / "provenance",
        )
        assert stopped.returncode == 130, stopped.stderr
        assert "train: stopped by SIGINT" in stopped.stderr
        assert "stopped during: scripts/poetry run train --arch '[1*8]'" in stopped.stderr
    finished = run_script(script, root)
    assert finished.returncode == 0, finished.stderr
    assert "all 6 runs finished" in finished.stdout
    for trial in repro.iterdir():
        assert (trial / ".trial-finished").is_file()
        # one run of 2 loops: the stopped run's files were cleared before the restart
        [log] = trial.glob("mnist_lkg.*.jsonl")
        assert len(log.read_text().splitlines()) == 2, trial
