"""sagemaker-estimate-storage: what the project keeps on S3 and its cost (psa.cloud.storage)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from psa.atomic import write_text_atomically
from psa.cli import CommandParser
from psa.cloud.aws import client
from psa.cloud.aws_setup import require
from psa.cloud.listing import list_objects
from psa.cloud.storage import GB, PROG, size_text, tally
from psa.commands.sagemaker_flags import add_setup_flags, aws_errors, setup_of


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG, description="Size and monthly cost of the project's objects on S3."
    )
    parser.add_argument("--detailed", action="store_true", help="one line per job folder")
    parser.add_argument("--output", type=Path, help="also write the report as JSON here")
    add_setup_flags(parser, ("region", "bucket", "prefix", "s3_price_per_gb_month"))
    return parser


@aws_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup = setup_of(args)
    require(setup, "region", "bucket")
    s3 = client("s3", setup)
    objects = list_objects(s3, setup.bucket, f"{setup.prefix}/")
    report = tally(objects, setup.prefix)
    price = setup.s3_price_per_gb_month
    report["monthly_cost"] = report["bytes"] / GB * price
    report["price_per_gb_month"] = price
    report["location"] = f"{setup.s3_root}/"
    if not objects:
        print(f"no objects under {report['location']}: nothing stored, $0.00 per month")
    else:
        largest_share = ", ".join(
            f"{kind} {size_text(entry['bytes'])} ({100 * entry['bytes'] / report['bytes']:.1f}%)"
            for kind, entry in report["types"].items()
        )
        total = size_text(report["bytes"])
        print(f"{report['objects']} object(s), {total} under {report['location']}")
        print(f"by type: {largest_share}")
        if args.detailed:
            for folder, entry in report["folders"].items():
                size = size_text(entry["bytes"])
                print(f"  {folder:<63} {entry['objects']:>6} object(s) {size:>10}")
        else:
            print(f"{len(report['folders'])} folder(s); --detailed lists them")
        print(f"about ${report['monthly_cost']:.4f} per month at ${price}/GB-month")
    if args.output is not None:
        write_text_atomically(args.output, json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.output}", file=sys.stderr)
    return 0
