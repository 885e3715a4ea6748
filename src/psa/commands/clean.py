"""``clean``: delete checkpoints and run logs from the model dir, and nothing outside it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from psa.checkpoint import DEFAULT_NAME
from psa.cli import CommandParser
from psa.errors import UsageError, command_hint
from psa.wording import count

KEEP = frozenset({".gitkeep"})


class CleanError(UsageError):
    """A target that must not or cannot be deleted; nothing has been deleted yet."""


def build_parser(prog: str = "clean") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description=(
            "Delete the LKG checkpoint and its per-run logs (default), named files, or everything "
            "in the model dir (--all). Never deletes outside the model dir."
        ),
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="files to delete; bare names resolve in the model dir (default: the checkpoint "
        f"{DEFAULT_NAME} and its mnist_lkg.*.jsonl logs)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="delete every file in the model dir, sub-folders included, without asking "
        "(keeps .gitkeep)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("models"),
        help="the folder to clean",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="delete several named files without asking (needed when there is no terminal; "
        "--all never asks)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    run(parser.parse_args(argv), parser.prog)


def main_all(argv: list[str] | None = None) -> None:
    """``clean-all``: the same as ``clean --all``."""
    parser = build_parser("clean-all")
    arguments = parser.parse_args(argv)
    arguments.all = True
    run(arguments, parser.prog)


def run(arguments: argparse.Namespace, prog: str = "clean") -> None:
    if arguments.all and arguments.files:
        raise UsageError(
            f"give either --all or FILE names, not both; see `{command_hint(prog)} --help`"
        )
    model_dir = arguments.model_dir
    targets = select_targets(model_dir, arguments.files, arguments.all)

    if not targets:
        print(f"Nothing to delete in {model_dir}.")
        return
    if arguments.dry_run:
        for target in targets:
            print(f"would delete {target}")
        print(f"Dry run: {count(len(targets), 'file')} in {model_dir} left in place.")
        return
    # --all deletes without asking, as upstream's clean-all; several other files are confirmed.
    ask = len(targets) > 1 and not arguments.all and not arguments.yes
    if ask and not _confirm(targets, model_dir, prog):
        print("Nothing deleted.")
        return
    for target in targets:
        target.unlink(missing_ok=True)
        print(f"deleted {target}")


def select_targets(model_dir: Path, files: list[str], everything: bool) -> list[Path]:
    """The files to delete, each checked to lie inside ``model_dir`` (symlinks followed)."""
    if files:
        if not model_dir.is_dir():
            raise CleanError(
                f"model dir {model_dir} does not exist; pass --model-dir the folder to clean"
            )
        return _dedupe([_named_target(model_dir, name) for name in files])
    if not model_dir.is_dir():
        return []
    if everything:
        return _everything(model_dir)
    # With the checkpoint go its run logs and any temp file a kill mid-save left behind.
    candidates = [
        model_dir / DEFAULT_NAME,
        *sorted(model_dir.glob("mnist_lkg.*.jsonl")),
        *sorted(model_dir.glob(f".{DEFAULT_NAME}.*.tmp")),
    ]
    return [path for path in candidates if path.is_file() and _inside(path, model_dir)]


def _named_target(model_dir: Path, name: str) -> Path:
    path = model_dir / name if os.sep not in name and "/" not in name else Path(name)
    if not path.exists() and not path.is_symlink():
        raise CleanError(f"{path} does not exist; nothing was deleted")
    if not _inside(path, model_dir):
        raise CleanError(
            f"{path} resolves to {path.resolve()}, outside the model dir {model_dir}; "
            "clean only deletes inside the model dir (pass --model-dir to clean another one)"
        )
    if path.is_dir():
        raise CleanError(f"{path} is a folder; clean deletes files (use --all for everything)")
    if path.name in KEEP:
        raise CleanError(f"{path} keeps the empty model dir in git; it is never deleted")
    return path


def _everything(model_dir: Path) -> list[Path]:
    """Every file under model_dir, without following symlinked folders out of it."""
    found = []
    for folder, subfolders, names in os.walk(model_dir):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if name in KEEP:
                continue
            if not _inside(path, model_dir):
                print(f"skipping {path}: it links outside {model_dir}", file=sys.stderr)
                continue
            found.append(path)
    return found


def _inside(path: Path, model_dir: Path) -> bool:
    """Whether ``path``, with every symlink resolved, lies strictly inside ``model_dir``."""
    root = model_dir.resolve()
    resolved = path.resolve()
    return resolved != root and resolved.is_relative_to(root)


def _dedupe(paths: list[Path]) -> list[Path]:
    seen, unique = set(), []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def _confirm(targets: list[Path], model_dir: Path, prog: str) -> bool:
    """Ask y/N on the terminal; without one, refuse rather than wait for an answer."""
    if not sys.stdin.isatty():
        raise UsageError(
            f"this would delete {len(targets)} files in {model_dir}, and there is no "
            "terminal to confirm on; rerun with --yes (or --dry-run to list them)"
        )
    for target in targets:
        print(f"  {target}")
    try:
        answer = input(f"Delete these {len(targets)} files? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        print()
        return False
    return answer.strip().lower() in {"y", "yes"}
