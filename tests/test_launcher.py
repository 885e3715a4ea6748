"""sweep --launcher and --devices without a cluster: the job array submitit writes for GPU nodes
(sbatch and srun are stand-ins that record what they were given: the real cluster of
tests/test_slurm.py has no GPUs), --dry-run of every launcher, the signal lead, a worker's error
on the terminal, a finished task that a late signal cannot fail, a task that stops making
progress, and the one-line refusals (no submitit, missing --shards, SLURM flags locally)."""

from __future__ import annotations

import os
import pickle
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from documented import (  # noqa: E402
    assert_block_printed,
    assert_printed,
    doc_text,
    quoted,
    quoted_block,
)
from psa.cli import run as run_command  # noqa: E402
from psa.commands import sweep as sweep_command  # noqa: E402
from psa.sweep import Shard  # noqa: E402
from psa.sweep.slurm import STALLED_RUNS, ShardTask  # noqa: E402

JOB = "4242"


def stand_ins(folder: Path, job: str = JOB) -> Path:
    """``sbatch`` that keeps the script it is given and answers as SLURM does; ``srun`` that
    only has to exist (submitit looks for it to tell it is on a cluster)."""
    folder.mkdir()
    record = folder / "sbatch-script.sh"
    (folder / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {record}\necho "$@" > {folder / "sbatch-argv"}\n'
        f'echo "Submitted batch job {job}"\n'
    )
    (folder / "srun").write_text("#!/bin/sh\nexit 1\n")
    for name in ("sbatch", "srun"):
        path = folder / name
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return record


def grid_flags(results_dir: Path) -> list[str]:
    return [
        *("--arch", "[4*17]", "--arch", "[18*18]", "--trials", "10", "--meta-loops", "100"),
        *("--seed", "1234", "--results-dir", str(results_dir)),
    ]


SLURM_FLAGS = [
    *("--launcher", "slurm", "--shards", "3", "--partition", "gpu", "--account", "lab"),
    *("--qos", "high", "--time-limit", "720", "--gpus-per-task", "1", "--cpus-per-task", "8"),
    *("--mem-per-task", "32", "--sbatch", "constraint=a100", "--sbatch", "mail-type=END"),
]


