"""The repository's reproduction/ files, shipped inside the package so an installed psa has them:
configurations.txt (the paper's 98 architectures), asymmetric.txt, smoke-configurations.txt and
claims/*.toml. They are byte-for-byte copies of reproduction/ (tests/test_packaging.py keeps the
two identical): change a file there and copy it here."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_file(name: str) -> Path:
    """The package's copy of reproduction/``name`` (``configurations.txt``, ``claims/x.toml``)."""
    return Path(str(files(__name__).joinpath(name)))


PAPER_GRID = shipped_file("configurations.txt")
ASYMMETRIC = shipped_file("asymmetric.txt")
# How help texts name the defaults: the repository path, the same file as the package's copy.
PAPER_GRID_NAME = "reproduction/configurations.txt"
ASYMMETRIC_NAME = "reproduction/asymmetric.txt"
