"""The architecture grammar: parsing, formatting, merging and the errors users see."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from psa.arch import (
    EXAMPLE,
    MAX_DEPTH,
    ArchError,
    arch_flag,
    arch_slug,
    format_arch,
    parse_arch,
)
from psa.commands import train

depths = st.integers(min_value=1, max_value=40)
widths = st.integers(min_value=1, max_value=300)


@st.composite
def merged_stacks(draw) -> list[tuple[int, int]]:
    """Stacks as parse_arch returns them: no two consecutive stacks share a width."""
    count = draw(st.integers(min_value=1, max_value=6))
    stacks: list[tuple[int, int]] = []
    for _ in range(count):
        width = draw(widths.filter(lambda w, s=stacks: not s or w != s[-1][1]))
        stacks.append((draw(depths), width))
    return stacks


blanks = st.text(alphabet=" \t", max_size=3)


def expected_merge(segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for depth, width in segments:
        if merged and merged[-1][1] == width:
            merged[-1] = (merged[-1][0] + depth, width)
        else:
            merged.append((depth, width))
    return merged


@given(merged_stacks())
def test_format_then_parse_returns_the_same_stacks(stacks):
    assert parse_arch(arch_flag(stacks)) == stacks
    assert parse_arch(f"[{format_arch(stacks)}]") == stacks
    assert format_arch(parse_arch(arch_flag(stacks))) == format_arch(stacks)


@given(merged_stacks())
def test_slug_and_key_name_every_stack_in_order(stacks):
    assert arch_slug(stacks) == "-".join(f"{d}x{w}" for d, w in stacks)
    assert format_arch(stacks).split(", ") == [f"{d}*{w}" for d, w in stacks]


@given(st.lists(st.tuples(depths, st.sampled_from([4, 8, 16])), min_size=1, max_size=8), st.data())
def test_whitespace_anywhere_between_tokens_is_tolerated(segments, data):
    def pad() -> str:
        return data.draw(blanks)

    body = ",".join(f"{pad()}{d}{pad()}*{pad()}{w}{pad()}" for d, w in segments)
    text = f"{pad()}[{body}]{pad()}"
    assert parse_arch(text) == expected_merge(segments)


@given(st.lists(st.tuples(depths, st.sampled_from([2, 3, 5])), min_size=1, max_size=10))
def test_equal_consecutive_widths_merge_into_one_stack(segments):
    stacks = parse_arch("[" + ", ".join(f"{d}*{w}" for d, w in segments) + "]")
    assert stacks == expected_merge(segments)
    assert all(a[1] != b[1] for a, b in zip(stacks, stacks[1:]))
    assert sum(d for d, _ in stacks) == sum(d for d, _ in segments)


def test_merging_examples_from_the_spec():
    assert parse_arch("[4*4, 2*8]") == [(4, 4), (2, 8)]
    assert parse_arch("[2*8, 3*8]") == [(5, 8)]
    assert parse_arch("[2*8, 1*4, 3*8]") == [(2, 8), (1, 4), (3, 8)]


@pytest.mark.parametrize(
    "text",
    [
        "[4x4]",
        "[0*8]",
        "[8*0]",
        "[]",
        "[ ]",
        "4*4",
        "[4*4",
        "4*4]",
        "[-1*4]",
        "[4*-1]",
        "[4*4,]",
        "[,4*4]",
        "[4**4]",
        "[4*4*4]",
        "[4.5*4]",
        "[1e3*4]",
        "[4*4] [2*8]",
        "",
        f"[{MAX_DEPTH + 1}*4]",
        f"[{MAX_DEPTH}*4, 1*8]",
        "[1*100000000]",
        "[1*60000]",
        "[99999999999999999999999*4]",
        "[" + "1" * 5000 + "*4]",
    ],
)
def test_malformed_or_absurd_architectures_are_rejected(text):
    with pytest.raises(ArchError):
        parse_arch(text)


@given(st.text(max_size=40))
@example("[" + "9" * 5000 + "*4]")
@example("[4*" + "0" * 4500 + "7]")
def test_random_text_never_raises_anything_but_arch_error(text):
    try:
        stacks = parse_arch(text)
    except ArchError:
        return
    assert stacks and all(depth >= 1 and width >= 1 for depth, width in stacks)


@given(st.text(alphabet="[]*, 0123456789x-\t", max_size=30))
def test_grammar_like_junk_either_parses_cleanly_or_raises_arch_error(text):
    try:
        stacks = parse_arch(text)
    except ArchError:
        return
    assert all(isinstance(d, int) and isinstance(w, int) for d, w in stacks)
    assert all(a[1] != b[1] for a, b in zip(stacks, stacks[1:]))
    assert parse_arch(arch_flag(stacks)) == stacks


@pytest.mark.parametrize("bad", ["[4x4]", "[0*8]", "[]", "4*4", "[-1*4]", "[1*100000000]"])
def test_train_rejects_a_bad_arch_with_one_line_and_a_valid_example(bad, capsys):
    with pytest.raises(SystemExit) as raised:
        train.main(["--arch", bad])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = err.splitlines()
    assert len(errors) == 1 and "usage:" not in err
    assert errors[0].startswith("train: argument --arch: ")
    assert repr(bad) in errors[0] or bad.strip("[]") in errors[0]
    assert EXAMPLE in errors[0]
