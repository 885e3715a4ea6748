"""What every command shares, as TOOLS.md promises it to a new user: one table of exit statuses,
runs that never land in the shipped results set by default, hints that name commands as the user
runs them, counts in proper English, stated durations, and examples that leave `git status`
clean."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import psa
from command_support import parser_of
from psa import cli
from psa.commands import sweep as sweep_command
from psa.wording import count, span

ROOT = Path(psa.__file__).resolve().parents[2]
SHIPPED = ROOT / "results"
DOCS = ("README.md", "TOOLS.md", "REPRODUCTION.md")

# One usage error per command (a missing input, a malformed value or flags that cannot go
# together); "{absent}" is a path that does not exist. Every command of cli.COMMANDS is here.
USAGE_ERRORS = [
    ("train", ["--data-dir", "{absent}", "--meta-loops", "1"]),
    ("train", ["--arch", "4x17"]),
    ("sweep", ["--configs", "{absent}", "--dry-run"]),
    ("sweep", ["--arch", "4x17", "--dry-run"]),
    ("sweep", ["--arch", "[2*8]", "--shards", "2", "--dry-run"]),
    ("merge-results", ["--results-dir", "{tmp}/merged", "{absent}"]),
    ("bench", ["--archs", "4x17", "--output", "{tmp}/bench.json"]),
    ("bench", ["--data-dir", "{absent}", "--output", "{tmp}/bench.json"]),
    ("generate-reproduction-tests", ["--configs", "{absent}", "--output", "{tmp}/run.sh"]),
    ("analyze-dataset", ["--data-dir", "{absent}"]),
    ("clean", ["--model-dir", "{tmp}", "{absent}"]),
    ("clean-all", ["--model-dir", "{tmp}", "some.safetensors"]),
    ("classify-regimes", ["--trials-file", "{absent}"]),
    ("classify-regimes", ["--config-file", "{absent}"]),
    ("make-architecture-table", ["--config-file", "{absent}"]),
    ("make-trial-accuracy-table", ["--datafile", "{absent}"]),
    ("make-trial-accuracy-table", ["--order", "{absent}"]),
    ("make-figure-design-space", ["--config-file", "{absent}", "--output-dir", "{tmp}"]),
    ("make-design-space-figure", ["--config-file", "{absent}", "--output-dir", "{tmp}"]),
    ("make-figure-heatmaps", ["--trials-file", "{absent}", "--output-dir", "{tmp}"]),
    ("make-figure-heatmaps", ["--asymmetric-file", "{absent}", "--output-dir", "{tmp}"]),
    ("make-convergence-plots", ["--logs-dir", "{absent}", "--output-dir", "{tmp}"]),
    ("make-convergence-plots", ["--targets", "4x17", "--output-dir", "{tmp}"]),
    ("compare-modes", ["--trials-file", "{absent}"]),
    ("compare-modes", ["--config-file", "{absent}"]),
    ("sagemaker-runner", ["--configs", "{absent}", "--dry-run"]),
    ("sagemaker-runner", ["--arch", "4x17", "--dry-run"]),
    ("sagemaker-results-parser", ["--configs", "{absent}", "--output-dir", "{tmp}/out"]),
    ("sagemaker-results-parser", ["--arch", "4x17", "--output-dir", "{tmp}/out"]),
    ("sagemaker-get-training-logs", ["--jobs-file", "{absent}", "--output-dir", "{tmp}/out"]),
    ("sagemaker-logs-parser", ["--logs-dir", "{absent}", "--output-dir", "{tmp}/out"]),
    ("sagemaker-cost-estimator", ["--jobs-file", "{absent}"]),
    ("sagemaker-estimate-storage", ["--env-file", "{absent}"]),
    ("export-results", ["--results-dir", "{absent}"]),
    ("export-tensorboard", ["--results-dir", "{absent}"]),
    ("results-value", ["--results-dir", "{absent}"]),
    ("check-reproduction", ["--results-dir", "{tmp}", "--claims", "{absent}"]),
    ("check-device", ["--archs", "4x17"]),
]

# Inputs that exist but hold nothing usable: a failure (1), not a usage error.
FAILURES = [
    ("merge-results", ["--results-dir", "{tmp}/merged", "{empty}"]),
    ("make-convergence-plots", ["--logs-dir", "{empty}", "--output-dir", "{tmp}"]),
    ("sagemaker-logs-parser", ["--logs-dir", "{empty}", "--output-dir", "{tmp}/out"]),
    ("make-architecture-table", ["--config-file", "{bad_config}"]),
    ("export-results", ["--results-dir", "{empty}"]),
    ("export-tensorboard", ["--results-dir", "{empty}"]),
    ("check-reproduction", ["--results-dir", "{tmp}", "--claims", "{bad_config}"]),
]


def status_of(command: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """The exit status, stderr and stdout of a console command run as its script runs it."""
    try:
        status = cli.run(command, argv)
    except SystemExit as done:  # argparse's own usage errors leave through SystemExit(2)
        status = done.code
    captured = capsys.readouterr()
    return status, captured.err, captured.out


def filled(argv: list[str], tmp_path: Path) -> list[str]:
    (tmp_path / "empty").mkdir(exist_ok=True)
    (tmp_path / "bad.txt").write_text("4*17\n4x17\n")
    places = {
        "absent": str(tmp_path / "absent"),
        "tmp": str(tmp_path),
        "empty": str(tmp_path / "empty"),
        "bad_config": str(tmp_path / "bad.txt"),
    }
    return [arg.format(**places) for arg in argv]


def test_every_command_has_a_usage_error_case():
    assert {command for command, _ in USAGE_ERRORS} == set(cli.COMMANDS)


@pytest.mark.parametrize(
    ("command", "argv"), USAGE_ERRORS, ids=[f"{c} {' '.join(a)}" for c, a in USAGE_ERRORS]
)
def test_a_usage_error_exits_2_with_one_line(command, argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, err, _ = status_of(command, filled(argv, tmp_path), capsys)
    assert status == 2, err
    assert err.startswith(f"{command}: ") and err.count("\n") == 1, err
    assert not (tmp_path / "absent").exists() and not (tmp_path / "merged").exists()


@pytest.mark.parametrize(
    ("command", "argv"), FAILURES, ids=[f"{c} {' '.join(a)}" for c, a in FAILURES]
)
def test_an_input_that_holds_nothing_usable_exits_1(command, argv, tmp_path, capsys):
    status, err, _ = status_of(command, filled(argv, tmp_path), capsys)
    assert status == 1, err
    assert err.startswith(f"{command}: ") and err.count("\n") == 1, err


# A malformed value for each argparse type a flag of some command has. "x" for the numbers
# RunConfig's flags take (lr, batch_size, ...: named after their field).
MALFORMED_BY_TYPE = {
    "positive_int": "0",
    "int": "x",
    "float": "x",
    "existing_path": "{absent}",
    "argparse_arch": "4x17",
    "targets_flag": "4x17",
    "mode_list": "nope",
    "device_name": "gpu",
    "device_list": "cuda:0,gpu",
    "argparse_shard": "3/2",
    "parse_size": "huge",
    "_price": "m5=cheap",
    **dict.fromkeys(("lr", "batch_size", "weight_decay", "dropout", "meta_loops", "seed"), "x"),
    "threads": "0",
    "bounded_int": "0",
}
# Flags whose value is any text or any path to write: nothing there is malformed.
FREE_TEXT = {
    "--caption", "--label", "--model-root", "--partition", "--account", "--qos", "--sbatch",
    "--setup", "--job", "--region", "--bucket", "--prefix", "--job-prefix", "--role",
    "--account-id", "--instance-type", "--image-uri",
}  # fmt: skip
# Flags of free text that the command checks after parsing: the whole command line of a
# malformed value, which reaches the check without doing any work.
CHECKED_AFTER_PARSING = {
    ("bench", "--archs"): ["--archs", "4x17", "--output", "{tmp}/bench.json"],
    ("bench", "--trials"): ["--trials", "0", "--output", "{tmp}/bench.json"],
    ("bench", "--precisions"): ["--precisions", "fp8", "--output", "{tmp}/bench.json"],
    ("check-device", "--archs"): ["--archs", "4x17"],
    ("analyze-dataset", "--value"): ["--value", "nope.zeror_accuracy"],
    ("compare-modes", "--modes"): ["--modes", "nope", "--trials-file", str(SHIPPED)],
    ("results-value", "--where"): ["--results-dir", str(SHIPPED), "--where", "nope"],
    ("results-value", "--column"): ["--results-dir", str(SHIPPED), "--column", "nope"],
}


def malformed_command_lines(command: str) -> dict[str, list[str]]:
    """For each flag of ``command`` that takes a value which can be malformed: a command line
    giving it one. A flag this cannot place fails the test, so a new flag is never unchecked."""
    lines = {}
    for action in parser_of(command)._actions:
        flag = action.option_strings[-1] if action.option_strings else None
        if flag is None or action.nargs == 0:
            continue
        kind = getattr(action.type, "__name__", None)
        if (command, flag) in CHECKED_AFTER_PARSING:
            lines[flag] = CHECKED_AFTER_PARSING[command, flag]
        elif action.choices:
            lines[flag] = [flag, "no-such-choice"]
        elif kind in MALFORMED_BY_TYPE:
            lines[flag] = [flag, MALFORMED_BY_TYPE[kind]]
        else:
            assert kind == "Path" or flag in FREE_TEXT, f"{command} {flag}: type {kind}"
    return lines


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_a_malformed_value_of_any_flag_is_a_usage_error(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a value let through writes nothing into the checkout
    wrong = {}
    for flag, argv in malformed_command_lines(command).items():
        status, err, _ = status_of(command, filled(argv, tmp_path), capsys)
        line, value = err.strip(), filled(argv, tmp_path)[argv.index(flag) + 1]
        about_it = flag in line or value in line  # not about another flag, or a missing one
        if status != 2 or not line.startswith(f"{command}: ") or "\n" in line or not about_it:
            wrong[flag] = (status, err[-300:])
    assert wrong == {}


def figure_commands() -> list[str]:
    """The commands that write one figure to --output-file in a --format."""
    found = []
    for command in sorted(cli.COMMANDS):
        flags = {
            flag: action for action in parser_of(command)._actions for flag in action.option_strings
        }
        if "--output-file" in flags and "pdf" in (
            flags.get("--format") and flags["--format"].choices or ()
        ):
            found.append(command)
    return found


def test_every_figure_command_refuses_a_format_other_than_its_output_files_as_a_usage_error(
    tmp_path, capsys, monkeypatch
):
    commands = figure_commands()
    assert len(commands) >= 3, commands
    monkeypatch.chdir(ROOT)
    for clash in (
        ["--format", "pdf", "--output-file", "{tmp}/figure.png"],
        ["--output-file", "{tmp}/figure.gif"],
    ):
        for command in commands:
            status, err, _ = status_of(command, filled(clash, tmp_path), capsys)
            assert status == 2 and err.startswith(f"{command}: ") and err.count("\n") == 1, err
    assert not list(tmp_path.glob("figure*"))


def test_tools_documents_the_exit_statuses():
    tools = (ROOT / "TOOLS.md").read_text()
    for status in ("| 0 |", "| 1 |", "| 2 |", "| 130, 143 |", "| 141 |"):
        assert status in tools


def test_sweep_writes_to_a_results_dir_of_the_users_own_by_default():
    default = sweep_command.build_parser().parse_args([]).results_dir
    assert default == Path("results/sweep")
    assert not (ROOT / default / "SHIPPED.md").exists()
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", f"{default}/settings.json"]
        )
        assert ignored.returncode == 0, f"{default} is not ignored by git"


def test_a_sweep_into_the_shipped_set_is_refused_without_add_to_shipped(capsys, tmp_path):
    before = {path: path.stat().st_mtime_ns for path in SHIPPED.iterdir()}
    argv = ["--configs", str(SHIPPED / "configurations.txt"), "--trials", "3"]
    argv += ["--meta-loops", "10", "--seed", "2026", "--results-dir", str(SHIPPED)]
    status, err, _ = status_of("sweep", argv, capsys)
    assert status == 2
    assert "shipped with psa" in err and "--add-to-shipped" in err and err.count("\n") == 1
    assert {path: path.stat().st_mtime_ns for path in SHIPPED.iterdir()} == before


def test_add_to_shipped_lets_a_sweep_plan_into_a_shipped_set(capsys, tmp_path):
    shipped = tmp_path / "results"
    shipped.mkdir()
    (shipped / "SHIPPED.md").write_text("the shipped set\n")
    argv = ["--arch", "[2*8]", "--trials", "1", "--modes", "none", "--meta-loops", "1"]
    argv += ["--seed", "1", "--results-dir", str(shipped), "--device", "cpu", "--dry-run"]
    assert status_of("sweep", argv, capsys)[0] == 2
    assert status_of("sweep", [*argv, "--add-to-shipped"], capsys)[0] == 0


# Every command that writes results, tables or figures, with a command line writing into
# {shipped}, a folder holding SHIPPED.md; inputs are the real shipped set (only read).
SHIPPED_WRITERS = [
    ("sweep", ["--arch", "[2*8]", "--trials", "1", "--results-dir", "{shipped}", "--dry-run"]),
    ("merge-results", ["--results-dir", "{shipped}", str(SHIPPED)]),
    ("sagemaker-results-parser", ["--arch", "[2*8]", "--trials", "1", "--output-dir", "{shipped}"]),
    ("sagemaker-get-training-logs", ["--job", "psa-job", "--output-dir", "{shipped}"]),
    ("sagemaker-logs-parser", ["--logs-dir", str(SHIPPED), "--output-dir", "{shipped}"]),
    ("export-results", ["--results-dir", str(SHIPPED), "--output-dir", "{shipped}"]),
    ("export-tensorboard", ["--results-dir", "{shipped}"]),
    ("classify-regimes", ["--trials-file", str(SHIPPED), "--output-file", "{shipped}/regimes.md"]),
    ("make-architecture-table", ["--output-file", "{shipped}/architecture_table.tex"]),
    ("make-trial-accuracy-table", ["--datafile", str(SHIPPED), "--output-file", "{shipped}/a.tex"]),
    ("make-figure-design-space", ["--output-dir", "{shipped}"]),
    ("make-design-space-figure", ["--output-file", "{shipped}/space.png"]),
    ("make-figure-heatmaps", ["--trials-file", str(SHIPPED), "--output-dir", "{shipped}"]),
    ("make-convergence-plots", ["--logs-dir", str(SHIPPED), "--output-dir", "{shipped}"]),
    ("make-convergence-plots", ["--logs-dir", str(SHIPPED), "--output-file", "{shipped}/c.png"]),
    ("compare-modes", ["--trials-file", str(SHIPPED), "--output-file", "{shipped}/compare.md"]),
]
# Commands whose --output is a file of another kind (a benchmark, a cost report, a script).
OTHER_OUTPUTS = {
    "bench", "check-device", "sagemaker-cost-estimator", "sagemaker-estimate-storage",
    "generate-reproduction-tests",
}  # fmt: skip


def shipped_copy(tmp_path: Path) -> Path:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "SHIPPED.md").write_text("a shipped set\n")
    return shipped


@pytest.mark.parametrize(
    ("command", "argv"), SHIPPED_WRITERS, ids=[f"{c} {a[-2]}" for c, a in SHIPPED_WRITERS]
)
def test_writing_into_the_shipped_set_is_a_usage_error_without_add_to_shipped(
    command, argv, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)
    shipped = shipped_copy(tmp_path)
    argv = [arg.replace("{shipped}", str(shipped)) for arg in argv]
    status, err, _ = status_of(command, argv, capsys)
    assert status == 2 and err.startswith(f"{command}: ") and err.count("\n") == 1, err
    assert "the results set shipped with psa" in err and "--add-to-shipped" in err
    assert [path.name for path in shipped.iterdir()] == ["SHIPPED.md"]


def test_every_command_that_writes_results_tables_or_figures_takes_add_to_shipped():
    writers = {command for command, _ in SHIPPED_WRITERS}
    for command in cli.COMMANDS:
        flags = {flag for action in parser_of(command)._actions for flag in action.option_strings}
        if flags & {"--output-dir", "--output-file"}:
            assert command in writers, f"{command} writes outputs unchecked"
        assert ("--add-to-shipped" in flags) == (command in writers), command
    assert not writers & OTHER_OUTPUTS


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("classify-regimes", ["--trials-file", str(SHIPPED), "--output-file", "{shipped}/r.md"]),
        ("make-architecture-table", ["--output-file", "{shipped}/architecture_table.tex"]),
        ("export-results", ["--results-dir", str(SHIPPED), "--output-dir", "{shipped}"]),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_add_to_shipped_lets_a_command_write_into_a_shipped_set(
    command, argv, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)
    shipped = shipped_copy(tmp_path)
    argv = [arg.replace("{shipped}", str(shipped)) for arg in argv]
    status, err, _ = status_of(command, [*argv, "--add-to-shipped"], capsys)
    assert status == 0, err
    assert len(list(shipped.iterdir())) > 1


def test_a_figure_written_elsewhere_is_no_write_into_the_shipped_default_output_dir(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(ROOT)  # where --output-dir's default, results/, is the shipped set
    argv = ["--output-file", str(tmp_path / "space.png"), "--dpi", "40"]
    status, err, _ = status_of("make-figure-design-space", argv, capsys)
    assert status == 0, err
    assert (tmp_path / "space.png").exists()


def test_the_dry_run_estimate_states_its_assumptions_and_counts_in_english(capsys, tmp_path):
    argv = ["--arch", "[2*8]", "--trials", "1", "--modes", "none", "--meta-loops", "1"]
    argv += ["--seed", "1", "--results-dir", str(tmp_path / "r"), "--device", "cpu", "--dry-run"]
    status, err, out = status_of("sweep", argv, capsys)
    assert status == 0, err
    assert "Plan: 1 trial to run" in out and "1 meta-loop each" in out
    assert "(trial 1, modes none)" in out and "trials 1-1" not in out
    assert "in one process, by a model fitted to one core of an idle CPU" in out
    assert "a busy machine takes longer" in out


def test_counts_and_ranges_read_as_english():
    assert count(1, "batch") == "1 batch" and count(2, "batch") == "2 batches"
    assert count(1, "thread") == "1 thread" and count(0, "trial") == "0 trials"
    assert span("trial", [10]) == "trial 10" and span("trial", [3, 1, 2]) == "trials 1-3"


def test_the_missing_submitit_hint_names_the_install_as_the_user_runs_psa(monkeypatch):
    from psa.errors import install_hint

    monkeypatch.setenv("PSA_RUN_PREFIX", "scripts/poetry run")
    assert install_hint("slurm") == "scripts/poetry install -E slurm"
    monkeypatch.delenv("PSA_RUN_PREFIX")
    assert install_hint("slurm") == (
        "pip install 'persistent-stochastic-ablation[slurm]' (or: poetry install -E slurm)"
    )


def test_the_readme_says_how_long_its_first_command_takes():
    readme = (ROOT / "README.md").read_text()
    first = readme[readme.index("The first command installs") :].split("\n\n")[0]
    assert re.search(r"\d+ s", first) and re.search(r"\d+.\d+ minutes", first)


def test_reproduction_states_the_source_archive_size_as_built():
    from psa.cloud.sourcedir import build_bundle, default_source_dir

    size = len(build_bundle(default_source_dir()).data)
    stated = re.search(r"source archive of about (\d+) kB", (ROOT / "REPRODUCTION.md").read_text())
    assert stated, "REPRODUCTION.md no longer states the source archive's size"
    assert abs(int(stated.group(1)) * 1000 - size) <= 0.2 * size, size


# Flags through which a documented command writes files, and where writing is expected.
OUTPUT_FLAGS = (
    "--results-dir", "--output-dir", "--output-file", "--output", "--model-dir", "--model-root",
    "--launcher-dir",
)  # fmt: skip
# Reporting examples rewrite the shipped figures and tables in place (unchanged), and making the
# shipped set writes into it; every other output must be ignored by git.
SHIPPED_OUTPUTS = ("results",)


def is_tracked(path: str) -> bool:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--error-unmatch", path], capture_output=True
    )
    return listed.returncode == 0


def documented_commands() -> list[tuple[str, str]]:
    """(doc, command line) of every indented or fenced command in the docs."""
    found = []
    for doc in DOCS:
        for line in (ROOT / doc).read_text().splitlines():
            text = line.strip()
            if not (line.startswith("    ") or text.startswith("scripts/")):
                continue
            if "scripts/poetry run" in text or text.startswith(("printf", "mkdir")):
                found.append((doc, text))
    return found


def written_paths(command: str) -> list[str]:
    paths = []
    for part in re.split(r"&&|;|&(?!&)", command):
        try:
            words = shlex.split(part)
        except ValueError:
            continue
        for flag, value in zip(words, words[1:]):
            if flag in OUTPUT_FLAGS or flag == ">":
                paths.append(value)
    return paths


def test_documented_examples_write_only_where_git_ignores_or_the_shipped_outputs():
    if not (shutil.which("git") and (ROOT / ".git").exists()):
        pytest.skip("needs a git checkout")
    commands = documented_commands()
    assert len(commands) > 40
    strays = []
    for doc, command in commands:
        for path in written_paths(command):
            if path.startswith(("/", "$", "<")) or path in SHIPPED_OUTPUTS or is_tracked(path):
                continue
            probe = path.rstrip("/") + "/settings.json" if "." not in Path(path).name else path
            ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", probe])
            if ignored.returncode != 0:
                strays.append(f"{doc}: {command} writes {path}")
    assert not strays, "\n".join(strays)


def test_a_tools_dry_run_comes_before_the_runs_into_its_results_dir():
    """TOOLS.md's examples build on each other in the order given: a dry run after the real run
    of its results dir would plan nothing ("0 trials to run") and show nothing of what it is for.
    (REPRODUCTION.md's are alternative routes, not one sequence.)"""
    late, written = [], set()
    for _, command in (entry for entry in documented_commands() if entry[0] == "TOOLS.md"):
        words = shlex.split(command)
        target = words[words.index("--results-dir") + 1] if "--results-dir" in words else None
        if "--dry-run" in words and target in written:
            late.append(command)
        elif "--dry-run" not in words and "--status" not in words and target:
            written.add(target)
    assert late == []


def git_status() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.slow
def test_the_readme_reporting_examples_run_as_written_and_leave_git_status_as_it_was(
    capsys, monkeypatch
):
    """They rewrite the shipped figures in place: byte for byte the same, nothing new."""
    if not (shutil.which("git") and (ROOT / ".git").exists()):
        pytest.skip("needs a git checkout")
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("From results to the paper") : readme.index("Figures come")]
    examples = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    assert len(examples) == 4
    monkeypatch.chdir(ROOT)
    before = git_status()
    for example in examples:
        words = shlex.split(example)
        assert words[:2] == ["scripts/poetry", "run"]
        status, err, _ = status_of(words[2], words[3:], capsys)
        assert status == 0, f"{example}: {err}"
    assert git_status() == before
