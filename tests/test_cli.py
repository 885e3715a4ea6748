"""The console entry layer: --version, one-line errors, signals from the first line, every
upstream command name, and the commands that must run without torch installed."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import psa
from psa import cli
from psa.arch import read_config_file as read_configs
from psa.errors import PsaError

ROOT = Path(psa.__file__).resolve().parents[2]
SRC = ROOT / "src"
UPSTREAM_README_COMMANDS = (
    "train",
    "clean",
    "clean-all",
    "analyze-dataset",
    "make-architecture-table",
    "make-trial-accuracy-table",
    "make-design-space-figure",
    "make-figure-heatmaps",
    "make-convergence-plots",
    "generate-reproduction-tests",
    "sagemaker-results-parser",
)

# Runs one console command as its script does, with imports of torch/torchvision failing as if
# neither were installed; "--slow-torch" instead makes `import torch` announce itself and hang.
SHIM = """
import sys, time

class Finder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in ("torch", "torchvision"):
            return None
        if SLOW:
            print("importing torch", file=sys.stderr, flush=True)
            time.sleep(60)
        raise ImportError(f"No module named {name!r} (torch is not installed)")

SLOW = sys.argv[1] == "--slow-torch"
args = sys.argv[2:] if SLOW else sys.argv[1:]
sys.meta_path.insert(0, Finder())
if args[0] == "--moto":
    from moto import mock_aws
    with mock_aws():
        import boto3
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="psa-test-bucket")
        from psa.cli import run
        sys.exit(run(args[1], args[2:]))
from psa.cli import run
sys.exit(run(args[0], args[1:]))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "S3_", "PSA_")) and key != "PRICE_PER_HOUR"
    }
    env.update(
        PYTHONPATH=str(SRC),
        OMP_NUM_THREADS="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_EC2_METADATA_DISABLED="true",
        S3_BUCKET_NAME="psa-test-bucket",
        S3_PREFIX="psa-experiment",
        AWS_SAGEMAKER_ROLE="arn:aws:iam::123456789012:role/psa-test",
        PRICE_PER_HOUR="0.7364",
    )
    return env


def without_torch(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SHIM, *argv],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_upstream_readme_command_name_is_a_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(UPSTREAM_README_COMMANDS) <= set(scripts)
    for name, target in scripts.items():
        module, attribute = target.split(":")
        assert module == "psa.cli" and attribute == name.replace("-", "_")
        assert callable(getattr(cli, attribute))
    assert set(scripts) == {*cli.COMMANDS, "psa"}


def test_make_design_space_figure_is_the_design_space_command_under_its_upstream_name():
    commands = cli.COMMANDS
    assert commands["make-design-space-figure"] == commands["make-figure-design-space"]


def test_an_unknown_console_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        cli.not_a_command  # noqa: B018


