"""The entry layer of every console script, light enough to act before anything heavy loads.

``train = "psa.cli:train"`` in pyproject.toml runs :func:`run` for ``train``, which in this order
makes Ctrl-C and SIGTERM end the command with one line and exit status 130 or 143, answers
``--version``, imports the command's module (torch, pandas or boto3 load only here) and calls its
``main(argv)``. The project's errors (:class:`psa.errors.PsaError`) that a command lets through
become one line ``<command>: <what is wrong>; <what to do>`` on stderr and exit status 1. A
reader of stdout that goes away (``| head -1``) ends the command quietly with status 141.

:class:`CommandParser` gives every command the same flags and messages: ``--version``, a usage
error as one line (the usage block only for ``--help``), each default shown once, and the name the
user typed (an alias included) in every message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import signal
import sys
from collections.abc import Sequence

from psa import interrupts
from psa.errors import Interrupted, PsaError, command_hint, exit_status, os_error_line, stopped_line

# Console command -> "module:function" taking argv. An alias is one more row.
COMMANDS = {
    "train": "psa.commands.train:main",
    "clean": "psa.commands.clean:main",
    "clean-all": "psa.commands.clean:main_all",
    "analyze-dataset": "psa.commands.analyze_dataset:main",
    "sweep": "psa.commands.sweep:main",
    "merge-results": "psa.commands.merge_results:main",
    "bench": "psa.commands.bench:main",
    "generate-reproduction-tests": "psa.commands.reproduction:main",
    "classify-regimes": "psa.commands.report:classify_regimes_main",
    "make-architecture-table": "psa.commands.report:architecture_table_main",
    "make-trial-accuracy-table": "psa.commands.report:trial_accuracy_table_main",
    "make-figure-design-space": "psa.commands.report:design_space_main",
    "make-design-space-figure": "psa.commands.report:design_space_main",
    "make-figure-heatmaps": "psa.commands.report:heatmaps_main",
    "make-convergence-plots": "psa.commands.report:convergence_main",
    "compare-modes": "psa.commands.report:compare_modes_main",
    "sagemaker-runner": "psa.commands.sagemaker_runner:main",
    "sagemaker-results-parser": "psa.commands.sagemaker_results:main",
    "sagemaker-get-training-logs": "psa.commands.sagemaker_logs:download_main",
    "sagemaker-logs-parser": "psa.commands.sagemaker_logs:parse_main",
    "sagemaker-cost-estimator": "psa.commands.sagemaker_cost:main",
    "sagemaker-estimate-storage": "psa.commands.sagemaker_storage:main",
    "export-results": "psa.commands.export:results_main",
    "export-tensorboard": "psa.commands.export:tensorboard_main",
    "results-value": "psa.commands.export:value_main",
    "check-reproduction": "psa.commands.check_reproduction:main",
    "check-device": "psa.commands.check_device:main",
}

# ``psa --help``: the subcommands by group, each with what it does in a few words.
GROUPS = {
    "Train and sweep": {
        "train": "train one network with PSA (resumable)",
        "sweep": "run a grid of architectures x modes x trials, batched and resumable",
        "merge-results": "merge results dirs of one grid into one",
        "bench": "measure training throughput on this machine",
        "check-device": "check this device against a float64 reference; project the grid",
        "analyze-dataset": "class balance and ZeroR of the MNIST splits",
        "generate-reproduction-tests": "the grid as one train command per trial",
        "clean": "delete the checkpoint and run logs of a model dir",
        "clean-all": "delete everything in a model dir",
    },
    "Results": {
        "export-results": "trial records and loop logs as CSV or parquet tables",
        "export-tensorboard": "TensorBoard event files of the loop logs",
        "results-value": "one number from a results dir (mean, std, ... of a column)",
        "check-reproduction": "check a results dir against a claims file",
    },
    "Tables and figures": {
        "classify-regimes": "the convergence regime of every architecture",
        "make-architecture-table": "LaTeX table of the architectures",
        "make-trial-accuracy-table": "LaTeX table of accuracy per mode",
        "make-figure-design-space": "figure of the tested design space",
        "make-design-space-figure": "the same, by its upstream README name",
        "make-figure-heatmaps": "the paper's heatmaps",
        "make-convergence-plots": "convergence curves from the loop logs",
        "compare-modes": "paired comparison of modes",
    },
    "SageMaker": {
        "sagemaker-runner": "launch the grid as SageMaker jobs",
        "sagemaker-results-parser": "collect the jobs' results into a results dir",
        "sagemaker-get-training-logs": "download the jobs' logs",
        "sagemaker-logs-parser": "per-loop tables from the jobs' logs",
        "sagemaker-cost-estimator": "what the jobs cost",
        "sagemaker-estimate-storage": "what the jobs store",
    },
}

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The commands that save their work as they go; stopped before they saved any, they say so.
SAVING_COMMANDS = frozenset({"train", "sweep"})
# A command whose stdout reader went away exits as one killed by SIGPIPE does in a shell.
CLOSED_OUTPUT_STATUS = 128 + 13

_running: str | None = None


def run(command: str, argv: Sequence[str], name: str | None = None) -> int:
    """Run console command ``command`` with ``argv`` as a process does; return its exit status.
    ``name`` is what the user typed (``psa train``), when not the command itself."""
    global _running
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number in STOP_SIGNALS:
        signal.signal(number, _stop)
    _running = name or command
    interrupts.command_begins()
    try:
        if version_requested(argv):
            from psa.revision import version_text

            print(version_text(_running))
            return 0
        module, function = COMMANDS[command].split(":")
        status = getattr(importlib.import_module(module), function)(list(argv))
        return status if isinstance(status, int) else 0
    except KeyboardInterrupt as stop:
        print(stopped_line(_running, stop, stop_detail(command)), file=sys.stderr)
        return exit_status(stop)
    except PsaError as error:
        print(f"{_running}: {one_line(str(error))}", file=sys.stderr)
        return exit_status(error)
    except SystemExit as done:
        if not isinstance(done.code, str):
            raise
        print(one_line(done.code), file=sys.stderr)
        return exit_status(done)
    except BrokenPipeError:
        if not stdout_closed():
            raise
        return closed_output()
    except OSError as error:
        # A full disk, a file where a folder is needed, no permission: one line, no traceback.
        print(f"{_running}: {one_line(os_error_line(error))}", file=sys.stderr)
        return 1
    finally:
        _running = None
        for number, handler in previous.items():
            signal.signal(number, handler)


def stop_detail(command: str) -> str:
    """What the stop line of ``command`` says when the command did not say it itself: train and
    sweep stopped at start-up (or before their first loop) have saved nothing."""
    if command in SAVING_COMMANDS and interrupts.saved_nothing():
        return "nothing was saved; rerun the same command"
    return "rerun the same command to continue"


def psa(argv: Sequence[str] | None = None) -> int:
    """``psa SUBCOMMAND ARGS``: every console command under one name (``psa train``, ``psa
    sweep``); ``psa --help`` lists them by group. The upstream names keep working on their own."""
    process = argv is None  # the console script, not a caller in this process
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _umbrella(argv)
    except BrokenPipeError:  # `psa --help | head -1`
        if not stdout_closed():
            raise
        status = closed_output()
    return finished_process(status) if process else status


def _umbrella(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(umbrella_help())
        return 0 if argv else 2
    if argv[0] == "--version":
        from psa.revision import version_text

        print(version_text("psa"))
        return 0
    if argv[0] not in COMMANDS:
        print(
            f"psa: unknown command {argv[0]!r}; see `{command_hint('psa')} --help`", file=sys.stderr
        )
        return 2
    return run_to_status(argv[0], argv[1:], name=f"psa {argv[0]}")


def run_to_status(command: str, argv: Sequence[str], name: str | None = None) -> int:
    """:func:`run`, with the exits of a command's parser (``--help``, a usage error) as a
    status too, so a console script flushes stdout itself before the process exits."""
    try:
        return run(command, argv, name)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 1


def umbrella_help() -> str:
    lines = [
        "usage: psa COMMAND [ARGS]   (psa COMMAND --help for a command's flags)",
        "",
        "Persistent Stochastic Ablation on MNIST. Every command also runs under its own name "
        "(train, sweep, ...).",
    ]
    width = max(len(name) for group in GROUPS.values() for name in group)
    for title, commands in GROUPS.items():
        lines += ["", f"{title}:"]
        lines += [f"  {name:<{width}}  {summary}" for name, summary in commands.items()]
    return "\n".join(lines)


def version_requested(argv: Sequence[str]) -> bool:
    """``--version`` among the options (before a ``--`` that ends them, after a leading one)."""
    options = list(argv[1:] if argv[:1] == ["--"] else argv)
    if "--" in options:
        options = options[: options.index("--")]
    return "--version" in options


def one_line(message: str) -> str:
    """A message on one line, whatever a library put into it."""
    return " ".join(message.split())


def finished_process(status: int) -> int:
    """``status``, for a process whose command has finished and now exits: a stop arriving from
    here on changes nothing, where the restored default would end the process by the signal
    (a -2 or -15 instead of the command's status). What stdout still buffers is written now,
    so a reader that went away ends the process quietly (:func:`closed_output`), not with
    Python's "Exception ignored ... BrokenPipeError" at exit."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return closed_output()
    return status


def stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (`| head -1` read its line and left);
    where the platform cannot tell, a broken pipe is taken to be stdout's."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (AttributeError, OSError, ValueError):
        return True
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def closed_output() -> int:
    """End a command whose stdout reader went away as other command-line tools end: quietly,
    with the status of a SIGPIPE (141). Stdout goes to /dev/null, so nothing still buffered can
    fail again at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return CLOSED_OUTPUT_STATUS


def running(default: str) -> str:
    """The console command being run (an alias as typed), or ``default`` when called in-process."""
    return _running or default


def _stop(signum: int, frame) -> None:
    raise Interrupted(signum)


def __getattr__(attribute: str):
    """``psa.cli.clean_all`` is the console script of ``clean-all``."""
    command = attribute.replace("_", "-")
    if command not in COMMANDS:
        raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")

    def entry() -> int:
        return finished_process(run_to_status(command, sys.argv[1:]))

    entry.__name__ = attribute
    return entry


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help already says its default. A flag
    that takes no value shows none: its default is its destination's (``--no-cuda-graph``
    stores False, so its default is True), not whether the flag is given."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or action.nargs == 0
            or default is None
            or default is argparse.SUPPRESS
        ):
            return text
        if isinstance(default, (list, tuple)):
            default = ",".join(str(item) for item in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


class CommandParser(argparse.ArgumentParser):
    """argparse for psa's commands: ``--version``, one-line usage errors, defaults shown once."""

    def __init__(self, prog: str, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(prog=running(prog), **kwargs)
        self.add_argument(
            "--version",
            action=_VersionAction,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print the version (and the git revision of a checkout) and exit",
        )

    def print_help(self, file=None):
        """The help, where argparse's own would drop a write that fails (a closed pipe) and
        exit 0; the entry layer ends such a command quietly with status 141."""
        (file or sys.stdout).write(self.format_help())

    def error(self, message: str):
        """One line ``<command>: <what is wrong>; <what to do>`` and exit status 2."""
        remedy = "" if ";" in message else f"; see `{command_hint(self.prog)} --help`"
        self.exit(2, f"{self.prog}: {message}{remedy}\n")


class _VersionAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from psa.revision import version_text

        print(version_text(parser.prog))
        parser.exit(0)
