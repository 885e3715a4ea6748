"""Outputs that README.md, TOOLS.md and REPRODUCTION.md quote, read from the docs, to be matched
against what the commands print now.

A quote is an inline code span or an indented block of a doc. Its shape is the quote with every
``<placeholder>`` standing for any text, every ``...`` or ``…`` for any run of text and runs of
spaces for any run of spaces. A quote that illustrates a kind of line (a loop line of some run)
is matched with its figures standing for any figure too (``93.5``, ``01:12:09``, ``1,102``, and a
12-digit hexadecimal token such as a plan's fingerprint or a git revision); a quote of what a
given command prints is matched with its figures as they are, so that figures the command no
longer prints fail: such a quote masks the figures that vary (``<fingerprint>``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
FIGURE = re.compile(r"\d+(?:[.,:]\d+)*")
HEX = re.compile(r"\b[0-9a-f]{12}\b")
ELISION = re.compile(r"\.\.\.|…")


def doc_text(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def quoted(doc: str, start: str) -> str:
    """The inline code span of ``doc`` that starts with ``start`` (spaces and line breaks inside
    it collapsed to one space)."""
    text = doc_text(doc)
    spans = [
        " ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", text, re.DOTALL)
    ]
    found = [span for span in spans if span.startswith(start)]
    assert len(found) == 1, f"{doc} quotes {len(found)} outputs starting {start!r}"
    return found[0]


def quoted_block(doc: str, start: str) -> list[str]:
    """The lines of the indented block of ``doc`` whose first line starts with ``start`` (after
    its indent), without the indent."""
    lines = doc_text(doc).splitlines()
    firsts = [n for n, line in enumerate(lines) if line.strip().startswith(start)]
    assert len(firsts) == 1, f"{doc} has {len(firsts)} blocks starting {start!r}"
    first = firsts[0]
    indent = len(lines[first]) - len(lines[first].lstrip())
    block = []
    for line in lines[first:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    while block and not block[-1].strip():
        block.pop()
    return block


def shape(quote: str, figures: bool = True) -> re.Pattern:
    """The regular expression a printed line must match in full to have the quote's shape; with
    ``figures`` False the quote's figures must be printed as they are."""
    pattern = []
    kinds = [f"(?P<placeholder>{PLACEHOLDER.pattern})"]
    if figures:
        kinds += [f"(?P<hex>{HEX.pattern})", f"(?P<figure>{FIGURE.pattern})"]
    kinds += [f"(?P<elision>{ELISION.pattern})", "(?P<space>\\s+)"]
    tokens = re.compile("|".join(kinds))
    position = 0
    for token in tokens.finditer(quote):
        pattern.append(re.escape(quote[position : token.start()]))
        kind = token.lastgroup
        pattern.append(
            {
                "placeholder": r".+?",
                "hex": r"[0-9a-f]{12}",
                "figure": FIGURE.pattern,
                "elision": r".*?",
                "space": r"\s+",
            }[kind]
        )
        position = token.end()
    pattern.append(re.escape(quote[position:]))
    return re.compile("".join(pattern))


def assert_printed(quote: str, printed: str, figures: bool = True) -> None:
    """Some line of ``printed`` has the quote's shape (``figures``: as for ``shape``)."""
    lines = [line.strip() for line in printed.splitlines()]
    pattern = shape(quote.strip(), figures)
    assert any(pattern.fullmatch(line) for line in lines), (
        f"no printed line has the shape of the documented {quote!r}:\n{printed}"
    )


def assert_block_printed(block: list[str], printed: str, figures: bool = True) -> None:
    """Every line of the documented block but its elisions (``...``) has the shape of a printed
    line, in the block's order (``figures``: as for ``shape``)."""
    lines = [line.strip() for line in printed.splitlines()]
    position = 0
    for documented in block:
        if ELISION.fullmatch(documented.strip()) or not documented.strip():
            continue
        pattern = shape(documented.strip(), figures)
        for index in range(position, len(lines)):
            if pattern.fullmatch(lines[index]):
                position = index + 1
                break
        else:
            raise AssertionError(
                f"no printed line after line {position} has the shape of the documented "
                f"{documented.strip()!r}:\n{printed}"
            )
