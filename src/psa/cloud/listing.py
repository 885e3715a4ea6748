"""Listing the objects under an S3 prefix, every page of them."""

from __future__ import annotations


def list_objects(s3, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under the prefix."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [(item["Key"], item["Size"]) for page in pages for item in page.get("Contents", [])]
