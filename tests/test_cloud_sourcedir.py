"""The SageMaker source archive holds what the job needs and nothing else: the files git tracks in
a checkout, the module and data files of an installed package, never a dotfile, a temporary file
or a file reached by a symlink out of its folder; `sagemaker-runner --dry-run
--list-source-files` names every file it holds."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import psa
from cloud_support import isolated_aws_env
from command_support import refusal
from psa.cloud.sourcedir import build_bundle
from psa.commands import sagemaker_runner as runner_command

SECRET = b"AWS_SECRET_ACCESS_KEY=do-not-pack"
METADATA = f"psa-{psa.__version__}.dist-info/METADATA"
GRID = ["--arch", "[2*8]", "--modes", "none", "--trials", "1", "--meta-loops", "1"]


def write(path: Path, data: bytes | str = b"# module\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def secret_outside(tmp_path: Path) -> Path:
    return write(tmp_path / "home" / ".aws" / "credentials", SECRET)


def archive_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def git(checkout: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(checkout), *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout with the entry files and a package tracked, and beside them an untracked
    .env, a temporary file, an untracked module and symlinks to a secret outside (one tracked)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "checkout"
    write(root / "aws" / "sagemaker" / "train.py", "print('job')\n")
    write(root / "aws" / "sagemaker" / "requirements.txt", "rich\n")
    write(root / "src" / "psa" / "__init__.py")
    write(root / "src" / "psa" / "cloud" / "runner.py")
    (root / "src" / "psa" / "tracked_link.py").symlink_to(secret_outside(tmp_path))
    git(root, "init", "-q")
    git(root, "add", ".")
    write(root / "aws" / "sagemaker" / ".env", SECRET)
    write(root / "aws" / "sagemaker" / "job.tmp", SECRET)
    write(root / "src" / "psa" / ".env", SECRET)
    write(root / "src" / "psa" / "x.tmp", SECRET)
    write(root / "src" / "psa" / "scratch.py", SECRET)
    (root / "src" / "psa" / "link.py").symlink_to(tmp_path / "home" / ".aws" / "credentials")
    return root


def test_a_checkout_packs_only_tracked_files_and_no_symlink_out(checkout):
    bundle = build_bundle(checkout / "aws" / "sagemaker", checkout / "src" / "psa")
    assert archive_names(bundle.data) == [
        "requirements.txt",
        "train.py",
        "psa/__init__.py",
        "psa/cloud/runner.py",
        METADATA,
    ]
    assert SECRET not in gzip.decompress(bundle.data)


def test_an_installed_package_packs_its_modules_and_data_files_only(tmp_path):
    package = tmp_path / "site-packages" / "psa"
    write(package / "__init__.py")
    write(package / "py.typed", "")
    write(package / "report" / "palette.json", "{}")
    write(package / "__pycache__" / "arch.cpython-311.pyc")
    write(package / ".env", SECRET)
    write(package / "x.tmp", SECRET)
    write(package / ".hidden" / "module.py", SECRET)
    (package / "alias.py").symlink_to(package / "__init__.py")  # inside: packed as a file
    (package / "link.py").symlink_to(secret_outside(tmp_path))
    write(tmp_path / "elsewhere" / "module.py", SECRET)
    (package / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    source = tmp_path / "entry"
    write(source / "train.py", "print('job')\n")
    write(source / "notes.tmp", SECRET)

    bundle = build_bundle(source, package)

    assert archive_names(bundle.data) == [
        "train.py",
        "psa/__init__.py",
        "psa/alias.py",
        "psa/py.typed",
        "psa/report/palette.json",
        METADATA,
    ]
    assert SECRET not in gzip.decompress(bundle.data)
    assert build_bundle(source, package).data == bundle.data


def test_the_dry_run_lists_exactly_the_files_the_archive_holds(
    checkout, monkeypatch, tmp_path, capsys
):
    isolated_aws_env(monkeypatch, tmp_path, credentials=False)
    source = checkout / "aws" / "sagemaker"
    argv = [*GRID, "--source-dir", str(source), "--dry-run", "--list-source-files"]
    assert runner_command.main(argv) == 0
    captured = capsys.readouterr()
    listed = captured.out.splitlines()
    assert listed == archive_names(build_bundle(source).data)
    assert listed[:2] == ["requirements.txt", "train.py"] and "psa/__init__.py" in listed
    assert f"({len(listed)} files," in captured.err


def test_listing_the_source_files_without_a_dry_run_is_refused(monkeypatch, tmp_path, capsys):
    isolated_aws_env(monkeypatch, tmp_path, credentials=False)
    status, message = refusal(capsys, "sagemaker-runner", [*GRID, "--list-source-files"])
    assert status == 2
    assert "--list-source-files lists the archive of a dry run; add --dry-run" in message
