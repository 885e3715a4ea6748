"""Whether a sweep split over shards or tasks ended as the single-process sweep of the same grid."""

from __future__ import annotations

import json
from pathlib import Path

from psa.arch import parse_key

TABLES = ("psa_resmlp_trials.md", "psa_resmlp_summary.md")


def records(results_dir: Path) -> list[dict]:
    lines = (results_dir / "trials.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def outcomes(results_dir: Path) -> dict[tuple, tuple]:
    return {
        (r["arch"], r["mode"], r["trial"]): (
            r["val_bounty"],
            r["test_accuracy"],
            r["bounty_loop"],
            r["trials_in_batch"],
        )
        for r in records(results_dir)
    }


def loop_values(results_dir: Path, keys: tuple[str, ...]) -> dict[tuple, list]:
    values = {}
    for key in keys:
        for path in (results_dir / "logs" / parse_key(key).slug).glob("*.jsonl"):
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            values[key, path.name] = [
                (line["loop"], line["val_accuracy"], line["lkg_accuracy"], line["ablation"])
                for line in lines
            ]
    return values


def assert_same_as_single_process(
    results: Path, reference: Path, keys: tuple[str, ...], trials: int
) -> None:
    """Every trial recorded once, with the reference's outcomes, loop logs and tables."""
    assert len(records(results)) == trials  # no duplicates
    assert outcomes(results) == outcomes(reference)
    assert loop_values(results, keys) == loop_values(reference, keys)
    for name in TABLES:
        assert (results / name).read_text() == (reference / name).read_text()
