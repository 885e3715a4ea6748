"""The package as a package index gets it: the reproduction files it ships, the README's links, and
the built wheel (what it packs, its metadata, and an install outside the checkout that runs the
grid commands and a tiny train, and refuses a missing MNIST in one line instead of downloading).

The wheel is built with the pinned Poetry of scripts/poetry (its poetry-core, offline) from a copy
of the files git tracks, and installed with pip --no-deps into a fresh venv that reads this
environment's site-packages for its dependencies."""

from __future__ import annotations

import email
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPRODUCTION = ROOT / "reproduction"
SHIPPED = ROOT / "src" / "psa" / "reproduction"
POETRY_PYTHON = ROOT / ".tools" / "poetry" / "bin" / "python"
UPSTREAM_RESMLP = "https://github.com/tcotten-scrypted/persistent-stochastic-ablation-resmlp"


def reproduction_files(folder: Path) -> list[str]:
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in (".txt", ".toml")
    )


def test_the_package_ships_the_repository_reproduction_files_byte_for_byte():
    assert reproduction_files(SHIPPED) == reproduction_files(REPRODUCTION)
    differing = [
        name
        for name in reproduction_files(REPRODUCTION)
        if (REPRODUCTION / name).read_bytes() != (SHIPPED / name).read_bytes()
    ]
    assert not differing, f"copy reproduction/{differing[0]} to src/psa/reproduction/"


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-") for text in headings}


def test_readme_links_name_files_and_headings_of_this_repository():
    """The README's links are relative (psa's own repository is named nowhere, so a package
    index page cannot resolve them yet); each names a file or heading that exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if re.match(r"https?://", target):
            continue
        path, _, anchor = target.partition("#")
        path = path or "README.md"
        assert (ROOT / path).exists(), target
        if anchor:
            assert anchor in heading_anchors((ROOT / path).read_text(encoding="utf-8")), target


def tracked(*paths: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *paths], cwd=ROOT, capture_output=True, check=True
    )
    return [name for name in os.fsdecode(listed.stdout).split("\0") if name]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not POETRY_PYTHON.is_file():
        pytest.skip("needs the pinned Poetry in .tools/poetry: run scripts/poetry --version once")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    source = tmp_path_factory.mktemp("source")
    for name in tracked("pyproject.toml", "README.md", "LICENSE", "src"):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, source / name)
    # What a working tree holds beside the package's files: none of it may be packed.
    for stray in ("notes.md", "store/results.py.orig", "cli.py.rej", "lkg.safetensors"):
        (source / "src" / "psa" / stray).write_text("scratch\n")
    out = tmp_path_factory.mktemp("dist")
    build = "import sys; from poetry.core.masonry import api; print(api.build_wheel(sys.argv[1]))"
    built = subprocess.run(
        [POETRY_PYTHON, "-c", build, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    return out / built.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_wheel_packs_the_tracked_package_files_and_nothing_else(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packed = {
            name for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")
        }
    assert packed == {name.removeprefix("src/") for name in tracked("src/psa")}


@pytest.mark.slow
def test_the_wheel_metadata_names_authors_urls_and_classifiers(wheel):
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
    assert metadata["Author"] == "Tim Cotten"
    urls = metadata.get_all("Project-URL")
    assert any(url.endswith(UPSTREAM_RESMLP) for url in urls), urls
    assert "Intended Audience :: Science/Research" in metadata.get_all("Classifier")
    assert "# psa" in metadata.get_payload()


def outside_env() -> dict:
    """This environment without what would make the installed psa the checkout's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PSA_RUN_PREFIX")}
    env.pop("SM_CHANNEL_TRAINING", None)
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The bin/ of a fresh venv holding the wheel; its dependencies are this environment's,
    read as plain path entries (so an editable psa's .pth in them is not)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    subprocess.run(
        [*pip, "--no-index", "--quiet", str(wheel)], check=True, env=outside_env(), timeout=300
    )
    return venv / "bin"


def run_outside(installed: Path, where: Path, *argv: str) -> subprocess.CompletedProcess:
    command = [str(installed / argv[0]), *argv[1:]]
    return subprocess.run(
        command, cwd=where, env=outside_env(), capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_installed_wheel_runs_the_grid_commands_and_a_train_outside_the_checkout(
    installed, tmp_path, repo_dataset
):
    where = tmp_path / "elsewhere"
    where.mkdir()
    grid = "import psa, psa.selfcheck as s; print(psa.__file__); print(len(s.grid_archs()))"
    done = run_outside(installed, where, "python", "-c", grid)
    module, archs = done.stdout.split()
    assert Path(module).is_relative_to(installed.parent) and archs == "98", done.stderr

    argv = ["--dry-run", "--trials", "1", "--meta-loops", "1", "--seed", "1", "--device", "cpu"]
    done = run_outside(installed, where, "sweep", *argv)
    assert done.returncode == 0 and "98 decay trials not trained" in done.stdout, done.stderr

    done = run_outside(installed, where, "make-architecture-table")
    assert done.returncode == 0, done.stderr
    assert len(re.findall(r"^\d+\*\d+ & ", done.stdout, re.MULTILINE)) == 98
    assert "Asymmetric" in done.stdout

    source_dir = ROOT / "aws" / "sagemaker"
    done = run_outside(
        installed, where, "sagemaker-runner", "--dry-run", "--source-dir", source_dir
    )
    assert done.returncode == 0 and "dry run: 98 job(s)" in done.stderr, done.stderr

    assert run_outside(installed, where, "check-device", "--help").returncode == 0

    argv = ["--arch", "[1*8]", "--meta-loops", "1", "--seed", "1", "--device", "cpu"]
    done = run_outside(installed, where, "train", *argv, "--data-dir", str(repo_dataset))
    assert done.returncode == 0, done.stderr
    assert (where / "models" / "mnist_lkg.safetensors").is_file()


@pytest.mark.slow
def test_the_installed_wheel_refuses_a_missing_mnist_in_one_line_without_a_download(
    installed, tmp_path
):
    argv = ["--arch", "[1*8]", "--meta-loops", "1", "--device", "cpu"]
    done = run_outside(installed, tmp_path, "train", *argv)
    assert done.returncode == 1
    assert done.stderr.startswith(
        "train: dataset/train-images-idx3-ubyte.gz is missing (MNIST is never downloaded); "
    )
    assert done.stderr.count("\n") == 1 and "--data-dir" in done.stderr
    assert not (tmp_path / "dataset").exists()
