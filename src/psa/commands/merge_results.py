"""``merge-results``: the union of results dirs (shards, machines, SageMaker) as one results dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from psa.arguments import add_shipped_flag, existing_path, refuse_shipped
from psa.cli import CommandParser
from psa.merge import MergeError, merge, write_merged
from psa.provenance import capture
from psa.store import ResultsStore
from psa.store.provenance import recording

PROG = "merge-results"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description="Merge results dirs of one grid's settings (sweep shards made on different "
        "machines, sagemaker-results-parser's output) into one, with the upstream tables. "
        "Exact duplicates are dropped; the inputs are only read.",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        required=True,
        help="the merged results dir: new, empty, or a previous merge's (whose records are kept); "
        "never a sweep's own",
    )
    add_shipped_flag(parser, "--results-dir")
    parser.add_argument(
        "inputs", type=existing_path, nargs="+", metavar="DIR", help="results dirs to merge"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    output: Path = args.results_dir
    refuse_shipped("--results-dir", output, args.add_to_shipped)
    inputs: list[Path] = list(dict.fromkeys(args.inputs))
    for path in inputs:
        if not path.is_dir():
            raise MergeError(f"{path} is not a directory; give results dirs to merge")
        if path.resolve() == output.resolve():
            raise MergeError(
                f"{path} is the --results-dir itself; merge-results never writes into an input, "
                "so name a new --results-dir"
            )
    if output.exists() and not output.is_dir():
        raise MergeError(f"--results-dir {output} is a file; name a directory")
    if ResultsStore(output).holds_saved_batches():
        raise MergeError(
            f"--results-dir {output} holds batches a sweep stopped mid-way (batches/); let that "
            "sweep finish or name another --results-dir"
        )
    check_not_a_sweeps(ResultsStore(output))
    previous = output.is_dir() and bool(ResultsStore(output).record_files())
    if output.is_dir() and not previous and any(output.iterdir()):
        raise MergeError(
            f"--results-dir {output} holds files but no trial records; name a new or empty "
            "directory"
        )
    sources = [output, *inputs] if previous else inputs
    merged = merge(sources)
    with recording(output, capture()):
        write_merged(merged, output)
    counts = ", ".join(f"{merged.counts[path]} from {path}" for path in sources)
    print(
        f"{len(merged.records)} trial records ({counts}; {merged.duplicates} exact duplicates "
        f"dropped) -> {output}"
    )


def check_not_a_sweeps(store: ResultsStore) -> None:
    """The output may be a previous merge's, never a sweep's results dir (its batches' own record
    files, which a merge never writes, mark it): a merge rewrites the dir's trials.jsonl and
    tables, which are that sweep's. (The shipped set is refused as every writer refuses it,
    unless --add-to-shipped.)"""
    if not store.batch_record_files():
        return
    raise MergeError(
        f"--results-dir {store.root} is a sweep's results dir (it holds records/), not a previous "
        f"merge's; give a new --results-dir and {store.root} as one of the dirs to merge"
    )


if __name__ == "__main__":
    main()
