"""The architecture grammar: parsing, formatting, merging and the errors users see."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from psa.arch import (
    EXAMPLE,
    MAX_DEPTH,
    Arch,
    ArchError,
    parse_arch,
    parse_key,
    read_config_file,
)
from psa.commands import train
from psa.model import build_network

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
def test_flag_and_key_parse_back_to_the_same_arch(stacks):
    arch = Arch(stacks)
    assert arch.stacks == tuple(stacks)
    assert parse_arch(arch.flag) == arch
    assert parse_key(arch.key) == arch
    assert parse_key(arch.flag) == arch
    assert arch.flag == f"[{arch.key}]"


@given(merged_stacks())
def test_slug_and_key_name_every_stack_in_order(stacks):
    arch = Arch(stacks)
    assert arch.slug == "-".join(f"{d}x{w}" for d, w in stacks)
    assert arch.key.split(", ") == [f"{d}*{w}" for d, w in stacks]


def test_the_names_of_an_arch():
    arch = parse_arch("[4*4, 2*8]")
    assert (arch.key, arch.flag, arch.slug) == ("4*4, 2*8", "[4*4, 2*8]", "4x4-2x8")
    assert str(parse_arch("[4*17]")) == "[4*17]"


@given(st.lists(st.tuples(depths, st.sampled_from([3, 5, 784])), min_size=1, max_size=4))
def test_an_arch_built_from_segments_merges_them_as_the_grammar_does(segments):
    text = "[" + ", ".join(f"{d}*{w}" for d, w in segments) + "]"
    assert Arch(segments) == parse_arch(text)
    assert Arch(segments).stacks == tuple(expected_merge(segments))


@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 40)), min_size=1, max_size=4),
    st.sampled_from(["resmlp", "mlp"]),
)
def test_parameter_counts_without_torch_equal_the_built_networks(segments, model):
    arch = Arch(segments)
    assert arch.parameters(model) == build_network(model, arch).parameter_count()
    assert arch.resmlp_parameters == build_network("resmlp", arch).parameter_count()
    assert arch.mlp_parameters == build_network("mlp", arch).parameter_count()


@pytest.mark.parametrize("stacks", [[(0, 4)], [(4, 0)], [], [(MAX_DEPTH + 1, 4)], [(1, 60000)]])
def test_an_arch_outside_the_grammar_limits_cannot_be_built(stacks):
    with pytest.raises(ArchError):
        Arch(stacks)


@given(st.lists(st.tuples(depths, st.sampled_from([4, 8, 16])), min_size=1, max_size=8), st.data())
def test_whitespace_anywhere_between_tokens_is_tolerated(segments, data):
    def pad() -> str:
        return data.draw(blanks)

    body = ",".join(f"{pad()}{d}{pad()}*{pad()}{w}{pad()}" for d, w in segments)
    text = f"{pad()}[{body}]{pad()}"
    assert parse_arch(text).stacks == tuple(expected_merge(segments))


@given(st.lists(st.tuples(depths, st.sampled_from([2, 3, 5])), min_size=1, max_size=10))
def test_equal_consecutive_widths_merge_into_one_stack(segments):
    stacks = parse_arch("[" + ", ".join(f"{d}*{w}" for d, w in segments) + "]").stacks
    assert stacks == tuple(expected_merge(segments))
    assert all(a[1] != b[1] for a, b in zip(stacks, stacks[1:]))
    assert sum(d for d, _ in stacks) == sum(d for d, _ in segments)


def test_merging_examples_from_the_spec():
    assert parse_arch("[4*4, 2*8]").stacks == ((4, 4), (2, 8))
    assert parse_arch("[2*8, 3*8]").stacks == ((5, 8),)
    assert parse_arch("[2*8, 1*4, 3*8]").stacks == ((2, 8), (1, 4), (3, 8))


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
        "[\uff11*\uff18]",
        "[1*\u0668]",
        "[\U0001d7e3*4]",
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
        stacks = parse_arch(text).stacks
    except ArchError:
        return
    assert stacks and all(depth >= 1 and width >= 1 for depth, width in stacks)
    assert not any(c.isdigit() and not c.isascii() for c in text)


@given(st.text(alphabet="[]*, 0123456789x-\t", max_size=30))
def test_grammar_like_junk_either_parses_cleanly_or_raises_arch_error(text):
    try:
        arch = parse_arch(text)
    except ArchError:
        return
    assert all(isinstance(d, int) and isinstance(w, int) for d, w in arch.stacks)
    assert all(a[1] != b[1] for a, b in zip(arch.stacks, arch.stacks[1:]))
    assert parse_arch(arch.flag) == arch


@given(merged_stacks(), st.data())
def test_any_non_ascii_digit_in_an_arch_is_refused(stacks, data):
    """Unicode digits (fullwidth, Arabic-Indic, mathematical ...), which int() reads as numbers,
    are not part of the grammar: an arch with one in place of an ASCII digit is refused."""
    text = Arch(stacks).flag
    position = data.draw(st.sampled_from([i for i, c in enumerate(text) if c.isdigit()]))
    digit = data.draw(st.characters(categories=["Nd"]).filter(lambda c: not c.isascii()))
    changed = text[:position] + digit + text[position + 1 :]
    with pytest.raises(ArchError, match="ASCII digits"):
        parse_arch(changed)
    with pytest.raises(ArchError, match="ASCII digits"):
        parse_key(changed)


def test_a_configurations_file_with_a_fullwidth_digit_names_its_line(tmp_path):
    path = tmp_path / "configs.txt"
    path.write_text("# depth*width\n4*17\n\uff11*\uff18\n")
    with pytest.raises(ArchError, match=r"configs.txt:3: .*ASCII digits"):
        read_config_file(path)


def test_train_refuses_a_fullwidth_arch_in_one_line(capsys):
    with pytest.raises(SystemExit) as raised:
        train.main(["--arch", "[\uff11*\uff18]"])
    assert raised.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("train: argument --arch: ") and "ASCII digits" in line


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