@pytest.mark.parametrize("command", ["train", "clean-all", "make-design-space-figure"])
def test_version_names_the_command_the_package_version_and_the_revision(command, capsys):
    assert cli.run(command, ["--version"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{command} {psa.__version__}")
    if (ROOT / ".git").exists():
        assert " (git " in line


def test_version_after_the_upstream_leading_double_dash_is_answered(capsys):
    assert cli.run("train", ["--", "--version"]) == 0
    assert capsys.readouterr().out.startswith(f"train {psa.__version__}")


def test_version_is_also_a_flag_of_every_parser_in_process(capsys):
    from psa.commands import clean

    with pytest.raises(SystemExit) as done:
        clean.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"clean {psa.__version__}")


def test_a_usage_error_is_one_line_naming_the_command(capsys):
    with pytest.raises(SystemExit) as failed:
        cli.run("make-architecture-table", ["--no-such-flag"])
    assert failed.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("make-architecture-table: unrecognized arguments: --no-such-flag; ")
    assert "`make-architecture-table --help`" in err


def test_an_alias_names_itself_in_its_messages(capsys):
    with pytest.raises(SystemExit):
        cli.run("make-design-space-figure", ["--dpi", "many"])
    assert capsys.readouterr().err.startswith("make-design-space-figure: argument --dpi: ")


def _raise_project_error(argv):
    raise PsaError("the thing is broken; fix the thing")


def _raise_oserror(argv):
    raise PermissionError(13, "Permission denied", "results/out.md")


def test_a_project_error_that_escapes_a_command_is_one_line_and_status_1(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "broken", f"{__name__}:_raise_project_error")
    assert cli.run("broken", []) == 1
    assert capsys.readouterr().err == "broken: the thing is broken; fix the thing\n"


def test_an_operating_system_error_ends_with_one_line_naming_its_path(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "denied", f"{__name__}:_raise_oserror")
    assert cli.run("denied", []) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("denied: permission denied for results/out.md; ")


def _raise_bug(argv):
    raise RuntimeError("a bug")


def test_other_errors_keep_their_traceback(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "buggy", f"{__name__}:_raise_bug")
    with pytest.raises(RuntimeError):
        cli.run("buggy", [])


def test_the_entry_restores_the_signal_handlers_it_replaced(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "broken", f"{__name__}:_raise_project_error")
    before = signal.getsignal(signal.SIGTERM)
    cli.run("broken", [])
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_ends_with_one_line_saying_nothing_was_saved(
    tmp_path, command, signum, status
):
    process = subprocess.Popen(
        [sys.executable, "-c", SHIM, "--slow-torch", command, "--meta-loops", "1"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        # A runner started in the background ignores SIGINT; the command must see it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr.readline() == "importing torch\n"
    time.sleep(0.2)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert process.returncode == status
    assert err == f"{command}: stopped by {name}; nothing was saved; rerun the same command\n"
    assert out == ""
    assert not (tmp_path / "models").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("command", "module", "place"),
    [
        ("train", "psa.commands.train", "--model-dir"),
        ("sweep", "psa.sweep.runner", "--results-dir"),
    ],
)
def test_a_stop_before_the_first_loop_says_nothing_was_saved(
    tmp_path, monkeypatch, capsys, repo_dataset, command, module, place
):
    """Stopped while loading the data (after start-up, before any loop): not "continue"."""
    from psa.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(importlib.import_module(module), "load_mnist", interrupted)
    flags = ["--arch", "[1*8]", "--meta-loops", "1", "--seed", "3", "--device", "cpu"]
    flags += [place, str(tmp_path / "out"), "--data-dir", str(repo_dataset)]
    assert cli.run(command, flags) == 130
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == f"{command}: stopped by SIGINT; nothing was saved; rerun the same command"


def test_clean_and_clean_all_run_without_torch(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("mnist_lkg.safetensors", "notes.txt", ".gitkeep"):
        (models / name).write_text(name)
    done = without_torch(tmp_path, "clean")
    assert done.returncode == 0, done.stderr
    assert not (models / "mnist_lkg.safetensors").exists()
    done = without_torch(tmp_path, "clean-all")
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in models.iterdir()) == [".gitkeep"]


@pytest.mark.parametrize(
    "argv",
    [
        ["classify-regimes", "--trials-file", "{results}", "--format", "json"],
        ["compare-modes", "--trials-file", "{results}", "--format", "csv"],
        ["make-architecture-table", "--config-file", "{results}/configurations.txt",
         "--asymmetric-file", "{repo}/reproduction/asymmetric.txt"],
        ["make-trial-accuracy-table", "--datafile", "{results}", "--order",
         "{results}/configurations.txt"],
        ["make-design-space-figure", "--config-file", "{results}/configurations.txt",
         "--output-file", "space.png", "--dpi", "40"],
        ["make-figure-heatmaps", "--trials-file", "{results}", "--config-file",
         "{results}/configurations.txt", "--asymmetric-file",
         "{repo}/reproduction/asymmetric.txt", "--output-dir", "figures", "--dpi", "40"],
        ["make-convergence-plots", "--logs-dir", "{results}", "--targets", "1*2",
         "--output-dir", "figures", "--dpi", "40"],
        ["generate-reproduction-tests", "--configs", "{results}/configurations.txt",
         "--output", "run.sh"],
    ],
    ids=lambda argv: argv[0],
)
def test_reporting_commands_run_without_torch(tmp_path, argv):
    results = str(ROOT / "results")
    argv = [part.replace("{results}", results).replace("{repo}", str(ROOT)) for part in argv]
    done = without_torch(tmp_path, *argv)
    assert done.returncode == 0, done.stderr
    assert "torch" not in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["sagemaker-runner", "--arch", "[2*8]", "--trials", "1", "--meta-loops", "1",
         "--dry-run"],
        ["sagemaker-results-parser", "--arch", "[2*8]", "--trials", "1", "--meta-loops", "1",
         "--output-dir", "out"],
        ["sagemaker-get-training-logs", "--output-dir", "logs"],
        ["sagemaker-cost-estimator", "--output", "cost.json"],
        ["sagemaker-estimate-storage", "--output", "storage.json"],
    ],
    ids=lambda argv: argv[0],
)
def test_sagemaker_commands_run_without_torch(tmp_path, argv):
    done = without_torch(tmp_path, "--moto", *argv)
    assert done.returncode == 0, done.stderr
    assert "torch" not in done.stderr


