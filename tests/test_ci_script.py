"""`.ci/run` refuses to run with PSA_UPDATE_GOLDEN set: the golden tests would rewrite their
files and pass, so CI could never fail on a changed table."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CI_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "run"


def run_ci_copy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The CI script run from an empty checkout (no scripts/poetry): past its guards it fails at
    the first command, so it never installs or tests anything here."""
    copy = tmp_path / ".ci" / "run"
    copy.parent.mkdir()
    shutil.copy(CI_SCRIPT, copy)
    environment = {k: v for k, v in os.environ.items() if k != "PSA_UPDATE_GOLDEN"}
    return subprocess.run(
        ["bash", str(copy)], capture_output=True, text=True, env={**environment, **env}, timeout=60
    )


def test_ci_refuses_to_run_with_psa_update_golden_set(tmp_path):
    done = run_ci_copy(tmp_path, PSA_UPDATE_GOLDEN="1")
    assert done.returncode == 2
    assert done.stderr.startswith("ci: PSA_UPDATE_GOLDEN is set")
    assert "scripts/poetry" not in done.stderr  # refused before its first command


def test_ci_without_psa_update_golden_goes_on_to_install(tmp_path):
    done = run_ci_copy(tmp_path)
    assert "PSA_UPDATE_GOLDEN" not in done.stderr
    assert "scripts/poetry" in done.stderr and done.returncode != 0
