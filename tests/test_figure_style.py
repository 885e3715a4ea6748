import argparse
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psa.report.style import FigureError, FigureOptions, figure_format, parse_size

INCHES = st.floats(min_value=0.01, max_value=40, allow_nan=False)


@given(INCHES, INCHES)
def test_a_width_and_height_in_inches_parse_as_given(width, height):
    assert parse_size(f"{width!r},{height!r}") == (width, height)
    assert FigureOptions(size=(width, height)).inches("map") == (width, height)


@given(st.text(max_size=12))
def test_anything_else_is_refused_with_what_to_give(text):
    try:
        size = parse_size(text)
    except argparse.ArgumentTypeError as error:
        assert "give" in str(error)
    else:
        assert size in ("column", "page") or all(0 < x <= 40 for x in size)


@pytest.mark.parametrize("text", ["0,3", "3,-1", "50,3", "nan,3", "inf,2", "3", "3,4,5"])
def test_sizes_out_of_range_or_shape_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_named_sizes_are_a_column_and_a_page_wide():
    assert FigureOptions(size=parse_size("Column")).inches("map")[0] == 3.5
    assert FigureOptions(size=parse_size("page")).inches("map")[0] == 7.0
    width, height = FigureOptions(size="column").inches("convergence", panels=3)
    assert width == 3.5 and math.isclose(height, 3 * 2.3 + 0.7)


def test_the_format_comes_from_the_flag_then_the_suffix_then_png():
    assert figure_format(None, None) == "png"
    assert figure_format(Path("fig.PDF"), None) == "pdf"
    assert figure_format(Path("fig"), "svg") == "svg"
    assert figure_format(Path("fig.svg"), "svg") == "svg"
    with pytest.raises(FigureError, match="drop one of them"):
        figure_format(Path("fig.pdf"), "png")
    with pytest.raises(FigureError, match=r"suffix \.eps; use \.png, \.pdf or \.svg"):
        figure_format(Path("fig.eps"), None)
