"""sagemaker-estimate-storage: what the project keeps on S3, by job and by file type, and its cost.

Lists every object under s3://<bucket>/<prefix>/, groups it by the first folder below the prefix
(a job's outputs, checkpoints/, source/, dataset/) and by type, and prices the total at the
configured USD per GB-month. It only reads; it does not rebuild any job list.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.cloud.aws import cli_errors, client
from psa.cloud.listing import list_objects
from psa.cloud.settings import add_settings_flags, load_settings, require

PROG = "sagemaker-estimate-storage"
TYPES = (".tar.gz", ".gz", ".json", ".jsonl", ".txt", ".md", ".log", ".safetensors")
GB = 1024**3


def file_type(key: str) -> str:
    return next((suffix for suffix in TYPES if key.endswith(suffix)), "other")


def tally(objects: list[tuple[str, int]], prefix: str) -> dict:
    """Bytes and object counts per top folder and per type; safe on an empty listing."""
    folders: dict[str, dict] = defaultdict(lambda: {"objects": 0, "bytes": 0, "types": {}})
    types: dict[str, dict] = defaultdict(lambda: {"objects": 0, "bytes": 0})
    for key, size in objects:
        folder = key[len(prefix) :].lstrip("/").split("/", 1)[0] or "(top level)"
        kind = file_type(key)
        entry = folders[folder]
        entry["objects"] += 1
        entry["bytes"] += size
        entry["types"][kind] = entry["types"].get(kind, 0) + size
        types[kind]["objects"] += 1
        types[kind]["bytes"] += size
    total = sum(size for _, size in objects)
    return {
        "objects": len(objects),
        "bytes": total,
        "folders": dict(sorted(folders.items())),
        "types": dict(sorted(types.items(), key=lambda item: -item[1]["bytes"])),
    }


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG, description="Size and monthly cost of the project's objects on S3."
    )
    parser.add_argument("--detailed", action="store_true", help="one line per job folder")
    parser.add_argument("--output", type=Path, help="also write the report as JSON here")
    add_settings_flags(parser, ("region", "bucket", "prefix", "s3_price_per_gb_month"))
    return parser


@cli_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(args)
    require(settings, "region", "bucket")
    s3 = client("s3", settings)
    objects = list_objects(s3, settings.bucket, f"{settings.prefix}/")
    report = tally(objects, settings.prefix)
    price = settings.s3_price_per_gb_month
    report["monthly_cost"] = report["bytes"] / GB * price
    report["price_per_gb_month"] = price
    report["location"] = f"{settings.s3_root}/"
    if not objects:
        print(f"no objects under {report['location']}: nothing stored, $0.00 per month")
    else:
        largest_share = ", ".join(
            f"{kind} {_size(entry['bytes'])} ({100 * entry['bytes'] / report['bytes']:.1f}%)"
            for kind, entry in report["types"].items()
        )
        print(f"{report['objects']} object(s), {_size(report['bytes'])} under {report['location']}")
        print(f"by type: {largest_share}")
        if args.detailed:
            for folder, entry in report["folders"].items():
                print(f"  {folder:<63} {entry['objects']:>6} object(s) {_size(entry['bytes']):>10}")
        else:
            print(f"{len(report['folders'])} folder(s); --detailed lists them")
        print(f"about ${report['monthly_cost']:.4f} per month at ${price}/GB-month")
    if args.output is not None:
        write_text_atomically(args.output, json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.output}", file=sys.stderr)
    return 0
