"""``generate-reproduction-tests``: the paper's grid as one `train` command per trial.

Prints the six commands of each architecture, then writes a bash script that runs every trial of
every mode in its own model dir, seeded as ``sweep`` seeds it, and stops at the first failure
naming the command that failed. Stopped at any moment and rerun, the script goes on where it
stopped. (``sweep`` runs the same grid batched and resumable at every loop.)
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from psa.arch import Arch, read_config_file
from psa.arguments import MAX_TRIALS, existing_path, positive_int, trial_count
from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.errors import PsaError
from psa.modes import MODES
from psa.reproduction import PAPER_GRID, PAPER_GRID_NAME
from psa.seeds import trial_run_seed

DEFAULT_CONFIGS = PAPER_GRID
DEFAULT_OUTPUT = Path("reproduction/run_reproduction.sh")
DEFAULT_MODEL_ROOT = "./models/repro"
DEFAULT_SEED = 1234
MODE_FLAGS = {"decay": ["--weight-decay", "1e-4"], "dropout": ["--dropout", "0.1"]}
TRAIN = "scripts/poetry run train"
FINISHED = ".trial-finished"
STARTED = ".trial-started"
# Bash functions of the script. ``quoted WORDS``: the words as one line safe to paste into a
# shell. ``foreign DIR``: DIR holds files but no mark of this script, a run train would resume.
# ``trial COMMAND``: run one trial's train command unless its model dir records it as finished
# (with the same command). The dir is marked started before train writes into it, so a stop at
# any moment leaves either no dir, an empty one, or a marked one; a marked dir left unfinished
# is cleared (its mark kept) and the trial restarts, since train would add --meta-loops to the
# loops it holds. The finished record is written whole or not at all.
SCRIPT_FUNCTIONS = r"""quoted() {
    local word line="" q="'\\''"
    for word in "$@"; do
        if [[ ! $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then word=\'${word//\'/$q}\'; fi
        line+="${line:+ }$word"
    done
    printf '%s' "$line"
}
foreign() {
    [ ! -e "$1/STARTED" ] && [ ! -e "$1/FINISHED" ] &&
        [ -n "$(find "$1" -type f -print -quit 2>/dev/null)" ]
}
refuse_foreign() {
    echo "run_reproduction.sh: $1 holds a run this script did not start, which train would \
resume; move it away or delete it with: scripts/poetry run clean-all --model-dir $(quoted "$1")" >&2
    exit 1
}
trial() {
    local dir="" previous="" word status
    for word in "$@"; do
        if [ "$previous" = --model-dir ]; then dir=$word; fi
        previous=$word
    done
    if [ -f "$dir/FINISHED" ]; then
        if [ "$(cat "$dir/FINISHED")" = "$*" ]; then return 0; fi
        echo "run_reproduction.sh: $dir holds a finished trial of other settings; move it away \
or delete it with: scripts/poetry run clean-all --model-dir $(quoted "$dir")" >&2
        exit 1
    fi
    if [ -e "$dir" ]; then
        if foreign "$dir"; then refuse_foreign "$dir"; fi
        echo "run_reproduction.sh: restarting the unfinished trial in $dir"
        find "$dir" -mindepth 1 -maxdepth 1 ! -name STARTED -exec rm -rf -- {} +
    fi
    mkdir -p -- "$dir"
    printf '%s\n' "$*" > "$dir/STARTED"
    "$@" || {
        status=$?
        if [ "$status" -eq 130 ] || [ "$status" -eq 143 ]; then
            echo "run_reproduction.sh: stopped during: $(quoted "$@"); to continue, rerun: \
bash $(quoted "$0") (it skips the finished trials and restarts this one)" >&2
        else
            echo "run_reproduction.sh: stopped at the first failure; this command failed \
(exit $status): $(quoted "$@")" >&2
        fi
        exit "$status"
    }
    printf '%s\n' "$*" > "$dir/FINISHED.tmp"
    mv -f -- "$dir/FINISHED.tmp" "$dir/FINISHED"
}
""".replace("STARTED", STARTED).replace("FINISHED", FINISHED)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="generate-reproduction-tests",
        description=(
            "Print the train commands of the reproduction grid and write a bash script that runs "
            "every trial (architectures x 6 modes x trials), each in its own model dir."
        ),
    )
    parser.add_argument(
        "--configs",
        type=existing_path,
        default=DEFAULT_CONFIGS,
        help=f"one L*W per line, # comments (default: the paper's grid, {PAPER_GRID_NAME})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the script (default: {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--trials",
        type=trial_count,
        default=10,
        help=f"trials per mode, at most {MAX_TRIALS} (default: 10)",
    )
    parser.add_argument(
        "--meta-loops", type=positive_int, default=100, help="meta-loops per trial (default: 100)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="base seed; trial t of every mode trains with sweep's run seed of (base, t), so "
        f"the modes of a trial share initialisation and data order (default: {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--model-root",
        default=DEFAULT_MODEL_ROOT,
        help=f"folder of the per-trial model dirs (default: {DEFAULT_MODEL_ROOT})",
    )
    return parser


def train_command(
    arch: Arch, mode: str, trial: int, meta_loops: int, seed: int, model_root: str
) -> str:
    """One trial as one shell command line."""
    model_dir = f"{model_root.rstrip('/')}/{arch.slug}_{mode}_t{trial}/"
    rest = [
        "--ablation-mode",
        mode,
        *MODE_FLAGS.get(mode, []),
        "--meta-loops",
        str(meta_loops),
        "--model-dir",
        model_dir,
        "--seed",
        str(trial_run_seed(seed, trial)),
    ]
    # Upstream's spelling, --arch "[L*W]": safe in double quotes (digits, *, comma, space).
    return f'{TRAIN} --arch "{arch.flag}" {shlex.join(rest)}'


def script_text(
    configs: list[Arch], trials: int, meta_loops: int, seed: int, model_root: str
) -> str:
    total = len(configs) * len(MODES) * trials
    root = shlex.quote(model_root)
    header = [
        "#!/usr/bin/env bash",
        "# Written by `generate-reproduction-tests`: "
        f"{len(configs)} architectures x {len(MODES)} modes x {trials} trials = {total} runs "
        f"of {meta_loops} meta-loops.",
        "# Run it from the repository root. Each trial trains in its own model dir under "
        f"{model_root}; trial t of every mode uses the same --seed (paired design).",
        "# Stopped at any moment (Ctrl-C, kill) and rerun, it skips the trials it finished and "
        "restarts the one it stopped in.",
        "set -euo pipefail",
        "trap 'echo \"run_reproduction.sh: stopped at the first failure; this command failed: "
        "$BASH_COMMAND\" >&2' ERR",
        f"if [ ! -x scripts/poetry ]; then {_fail('run this from the repository root')}; fi",
        SCRIPT_FUNCTIONS.rstrip("\n"),
        f"for entry in {root}/*; do",
        '    if [ -e "$entry" ] && foreign "$entry"; then refuse_foreign "$entry"; fi',
        "done",
        "",
    ]
    commands = [
        "trial " + train_command(arch, mode, trial, meta_loops, seed, model_root)
        for arch in configs
        for trial in range(1, trials + 1)
        for mode in MODES
    ]
    footer = ["", f"echo {shlex.quote(f'run_reproduction.sh: all {total} runs finished')}"]
    return "\n".join(header + commands + footer) + "\n"


def _fail(message: str) -> str:
    return f"echo {shlex.quote('run_reproduction.sh: ' + message)} >&2; exit 1"


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    configs = read_config_file(arguments.configs)

    text = script_text(
        configs, arguments.trials, arguments.meta_loops, arguments.seed, arguments.model_root
    )
    output = arguments.output
    try:
        write_text_atomically(output, text)
        output.chmod(0o755)
    except OSError as error:
        raise PsaError(
            f"cannot write {output}: {error.strerror}; pass --output a writable path"
        ) from None

    print("=== Individual Commands ===")
    for arch in configs:
        print(f"# Architecture: {arch.flag} ({arch.slug})")
        for mode in MODES:
            print(
                train_command(
                    arch, mode, 1, arguments.meta_loops, arguments.seed, arguments.model_root
                )
            )
        print()
    print("=== Batch Script Generation ===")
    runs = len(configs) * len(MODES) * arguments.trials
    print(
        f"Wrote {output}: {runs:,} runs ({len(configs)} architectures x {len(MODES)} modes x "
        f"{arguments.trials} trials, {arguments.meta_loops} meta-loops each). "
        f"Run it from the repository root: bash {output}"
    )
