"""The import layering of the package, as pyproject.toml's import-linter contracts state it: the
method imports nothing above it, the store no sweep, report, cloud or command, no library module
the entry layer (cli, commands), and no two modules import each other in a circle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import psa

ROOT = Path(psa.__file__).resolve().parents[2]


def lint_imports(cwd: Path = ROOT, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """lint-imports of the environment the tests run in, on the contracts in ``cwd``; with
    ``pythonpath``, on the package found there."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert command, "lint-imports is not installed: scripts/poetry install"
    env = {**os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    return subprocess.run(
        [command, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_package_keeps_its_layering():
    finished = lint_imports()
    assert finished.returncode == 0, finished.stdout + finished.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for contract in contracts["contracts"]:
        assert f"{contract['name']} KEPT" in finished.stdout


def test_an_import_against_the_layering_fails_the_check(tmp_path):
    # A copy of the package in which the network imports the results store.
    copy = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "psa", copy / "psa", ignore=shutil.ignore_patterns("__pycache__")
    )
    model = copy / "psa" / "model.py"
    model.write_text(model.read_text() + "\nfrom psa.store import ResultsStore  # noqa\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    finished = lint_imports(cwd=tmp_path, pythonpath=copy)
    assert finished.returncode == 1, finished.stdout + finished.stderr
    assert "The method imports nothing that runs, stores or reports it BROKEN" in finished.stdout
    assert "psa.model -> psa.store" in finished.stdout
