"""What the project keeps on S3, by job and by file type, and its cost (sagemaker-estimate-storage).

Lists every object under s3://<bucket>/<prefix>/, groups it by the first folder below the prefix
(a job's outputs, checkpoints/, source/, dataset/) and by type, and prices the total at the
configured USD per GB-month. It only reads; it does not rebuild any job list.
"""

from __future__ import annotations

from collections import defaultdict

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


def size_text(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
