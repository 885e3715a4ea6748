"""sweep --launcher: the SLURM job array that submitit writes and submits, checked without a
cluster (sbatch and srun are stand-ins that record what they were given), and the one-line
refusals (no submitit, missing --shards, SLURM flags locally)."""

from __future__ import annotations

import os
import pickle
import stat
import sys
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from psa.commands import sweep as sweep_command  # noqa: E402
from psa.shard import Shard  # noqa: E402
from psa.shard_task import ShardTask  # noqa: E402

JOB = "4242"


def stand_ins(folder: Path) -> Path:
    """``sbatch`` that keeps the script it is given and answers as SLURM does; ``srun`` that
    only has to exist (submitit looks for it to tell it is on a cluster)."""
    folder.mkdir()
    record = folder / "sbatch-script.sh"
    (folder / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {record}\necho "$@" > {folder / "sbatch-argv"}\n'
        f'echo "Submitted batch job {JOB}"\n'
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
        assert task.args.shard == Shard(index + 1, 3)
        assert task.args.results_dir == results.absolute() and task.args.results_dir.is_absolute()
        assert task.args.launcher is None and task.args.shards is None
        assert [a.stacks for a in task.args.arch] == [((4, 17),), ((18, 18),)]
        assert (task.args.trials, task.args.meta_loops, task.args.seed) == (10, 100, 1234)
        assert delayed._timeout_min == 720
        # Requeued after a timeout or preemption, it is the same shard again.
        again = task.checkpoint()
        assert isinstance(again.function, ShardTask) and again.function.args == task.args
    assert not (results / "trials.jsonl").exists()


def refusal(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        sweep_command.main(argv)
    message = str(raised.value.code)
    assert message.startswith("sweep: ") and "\n" not in message
    return message


def test_without_submitit_a_launch_is_refused_in_one_line_that_names_the_extra(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    message = refusal([*grid_flags(tmp_path / "r"), "--launcher", "local", "--shards", "2"])
    assert "submitit" in message and "persistent-stochastic-ablation[slurm]" in message
    assert "poetry install -E slurm" in message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--launcher", "slurm"], "needs --shards N"),
        (["--shards", "2"], "--shards N needs --launcher"),
        (["--launcher", "local", "--shards", "2", "--partition", "gpu"], "are SLURM's"),
        (["--launcher", "local", "--shards", "2", "--shard", "1/2"], "drop --shard"),
        (["--launcher", "slurm", "--shards", "2", "--sbatch", "nonsense"], "is not KEY=VALUE"),
        (["--launcher", "slurm", "--shards", "2"], "needs SLURM's sbatch and srun on PATH"),
    ],
)
def test_launcher_flags_that_do_not_fit_are_refused_in_one_line(
    tmp_path, monkeypatch, extra, complaint
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun: not a cluster
    message = refusal([*grid_flags(tmp_path / "r"), *extra])
    assert complaint in message
    assert not (tmp_path / "r").exists()
