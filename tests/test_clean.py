"""``clean`` and ``clean-all``: delete inside the model dir only, ask before deleting several."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from command_support import refusal
from psa.commands import clean
from psa.errors import UsageError


@pytest.fixture
def models(tmp_path: Path, monkeypatch) -> Path:
    """A model dir as train leaves it, plus an unrelated run and the git placeholder."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "models"
    folder.mkdir()
    for name in [
        "mnist_lkg.safetensors",
        "mnist_lkg.20250101-120000.jsonl",
        "mnist_lkg.20250102-090000.jsonl",
        "other.safetensors",
        "notes.txt",
        ".gitkeep",
    ]:
        (folder / name).write_text(name)
    (folder / "repro" / "4x4_none_t1").mkdir(parents=True)
    (folder / "repro" / "4x4_none_t1" / "mnist_lkg.safetensors").write_text("repro")
    return folder


@pytest.fixture
def terminal(monkeypatch):
    """Give the command a terminal that answers ``reply`` to the prompt."""

    def answer(reply: str) -> None:
        stdin = io.StringIO(reply)
        stdin.isatty = lambda: True
        monkeypatch.setattr(sys, "stdin", stdin)

    return answer


@pytest.fixture
def no_terminal(monkeypatch):
    stdin = io.StringIO("y\n")
    stdin.isatty = lambda: False
    monkeypatch.setattr(sys, "stdin", stdin)