def test_slurm_launch_submits_one_job_array_of_shards_with_the_asked_resources(
    tmp_path, monkeypatch, capsys
):
    record = stand_ins(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    results = tmp_path / "results"
    sweep_command.main([*grid_flags(results), *SLURM_FLAGS])
    out = capsys.readouterr().out
    assert f"Submitted SLURM job array {JOB}: 3 tasks" in out
    folder = results / "launcher"
    for index in range(3):
        log = f"{folder}/{JOB}_{index}_0_log.out"
        assert f"shard {index + 1}/3: job {JOB}_{index}, log {log}" in out
    assert f"Watch: sweep --status --results-dir {results}" in out

    script = record.read_text()
    lines = set(script.splitlines())
    for expected in [
        "#SBATCH --array=0-2%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --time=720",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --constraint=a100",
        "#SBATCH --mail-type=END",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --job-name=psa-sweep",
        f"#SBATCH --output={folder}/%A_%a_0_log.out",
        f"#SBATCH --error={folder}/%A_%a_0_log.err",
    ]:
        assert expected in lines, expected
    [command] = [line for line in script.splitlines() if line.startswith("srun ")]
    assert command.endswith(f"{sys.executable} -u -m submitit.core._submit {folder}")
    assert (tmp_path / "bin" / "sbatch-argv").read_text().split()[0].endswith(".sh")

    # Each array task unpickles a shard of the same sweep, with absolute paths and no launcher.
    for index in range(3):
        with (folder / f"{JOB}_{index}_submitted.pkl").open("rb") as stream:
            delayed = pickle.load(stream)
        task = delayed.function
        assert isinstance(task, ShardTask)
        request = task.request
        assert request.shard == Shard(index + 1, 3)
        assert request.results_dir == results.absolute() and request.results_dir.is_absolute()
        assert not request.dry_run
        assert [a.stacks for a in request.archs] == [((4, 17),), ((18, 18),)]
        assert (request.trials, request.config.meta_loops, request.config.seed) == (10, 100, 1234)
        assert task.printer is sweep_command.SweepPrinter
        assert delayed._timeout_min == 720
        # Requeued after a timeout or preemption, it is the same shard again.
        again = task.checkpoint()
        assert isinstance(again.function, ShardTask) and again.function.request == request
    assert not (results / "trials.jsonl").exists()


def refusal(argv: list[str], capsys) -> str:
    """The one line ``sweep: ...`` that a refusal ends the command with (status 1 or 2)."""
    assert run_command("sweep", argv) in (1, 2)
    [message] = capsys.readouterr().err.splitlines()
    assert message.startswith("sweep: ")
    return message


def test_without_submitit_a_launch_is_refused_in_one_line_that_names_the_extra(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    argv = [*grid_flags(tmp_path / "r"), "--launcher", "local", "--shards", "2"]
    message = refusal(argv, capsys)
    assert "submitit" in message and "persistent-stochastic-ablation[slurm]" in message
    assert "poetry install -E slurm" in message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--launcher", "slurm"], "needs --shards N"),
        (["--shards", "2"], "--shards N needs --launcher"),
        (["--launcher", "local", "--shards", "2", "--partition", "gpu"], "are SLURM's"),
        (["--launcher", "local", "--shards", "2", "--setup", "true"], "are SLURM's"),
        (["--launcher", "local", "--shards", "2", "--max-parallel", "1"], "are SLURM's"),
        (["--launcher", "local", "--shards", "2", "--shard", "1/2"], "drop --shard"),
        (["--launcher", "slurm", "--shards", "2", "--sbatch", "nonsense"], "is not KEY=VALUE"),
        (["--launcher", "slurm", "--shards", "2"], "needs SLURM's sbatch and srun on PATH"),
    ],
)
def test_launcher_flags_that_do_not_fit_are_refused_in_one_line(
    tmp_path, monkeypatch, capsys, extra, complaint
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun: not a cluster
    message = refusal([*grid_flags(tmp_path / "r"), *extra], capsys)
    assert complaint in message
    assert not (tmp_path / "r").exists()


def tiny_flags(results_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        *("--arch", "[1*2]", "--arch", "[2*2]", "--trials", "1", "--meta-loops", "1"),
        *("--seed", "5", "--device", "cpu", "--results-dir", str(results_dir)),
        *("--data-dir", str(data_dir), *extra),
    ]


@pytest.mark.parametrize(("minutes", "lead"), [(1, 10), (2, 20), (6, 60), (9, 90), (720, 90)])
def test_a_dry_run_prints_the_sbatch_script_with_a_signal_lead_that_fits_the_limit(
    tmp_path, monkeypatch, capsys, repo_dataset, minutes, lead
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here: a dry run does not need one
    results = tmp_path / "results"
    sweep_command.main(
        tiny_flags(
            results,
            repo_dataset,
            *("--launcher", "slurm", "--shards", "3", "--time-limit", str(minutes)),
            *("--gpus-per-task", "1", "--max-parallel", "2"),
            *("--setup", "module load cuda", "--setup", "source ~/venv/bin/activate"),
            "--dry-run",
        )
    )
    out = capsys.readouterr().out
    assert "Dry run: would submit this sbatch script (3 array tasks); nothing is submitted" in out
    lines = out.splitlines()
    for expected in [
        f"#SBATCH --signal=USR2@{lead}",
        f"#SBATCH --time={minutes}",
        "#SBATCH --array=0-2%2",
        "#SBATCH --gpus-per-task=1",
    ]:
        assert expected in lines, expected
    setup = lines.index("# setup")
    assert lines[setup + 1 : setup + 3] == ["module load cuda", "source ~/venv/bin/activate"]
    assert [line for line in lines if line.startswith("srun ")]
    for index in (1, 2, 3):
        assert f"Shard {index}/3 of batch plan" in out
    assert not results.exists()


def test_a_local_dry_run_prints_each_shards_part_and_runs_nothing(tmp_path, capsys, repo_dataset):
    results = tmp_path / "results"
    argv = tiny_flags(results, repo_dataset, "--launcher", "local", "--shards", "2", "--dry-run")
    sweep_command.main(argv)
    out = capsys.readouterr().out
    assert "Dry run: would start 2 local submitit jobs; nothing is started" in out
    assert "Shard 1/2 of batch plan" in out and "Shard 2/2 of batch plan" in out
    assert not results.exists()


def test_a_devices_dry_run_prints_each_workers_part_and_starts_nothing(
    tmp_path, capsys, repo_dataset
):
    results = tmp_path / "results"
    sweep_command.main(tiny_flags(results, repo_dataset, "--devices", "cpu,cpu", "--dry-run"))
    out = capsys.readouterr().out
    assert "Dry run: would start 2 workers, worker i running shard i/2; nothing is started" in out
    assert "shard 1/2 on cpu" in out and "shard 2/2 on cpu" in out
    assert "Shard 1/2 of batch plan" in out and "Shard 2/2 of batch plan" in out
    assert not results.exists()


@pytest.mark.slow
def test_a_workers_refusal_reaches_the_terminal_as_its_one_line_and_a_summary_ends(
    tmp_path, repo_dataset
):
    results = tmp_path / "results"
    results.mkdir()
    (results / "settings.json").write_text("{not json")  # each worker refuses it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PSA_RUN_PREFIX", None)
    done = subprocess.run(
        [sys.executable, "-m", "psa.commands.sweep"]
        + tiny_flags(results, repo_dataset, "--devices", "cpu,cpu"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 2, done.stderr
    for index in (1, 2):
        log = results.absolute() / "launcher" / f"worker-{index}-of-2.log"
        [line] = [line for line in errors if line.startswith(f"  shard {index}/2 on cpu: ")]
        assert "sweep: " in line and "settings.json" in line and line.endswith(f"(log {log})")
        assert_printed(quoted("REPRODUCTION.md", "shard 2/4 on <device>: sweep:"), line)
        text = log.read_text()
        assert "UnboundLocalError" not in text and "lost sys.stderr" not in text
    assert "Done: 0 of 2 workers finished" in done.stdout


@pytest.mark.slow
def test_a_finished_task_exits_0_whatever_signal_comes_after(tmp_path, repo_dataset):
    """SLURM may warn a task (SIGUSR2) or stop it (SIGTERM) just after its sweep has finished;
    that must not turn a finished task into a failed one."""
    results = tmp_path / "results"
    sweep_command.main(tiny_flags(results, repo_dataset))
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from psa.commands import sweep
        from psa.sweep import Shard
        from psa.sweep.slurm import ShardTask
        args = sweep.build_parser().parse_args({tiny_flags(results, repo_dataset)!r})
        request = sweep.request_of(args).for_shard(Shard(1, 1))
        ShardTask(request, printer=sweep.SweepPrinter)()
        os.kill(os.getpid(), getattr(signal, "SIG" + sys.argv[1]))
        time.sleep(0.5)
        """
    )
    for name in ("USR2", "TERM"):
        done = subprocess.run(
            [sys.executable, "-c", script, name], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (name, done.returncode, done.stderr)


def warn_when_started(task_signal_installed) -> threading.Thread:
    """SIGUSR2 to this process as soon as the task's own handler is in place."""

    def warn() -> None:
        deadline = time.monotonic() + 60
        while not task_signal_installed() and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGUSR2)

    thread = threading.Thread(target=warn, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("stalled", [0, 4])
def test_a_task_warned_before_it_saved_a_loop_stops_being_requeued_after_five_runs(
    tmp_path, repo_dataset, stalled
):
    """The warning comes before the sweep has saved anything: the task stops cleanly; the fifth
    such run in a row is not requeued but ends with one line (earlier ones are requeued)."""
    assert STALLED_RUNS == 5
    args = sweep_command.build_parser().parse_args(tiny_flags(tmp_path / "r", repo_dataset))
    request = sweep_command.request_of(args).for_shard(Shard(1, 1))
    task = ShardTask(request, stalled=stalled)
    before = signal.getsignal(signal.SIGUSR2)
    warn_when_started(lambda: signal.getsignal(signal.SIGUSR2) is not before)
    with pytest.raises((SystemExit, KeyboardInterrupt)) as raised:
        task()
    assert task.stalled == stalled + 1
    if stalled + 1 < STALLED_RUNS:  # requeued (by submitit, which is absent here)
        assert not isinstance(raised.value, SystemExit) or not isinstance(raised.value.code, str)
    else:
        assert raised.value.code == (
            "sweep: shard 1/1 was warned of its end 5 runs in a row before it saved a loop; not "
            "requeued: give a longer --time-limit and rerun the same command"
        )
        assert_printed(quoted("REPRODUCTION.md", "sweep: shard 3/10 was warned"), raised.value.code)
    assert signal.getsignal(signal.SIGUSR2) is before


# REPRODUCTION.md's SLURM walk-through, its commands as written but for a one-architecture grid
# (what they print of the launch does not depend on the grid) and the results dir.
SUBMIT = (
    "scripts/poetry run sweep --trials 10 --meta-loops 100 --seed 1234 --results-dir "
    "/shared/psa/paper --launcher slurm --shards 10 --partition gpu --gpus-per-task 1 "
    "--cpus-per-task 4 --mem-per-task 16 --time-limit 240"
)
DOCUMENTED_DIR = "/shared/psa/paper"


def walkthrough(command: str, results: Path, *extra: str) -> list[str]:
    assert f"       {command}" in doc_text("REPRODUCTION.md").splitlines(), command
    words = shlex.split(command.replace(DOCUMENTED_DIR, str(results)))
    return [*words[3:], "--arch", "[4*17]", "--device", "cpu", *extra]


def at(results: Path, block: list[str]) -> list[str]:
    return [line.replace(DOCUMENTED_DIR, str(results)) for line in block]


def test_the_documented_slurm_dry_run_prints_the_documented_line_and_sbatch_script(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here: a dry run does not need one
    results = tmp_path / "paper"
    assert run_command("sweep", walkthrough(f"{SUBMIT} --dry-run", results)) in (0, None)
    out = capsys.readouterr().out.replace(sys.executable, "<python>")
    line = quoted("REPRODUCTION.md", "Dry run: would submit this sbatch script")
    assert_printed(line, out, figures=False)
    assert_block_printed(at(results, quoted_block("REPRODUCTION.md", "#!/bin/bash")), out, False)


def test_the_documented_slurm_submission_prints_the_documented_lines(tmp_path, monkeypatch, capsys):
    stand_ins(tmp_path / "bin", job="123456")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("PSA_RUN_PREFIX", "scripts/poetry run")
    results = tmp_path / "paper"
    assert run_command("sweep", walkthrough(SUBMIT, results)) in (0, None)
    block = quoted_block("REPRODUCTION.md", "Submitted SLURM job array")
    assert_block_printed(at(results, block), capsys.readouterr().out, figures=False)


def refusing_stand_ins(folder: Path) -> None:
    """``sinfo`` of one partition, debug, of 2-CPU nodes without GPUs; ``sbatch`` that refuses
    what SLURM refuses of REPRODUCTION.md's examples."""
    stand_ins(folder)
    (folder / "sinfo").write_text('#!/bin/sh\necho "debug*|2|7000|(null)"\n')
    (folder / "sbatch").write_text(
        "#!/bin/sh\n"  # submitit hands it the script, which holds the #SBATCH options
        'if grep -q -- --nosuchopt "$1"; then\n'
        "  echo \"sbatch: unrecognized option '--nosuchopt=1'\" >&2\n"
        'else\n  echo "sbatch: error: invalid partition specified: gpu2" >&2\nfi\nexit 1\n'
    )
    for name in ("sinfo", "sbatch"):
        (folder / name).chmod(0o755)


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        (["--partition", "gpu2"], "sweep: the submission failed: sbatch: error: invalid partition"),
        (["--sbatch", "nosuchopt=1"], "sweep: the submission failed: sbatch: unrecognized option"),
        (["--partition", "debug", "--cpus-per-task", "8"], "sweep: --cpus-per-task 8 is more"),
        (["--partition", "debug", "--gpus-per-task", "1"], "sweep: --gpus-per-task 1 is more"),
    ],
)
def test_what_slurm_refuses_is_the_line_reproduction_quotes(
    tmp_path, monkeypatch, capsys, repo_dataset, extra, refused
):
    refusing_stand_ins(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    argv = tiny_flags(tmp_path / "results", repo_dataset, "--launcher", "slurm", "--shards", "2")
    line = refusal([*argv, *extra], capsys)
    [documented] = [
        text.strip()
        for text in doc_text("REPRODUCTION.md").splitlines()
        if text.strip().startswith(refused)
    ]
    assert line == documented
    if "gpu2" in extra:  # TOOLS.md quotes it too
        assert quoted("TOOLS.md", "sweep: the submission failed") == line
    assert not (tmp_path / "results").exists()
