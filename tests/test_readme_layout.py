"""The README's table of the package names every module of src/psa/ and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import psa

PACKAGE = Path(psa.__file__).resolve().parent
README = PACKAGE.parents[1] / "README.md"
HEADING = "### The package, `src/psa/`"
ROW = re.compile(r"^\| `([^`]+)` \|")


def listed_modules(text: str) -> list[str]:
    """The first cells of the rows of the package table (the table after HEADING)."""
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0]
    return [match.group(1) for line in section.splitlines() if (match := ROW.match(line))]


def package_modules() -> set[str]:
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_the_readme_lists_every_module_of_the_package_once_and_nothing_else():
    listed = listed_modules(README.read_text(encoding="utf-8"))
    assert len(listed) == len(set(listed)), "a module listed twice"
    modules = package_modules()
    assert sorted(modules - set(listed)) == [], "modules the README's table does not list"
    assert sorted(set(listed) - modules) == [], "rows naming no module of the package"


def test_the_check_reads_the_table_and_notices_a_missing_or_extra_row():
    text = README.read_text(encoding="utf-8")
    assert "engine.py" in listed_modules(text)
    without_engine = text.replace("| `engine.py` |", "| engine.py |")
    assert "engine.py" not in listed_modules(without_engine)
    extra = text.replace("| `engine.py` |", "| `motor.py` | x |\n| `engine.py` |", 1)
    assert "motor.py" in listed_modules(extra)
