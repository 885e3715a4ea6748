"""What a user sees, pinned byte for byte before the package's modules move or its engine changes:
a small sweep (three architectures, all six modes, two trials, three meta-loops, a fixed seed: its
records, loop logs, plan, tables and printed lines), two `train` runs (their checkpoint tensors,
metadata, run logs and printed lines) and the reporting commands' outputs on the shipped
`results/`. Every command runs as the user runs it, through its console script, so the pins hold
whatever module a command's code lives in.

Masked: wall-clock figures, run ids of a session, the git revision and the versions of the
environment. Everything else must be identical; the files are under tests/golden/outputs/. Set
PSA_UPDATE_GOLDEN=1 to rewrite them after a deliberate change (say which in the commit), never in
CI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "outputs"
UPDATE = os.environ.get("PSA_UPDATE_GOLDEN") == "1"
BIN = Path(sys.executable).parent

# Per-run values: wall clock, a session's run id, the checkout and the environment.
MASKED_KEYS = frozenset(
    {
        "seconds", "train_seconds", "provenance", "git_revision", "torch_version",
        "created", "created_at", "updated_at", "saved_at", "timestamp", "python_version",
    }
)  # fmt: skip
SECONDS = re.compile(r"\b\d+(\.\d+)?s\b")
PROVENANCE_ID = re.compile(r"\b\d{8}T\d{12}Z-[0-9a-f]{6}\b")
# The checkout's state, not the command's: new files under src/ that the commit lacks.
SOURCE_WARNING = re.compile(r"^psa: warning: files under src/ that the commit lacks .*\n", re.M)

pytestmark = pytest.mark.slow


def run(name: str, *args: str, cwd: Path = ROOT) -> str:
    """Run console script ``name`` as a user would; its stdout and stderr, checked for success."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PSA_RUN_PREFIX", None)
    done = subprocess.run(
        [str(BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{name} {args}: exit {done.returncode}\n{done.stderr}"
    return done.stdout + done.stderr


def masked_text(text: str, places: dict[str, str]) -> str:
    for path, label in places.items():
        text = text.replace(path, label)
    text = PROVENANCE_ID.sub("<provenance>", SOURCE_WARNING.sub("", text))
    return SECONDS.sub("<s>", text)


def masked_json(value):
    if isinstance(value, dict):
        return {k: masked_json(v) for k, v in value.items() if k not in MASKED_KEYS}
    if isinstance(value, list):
        return [masked_json(v) for v in value]
    return value


def masked_file(path: Path, places: dict[str, str]) -> str:
    text = path.read_text()
    if path.suffix == ".jsonl":
        lines = [json.loads(line) for line in text.splitlines()]
        text = "".join(json.dumps(masked_json(line), sort_keys=True) + "\n" for line in lines)
        return PROVENANCE_ID.sub("<session>", text)
    if path.suffix == ".json":
        text = json.dumps(masked_json(json.loads(text)), indent=1, sort_keys=True) + "\n"
        return PROVENANCE_ID.sub("<session>", text)
    return masked_text(text, places)


def tensors_digest(path: Path) -> dict:
    """Each tensor of a safetensors file (dtype, shape, SHA-256 of its bytes) and its metadata."""
    found = {}
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest = hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
            found[name] = f"{tensor.dtype} {list(tensor.shape)} {digest}"
    meta = {}
    for key, value in sorted(metadata.items()):
        try:
            meta[key] = masked_json(json.loads(value))
        except json.JSONDecodeError:
            meta[key] = value
    return {"tensors": found, "metadata": masked_json(meta)}


def tree(folder: Path, places: dict[str, str]) -> dict[str, str]:
    """Every text file under ``folder`` by its relative path, masked; safetensors as digests; the
    provenance folder as its count of files (its contents are the environment's)."""
    found = {}
    sessions: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        for session in PROVENANCE_ID.findall(relative):  # a run log per session, in time order
            sessions.setdefault(session, f"<session {len(sessions) + 1}>")
            relative = relative.replace(session, sessions[session])
        if relative.startswith("provenance/"):
            found.setdefault("provenance/", "")
            found["provenance/"] += "1 file\n"
        elif path.suffix == ".safetensors":
            found[relative + ".digest.json"] = json.dumps(tensors_digest(path), indent=1) + "\n"
        elif path.suffix in {".png", ".pdf", ".svg"}:
            found[relative] = "<image>\n"
        else:
            found[relative] = masked_file(path, places)
    return found


def check(area: str, outputs: dict[str, str]) -> None:
    """Compare ``outputs`` with tests/golden/outputs/<area>/, file by file."""
    golden = GOLDEN / area
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        for relative, text in outputs.items():
            target = golden / (relative.rstrip("/") + (".count" if relative.endswith("/") else ""))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    pinned = {
        path.relative_to(golden).as_posix(): path.read_text()
        for path in sorted(golden.rglob("*"))
        if path.is_file()
    }
    found = {
        (relative.rstrip("/") + (".count" if relative.endswith("/") else "")): text
        for relative, text in outputs.items()
    }
    assert sorted(found) == sorted(pinned), f"{area}: files differ from the golden set"
    for relative, text in pinned.items():
        assert found[relative] == text, f"{area}/{relative} differs from its golden file"


def test_a_small_sweep_writes_what_it_wrote_before(tmp_path):
    results = tmp_path / "sweep"
    archs = [flag for arch in ("[1*8]", "[2*4]", "[3*3]") for flag in ("--arch", arch)]
    flags = [*archs, "--trials", "2", "--meta-loops", "3", "--seed", "2026", "--device", "cpu"]
    places = {str(results): "<results>"}
    dry = run("sweep", *flags, "--results-dir", str(results), "--dry-run")
    printed = run("sweep", *flags, "--results-dir", str(results))
    status = run("sweep", *flags, "--results-dir", str(results), "--status")
    outputs = tree(results, places)
    outputs["stdout/dry-run.txt"] = masked_text(dry, places)
    outputs["stdout/sweep.txt"] = masked_text(printed, places)
    outputs["stdout/status.txt"] = masked_text(status, places)
    merged = tmp_path / "merged"
    outputs["stdout/merge-results.txt"] = masked_text(
        run("merge-results", "--results-dir", str(merged), str(results)),
        {**places, str(merged): "<merged>"},
    )
    for relative, text in tree(merged, places).items():
        outputs[f"merged/{relative}"] = text
    check("sweep", outputs)


@pytest.mark.parametrize("mode", ["dropout", "full"])
def test_a_train_run_saves_and_prints_what_it_did_before(tmp_path, mode):
    models = tmp_path / "models"
    places = {str(models): "<models>"}
    flags = ["--arch", "[2*4]", "--ablation-mode", mode, "--seed", "11", "--device", "cpu"]
    first = run("train", *flags, "--meta-loops", "2", "--model-dir", str(models))
    resumed = run("train", *flags, "--meta-loops", "1", "--model-dir", str(models))
    outputs = tree(models, places)
    outputs["stdout/first.txt"] = masked_text(first, places)
    outputs["stdout/resumed.txt"] = masked_text(resumed, places)
    check(f"train-{mode}", outputs)


# The reporting commands on the shipped results/, as TOOLS.md runs them; {out} is a fresh folder.
REPORTS = {
    "classify-regimes": [
        "--trials-file", "results", "--config-file", "reproduction/configurations.txt",
    ],
    "make-architecture-table": ["--config-file", "reproduction/configurations.txt"],
    "make-trial-accuracy-table": [
        "--datafile", "results/psa_resmlp_summary.md", "--order", "reproduction/configurations.txt",
        "--caption", "Mean validation bounty (\\%)", "--label", "tab:accuracy",
    ],
    "make-figure-design-space": [
        "--config-file", "reproduction/configurations.txt", "--output-file", "{out}/space.png",
    ],
    "make-figure-heatmaps": [
        "--trials-file", "results", "--config-file", "results/configurations.txt",
        "--output-dir", "{out}",
    ],
    "make-convergence-plots": [
        "--logs-dir", "results", "--output-dir", "{out}", "--curve", "lkg",
        "--targets", "1*64,4*17,18*18,47*4",
    ],
    "compare-modes": ["--trials-file", "results", "--config-file", "results/configurations.txt"],
    "results-value": [
        "--results-dir", "results", "--where", "arch == '4*17' and mode == 'none'",
        "--column", "val_bounty", "--stat", "mean",
    ],
    "check-reproduction": [
        "--results-dir", "results", "--claims", "reproduction/claims/shipped.toml",
    ],
    "export-results": ["--results-dir", "results", "--output-dir", "{out}/export"],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(REPORTS))
def test_a_reporting_command_prints_and_writes_what_it_did_before(tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    places = {str(out): "<out>"}
    printed = run(command, *(arg.replace("{out}", str(out)) for arg in REPORTS[command]))
    outputs = tree(out, places)
    outputs["stdout.txt"] = masked_text(printed, places)
    check(f"report/{command}", outputs)