def test_the_logs_parser_runs_without_torch(tmp_path):
    job = tmp_path / "raw" / "psa-2x8-none-2024-05-01-10-00-00-000"
    job.mkdir(parents=True)
    (job / "algo-1-1714557600.log").write_text(
        "Loop 1/2 (Global: 1) | Current: 50.00% | LKG: 50.00% | Bounty: 50.00%\n"
        "Loop 2/2 (Global: 2) | Current: 40.00% | LKG: 50.00% | Bounty: 50.00%\n"
        "Final Test Accuracy: 49.00%\n"
    )
    argv = ["--logs-dir", "raw", "--output-dir", "."]
    done = without_torch(tmp_path, "sagemaker-logs-parser", *argv)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "psa_resmlp_trials_convergence.md").read_text().splitlines()
    assert table[2] == "| 2x8 | none | 1 | 50.00 | 40.00 | 49.00 |"


class _Parsed(Exception):
    """Raised in place of parsing, carrying the parser a command built."""


def command_parser(command: str, monkeypatch) -> cli.CommandParser:
    def capture(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(cli.CommandParser, "parse_args", capture)
    module, function = cli.COMMANDS[command].split(":")
    with pytest.raises(_Parsed) as parsed:
        getattr(__import__(module, fromlist=[function]), function)([])
    return parsed.value.args[0]


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_has_help_and_shows_its_default_once(command, monkeypatch):
    parser = command_parser(command, monkeypatch)
    formatter = parser._get_formatter()
    helps = {
        "/".join(action.option_strings) or action.dest: (
            formatter._expand_help(action) if action.help else ""
        )
        for action in parser._actions
    }
    assert [flag for flag, text in helps.items() if not text.strip()] == []
    assert {flag: text for flag, text in helps.items() if text.count("default") > 1} == {}
    assert "%(default)" not in parser.format_help()


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_a_flag_that_takes_no_value_shows_no_default(command, monkeypatch):
    """A switch's default is its destination's value (True for --no-cuda-graph), which says
    nothing about whether the switch is on; help that says so in words (``--labels``) may."""
    parser = command_parser(command, monkeypatch)
    formatter = parser._get_formatter()
    switches = {
        "/".join(action.option_strings): formatter._expand_help(action)
        for action in parser._actions
        if action.option_strings and action.nargs == 0 and action.help
    }
    shown = re.compile(r"\(default: (True|False|None)\)")
    assert {flag: text for flag, text in switches.items() if shown.search(text)} == {}


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_no_cuda_graph_help_says_what_it_does_and_no_default(command, capsys):
    with pytest.raises(SystemExit):
        cli.run(command, ["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    described = help_text[help_text.index("--no-cuda-graph on CUDA") :].split(" --")[0]
    assert "launch a training step's kernels one by one" in described
    assert "default" not in described


def _shipped_regimes(capsys, fmt: str) -> tuple[str, str]:
    from psa.commands.report import classify_regimes_main

    results = ROOT / "results"
    argv = ["--trials-file", str(results), "--config-file", str(results / "configurations.txt")]
    assert classify_regimes_main([*argv, "--format", fmt]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_classify_regimes_csv_is_alone_on_stdout_and_the_counts_go_to_stderr(capsys):
    out, err = _shipped_regimes(capsys, "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(read_configs(ROOT / "results" / "configurations.txt"))
    assert {len(row) for row in rows} == {len(rows[0])} and None not in rows[0]
    counts = dict(line.split(": ") for line in err.splitlines())
    assert sum(int(count) for count in counts.values()) == len(rows)
    assert counts["Unknown"] == str(sum(row["regime"] == "Unknown" for row in rows))


def test_classify_regimes_json_is_alone_on_stdout(capsys):
    out, _ = _shipped_regimes(capsys, "json")
    report = json.loads(out)
    unknown = [row for row in report["architectures"] if row["regime"] == "Unknown"]
    assert all(row["rule"] == "no rule matched" for row in unknown)
    assert report["counts"]["Unknown"] == len(unknown)


def test_analyze_dataset_json_is_alone_on_stdout(capsys):
    from psa.commands import analyze_dataset

    analyze_dataset.main(["--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert report["split_validation"]["class_counts"]["1"] == 1102


def _exit_with_a_library_message(argv):
    sys.exit("broken: the download failed (Error downloading x:\nTried y\n); fix the network")


def test_a_multi_line_message_from_a_library_still_ends_as_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "broken", f"{__name__}:_exit_with_a_library_message")
    assert cli.run("broken", []) == 1
    assert capsys.readouterr().err == (
        "broken: the download failed (Error downloading x: Tried y ); fix the network\n"
    )


def test_a_hint_names_a_command_as_the_user_runs_them(tmp_path, monkeypatch, capsys):
    from psa.commands.report import classify_regimes_main

    monkeypatch.setenv("PSA_RUN_PREFIX", "scripts/poetry run")
    with pytest.raises(SystemExit):
        classify_regimes_main(["--trials-file", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert err.startswith("classify-regimes: --trials-file ") and err.count("\n") == 1
    assert "run `scripts/poetry run sweep` first" in err


@pytest.mark.parametrize(
    ("call", "remedy"),
    [
        (lambda: cli.run("train", ["--no-such-flag"]), "see `scripts/poetry run train --help`"),
        (lambda: cli.psa(["train", "--arch", "4x17"]), "`scripts/poetry run psa train --help`"),
        (lambda: cli.psa(["trian"]), "see `scripts/poetry run psa --help`"),
        (lambda: cli.run("clean", ["--all", "x.safetensors"]), "`scripts/poetry run clean --help`"),
    ],
    ids=["train", "psa train", "psa", "clean"],
)
def test_a_usage_error_names_the_help_as_the_user_runs_the_command(
    call, remedy, monkeypatch, capsys
):
    monkeypatch.setenv("PSA_RUN_PREFIX", "scripts/poetry run")
    try:
        status = call()
    except SystemExit as done:
        status = done.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.rstrip().endswith(remedy), err


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_compare_modes_keeps_its_format_alone_on_stdout(fmt, capsys):
    from psa.commands.report import compare_modes_main

    assert compare_modes_main(["--trials-file", str(ROOT / "results"), "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        json.loads(out)
    else:
        rows = list(csv.reader(io.StringIO(out)))
        assert len({len(row) for row in rows}) == 1 and len(rows) > 1


def test_train_loads_none_of_the_packages_it_does_not_use():
    heavy = ("pandas", "torchvision", "torch._dynamo", "sympy", "matplotlib", "boto3", "rich")
    code = f"import sys, psa.commands.train; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "[]"


def test_train_on_a_terminal_still_shows_its_rich_table(tmp_path):
    import pty

    controller, terminal = pty.openpty()
    argv = ["--arch", "[1*8]", "--meta-loops", "1", "--seed", "1", "--model-dir", str(tmp_path)]
    entry = "import sys; from psa.cli import run; sys.exit(run('train', sys.argv[1:]))"
    process = subprocess.Popen(
        [sys.executable, "-c", entry, *argv],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "parameters" in text and "projection" in text  # the architecture table's rows
    assert "Final Test Accuracy" in text


def test_the_psa_command_lists_every_command_by_group(capsys):
    assert cli.psa(["--help"]) == 0
    out = capsys.readouterr().out
    grouped = [name for group in cli.GROUPS.values() for name in group]
    assert sorted(grouped) == sorted(cli.COMMANDS)
    for title, group in cli.GROUPS.items():
        assert f"\n{title}:\n" in out and all(f"  {name} " in out for name in group)
    assert cli.psa([]) == 2 and "usage: psa COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_the_psa_command_runs_every_subcommands_help(capsys, command):
    assert cli.psa([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: psa {command}"), out[:200]


def test_the_psa_command_refuses_an_unknown_subcommand_in_one_line(capsys):
    assert cli.psa(["trian"]) == 2
    assert capsys.readouterr().err == "psa: unknown command 'trian'; see `psa --help`\n"


def test_the_psa_console_script_runs_a_subcommand(tmp_path):
    psa_script = Path(sys.executable).with_name("psa")
    if not psa_script.exists():
        pytest.skip("the package is not installed into this environment")
    done = subprocess.run(
        [str(psa_script), "sweep", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith("psa sweep ")


def test_a_stop_that_comes_after_the_command_finished_leaves_its_exit_status():
    """Between a command's end and the process's exit (teardown can take a second), SIGTERM or
    Ctrl-C would otherwise end the process by the signal: -15 or -2 instead of the status."""
    code = (
        "import os, signal, sys; from psa import cli; status = cli.finished_process(3); "
        "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT); "
        "sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (3, "")


def run_into_closed_pipe(
    argv: list[str], tmp_path: Path, buffered: bool
) -> subprocess.CompletedProcess:
    """Run ``argv`` with stdout a pipe whose reader has already gone, as `| head -1` leaves it
    once it has its line: every write to stdout meets a closed pipe, when it prints (unbuffered)
    or when Python flushes its buffer at exit (buffered, the default for a pipe)."""
    env = _env(tmp_path)
    if buffered:
        env.pop("PYTHONUNBUFFERED", None)
    else:
        env["PYTHONUNBUFFERED"] = "1"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            argv, stdout=writer, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            timeout=120,
        )  # fmt: skip
    finally:
        os.close(writer)


# A console script of pyproject.toml: ``python -c ENTRY train --help`` runs psa.cli.train.
ENTRY = "import sys; from psa import cli; entry = getattr(cli, sys.argv.pop(1)); sys.exit(entry())"


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "psa", "--help"],
        ["-m", "psa", "train", "--help"],
        ["-c", ENTRY, "train", "--help"],
        ["-c", ENTRY, "clean", "--version"],
        # about 90 kB of commands: the pipe breaks while the command prints, not at exit
        ["-c", ENTRY, "generate_reproduction_tests", "--output", "{tmp}/run.sh"],
        ["-m", "psa", "generate-reproduction-tests", "--output", "{tmp}/run.sh"],
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_status_141(argv, buffered, tmp_path):
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    done = run_into_closed_pipe([sys.executable, *argv], tmp_path, buffered)
    assert (done.returncode, done.stderr) == (141, "")


def test_a_command_whose_stdout_stays_open_is_unaffected_by_the_closed_pipe_handling(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, "clean", "--version"],
        capture_output=True, text=True, env=_env(tmp_path), cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("clean ")
