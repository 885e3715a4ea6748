"""``generate-reproduction-tests``: the paper's grid as one `train` command per trial.

Prints the six commands of each architecture, then writes a bash script that runs every trial of
every mode in its own model dir, seeded as ``sweep`` seeds it, and stops at the first failure
naming the command that failed. (``sweep`` runs the same grid batched and resumable.)
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
# ``trial COMMAND``: run one trial's train command unless its model dir records it as finished
# (with the same command); a dir a stop left unfinished is cleared and the trial restarts, since
# train would add --meta-loops to the loops it holds.
TRIAL_FUNCTION = [
    "trial() {",
    '    local dir="" previous="" word',
    '    for word in "$@"; do',
    '        if [ "$previous" = --model-dir ]; then dir=$word; fi',
    "        previous=$word",
    "    done",
    f'    if [ -f "$dir/{FINISHED}" ]; then',
    f'        if [ "$(cat "$dir/{FINISHED}")" = "$*" ]; then return 0; fi',
    '        echo "run_reproduction.sh: $dir holds a finished trial of other settings; move it '
    'away or delete it with: scripts/poetry run clean-all --model-dir $dir" >&2',
    "        exit 1",
    "    fi",
    '    if [ -e "$dir" ]; then',
    '        echo "run_reproduction.sh: restarting the unfinished trial in $dir"',
    '        rm -rf -- "$dir"',
    "    fi",
    '    "$@" || {',
    "        local status=$?",
    '        echo "run_reproduction.sh: stopped at the first failure; this command failed: $*" >&2',
    '        exit "$status"',
    "    }",
    f'    printf "%s\\n" "$*" > "$dir/{FINISHED}"',
    "}",
]


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
        "# Stopped (Ctrl-C, kill) and rerun, it skips the trials it finished and restarts the "
        "one it stopped in.",
        "set -euo pipefail",
        "trap 'echo \"run_reproduction.sh: stopped at the first failure; this command failed: "
        "$BASH_COMMAND\" >&2' ERR",
        f"if [ ! -x scripts/poetry ]; then {_fail('run this from the repository root')}; fi",
        f'if [ -n "$(find {root} -type f -print -quit 2>/dev/null)" ] && '
        f'[ -z "$(find {root} -name {FINISHED} -print -quit)" ]; then '
        + _fail(
            f"{model_root} holds a run this script did not start, which train would resume; "
            f"move it away or delete it with: scripts/poetry run clean-all --model-dir {model_root}"
        )
        + "; fi",
        *TRIAL_FUNCTION,
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
