"""Listing the objects under an S3 prefix, every page of them."""

from __future__ import annotations

from psa.cloud.aws import with_backoff


def list_objects(s3, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under the prefix."""
    objects, request = [], {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = with_backoff(lambda request=request: s3.list_objects_v2(**request))
        objects += [(item["Key"], item["Size"]) for item in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return objects
        request = {**request, "ContinuationToken": page["NextContinuationToken"]}
