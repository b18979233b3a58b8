"""The strict JSON codec every store decodes records with."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgisession import _json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
SPACE = st.text(alphabet=" \t\r\n", max_size=3)


@given(JSON, SPACE, SPACE)
def test_decode_agrees_with_the_standard_parser(value: Any, before: str, after: str) -> None:
    text = before + json.dumps(value, separators=(",", ":")) + after
    assert _json.decode(text) == json.loads(text)
    assert _json.decode(text.encode("utf-8")) == json.loads(text)


@given(st.text(max_size=40) | st.text(alphabet=' {}[]:,"-.0123456789eEaNInfinity', max_size=40))
def test_decode_accepts_exactly_what_the_standard_parser_accepts(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            _json.decode(text)
        return
    if not finite(expected):  # NaN, Infinity and numbers that overflow to them are refused on purpose
        with pytest.raises(ValueError):
            _json.decode(text)
        return
    assert _json.decode(text) == expected


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(finite(v) for v in value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    return True


@pytest.mark.parametrize(
    "text",
    ['{"a":1} x', '{"a":1}{"b":2}', "[1,2", "", " ", "NaN", "-Infinity", '{"a":NaN}', "1e999", "-1e999", "tru"],
)
def test_trailing_data_truncation_and_non_finite_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        _json.decode(text)


def test_only_text_is_decoded() -> None:
    with pytest.raises(TypeError):
        _json.decode(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _json.decode(b'"\xff"')