def remaining(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_default_deletes_the_checkpoint_and_its_run_logs_only(models):
    clean.main(["--yes"])
    assert remaining(models) == {
        "other.safetensors",
        "notes.txt",
        ".gitkeep",
        "repro/4x4_none_t1/mnist_lkg.safetensors",
    }


def test_default_also_deletes_a_temp_file_that_a_kill_mid_save_left(models):
    (models / ".mnist_lkg.safetensors.a1b2c3.tmp").write_text("partial")
    (models / ".other.safetensors.a1b2c3.tmp").write_text("not ours")
    clean.main(["--yes"])
    assert ".mnist_lkg.safetensors.a1b2c3.tmp" not in remaining(models)
    assert ".other.safetensors.a1b2c3.tmp" in remaining(models)


def test_a_lone_checkpoint_is_deleted_without_asking(models, no_terminal):
    for log in models.glob("mnist_lkg.*.jsonl"):
        log.unlink()
    clean.main([])
    assert not (models / "mnist_lkg.safetensors").exists()


def test_several_files_without_a_terminal_or_yes_are_refused(models, no_terminal, capsys):
    before = remaining(models)
    with pytest.raises(UsageError) as refused:
        clean.main([])
    assert "no terminal" in str(refused.value) and "--yes" in str(refused.value)
    assert remaining(models) == before


def test_the_prompt_deletes_on_yes(models, terminal):
    terminal("y\n")
    clean.main(["other.safetensors", "notes.txt"])
    assert "other.safetensors" not in remaining(models)
    assert "notes.txt" not in remaining(models)


@pytest.mark.parametrize("reply", ["\n", "n\n", "nope\n", ""])
def test_the_prompt_keeps_everything_unless_the_answer_is_yes(models, terminal, reply, capsys):
    terminal(reply)
    before = remaining(models)
    clean.main(["other.safetensors", "notes.txt"])
    assert remaining(models) == before
    assert "Nothing deleted" in capsys.readouterr().out


def test_several_named_files_without_a_terminal_or_yes_are_refused(models, no_terminal, capsys):
    before = remaining(models)
    status, line = refusal(capsys, "clean", ["other.safetensors", "notes.txt"])
    assert status == 2 and re.match("^clean: .*no terminal.*--yes", line)
    assert remaining(models) == before


def test_all_deletes_every_file_in_the_model_dir_but_gitkeep_without_asking(models, no_terminal):
    clean.main(["--all"])
    assert remaining(models) == {".gitkeep"}
    assert models.is_dir()


def test_clean_all_is_clean_with_all_and_never_asks(models, no_terminal):
    clean.main_all([])
    assert remaining(models) == {".gitkeep"}


def test_clean_all_on_a_terminal_does_not_prompt(models, terminal, capsys):
    terminal("n\n")
    clean.main_all([])
    assert remaining(models) == {".gitkeep"}
    assert "[y/N]" not in capsys.readouterr().out


def test_dry_run_lists_and_keeps_everything(models, capsys):
    before = remaining(models)
    clean.main_all(["--dry-run"])
    output = capsys.readouterr().out
    assert remaining(models) == before
    assert "would delete models/notes.txt" in output
    assert ".gitkeep" not in output


@pytest.mark.parametrize(("names", "said"), [(["one"], "1 file"), (["one", "two"], "2 files")])
def test_dry_run_counts_its_files_in_words(tmp_path, capsys, names, said):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(name)
    clean.main(["--model-dir", str(folder), "--dry-run", *names])
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"Dry run: {said} in {folder} left in place."


def test_bare_names_resolve_in_a_custom_model_dir(models, tmp_path):
    custom = tmp_path / "elsewhere"
    custom.mkdir()
    (custom / "run.safetensors").write_text("x")
    clean.main(["--model-dir", str(custom), "run.safetensors"])
    assert not (custom / "run.safetensors").exists()
    assert (models / "other.safetensors").exists()


def test_default_clean_honours_the_model_dir(models, tmp_path):
    custom = tmp_path / "runs"
    custom.mkdir()
    (custom / "mnist_lkg.safetensors").write_text("x")
    clean.main(["--model-dir", str(custom)])
    assert not (custom / "mnist_lkg.safetensors").exists()
    assert (models / "mnist_lkg.safetensors").exists()


@pytest.mark.parametrize("name", ["models/../outside.txt", "outside.txt", "absolute"])
def test_paths_outside_the_model_dir_are_refused(models, name):
    outside = models.parent / "outside.txt"
    outside.write_text("precious")
    target = str(outside) if name == "absolute" else f"./{name}"
    with pytest.raises(UsageError) as refused:
        clean.main(["--yes", "--model-dir", "models", target])
    assert "outside the model dir" in str(refused.value)
    assert outside.read_text() == "precious"


def test_a_symlink_to_a_file_outside_is_refused(models):
    outside = models.parent / "outside.txt"
    outside.write_text("precious")
    (models / "link.txt").symlink_to(outside)
    with pytest.raises(UsageError, match="outside the model dir"):
        clean.main(["link.txt"])
    assert (models / "link.txt").is_symlink()
    assert outside.read_text() == "precious"


def test_all_skips_links_out_of_the_model_dir(models, capsys):
    outside = models.parent / "data"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (models / "linked-folder").symlink_to(outside, target_is_directory=True)
    (models / "linked-file").symlink_to(outside / "keep.txt")
    clean.main(["--all", "--yes"])
    assert (outside / "keep.txt").read_text() == "precious"
    assert "links outside" in capsys.readouterr().err


def test_one_missing_name_deletes_nothing(models):
    with pytest.raises(UsageError, match="absent.txt does not exist"):
        clean.main(["--yes", "notes.txt", "absent.txt"])
    assert (models / "notes.txt").exists()


def test_gitkeep_and_folders_are_refused_by_name(models):
    with pytest.raises(UsageError, match="never deleted"):
        clean.main([".gitkeep"])
    with pytest.raises(UsageError, match="is a folder"):
        clean.main(["repro"])


def test_all_and_names_together_are_refused(models):
    with pytest.raises(UsageError, match="not both"):
        clean.main(["--all", "notes.txt"])


def test_an_absent_model_dir_means_nothing_to_delete(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    clean.main([])
    assert "Nothing to delete" in capsys.readouterr().out
