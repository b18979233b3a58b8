"""Tagged JSON (wsgisession._tagged): Python values as plain JSON data and back."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgisession import _json
from wsgisession._tagged import tag, untag

markupsafe = pytest.importorskip("markupsafe")
Markup = markupsafe.Markup

UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")
AWARE = datetime(2024, 5, 17, 12, 30, 15, 250000, tzinfo=timezone.utc)
OFFSET = datetime(2024, 5, 17, 14, 30, tzinfo=timezone(timedelta(hours=2)))
NAIVE = datetime(2024, 5, 17, 12, 30, 15, 123456)


def through_json(value: object) -> object:
    """What a store gives back: tag, JSON text, parse, untag."""
    text = _json.encode(tag(value))
    return untag(_json.decode(text))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param((1, 2, 3), id="tuple"),
        pytest.param((), id="empty-tuple"),
        pytest.param(((1, (2,)), [3, (4,)]), id="nested-tuples"),
        pytest.param(b"\xff\x00bytes", id="bytes"),
        pytest.param(b"", id="empty-bytes"),
        pytest.param(AWARE, id="aware-datetime"),
        pytest.param(OFFSET, id="offset-datetime"),
        pytest.param(NAIVE, id="naive-datetime"),
        pytest.param(UUID, id="uuid"),
        pytest.param({"when": [AWARE], "ids": {"a": UUID}}, id="nested-in-plain"),
        pytest.param({" tuple": "not-a-tuple"}, id="looks-like-a-tag"),
        pytest.param({" dict": "not-a-dict"}, id="looks-like-the-escape"),
        pytest.param({" dict": {" tuple": [1]}}, id="looks-like-an-escaped-tag"),
        pytest.param({" anything": 1}, id="space-key"),
        pytest.param({" tuple__": "x", "other": 1}, id="two-keys"),
        pytest.param([{" bytes": "AA=="}], id="tag-shaped-in-a-list"),
        pytest.param({"a": 1, "b": [True, None, 1.5, "s"]}, id="plain"),
    ],
)
def test_round_trip(value: object) -> None:
    back = through_json(value)
    assert back == value
    assert type(back) is type(value)


def test_datetimes_come_back_exactly() -> None:
    for value in (AWARE, OFFSET, NAIVE):
        back = through_json(value)
        assert isinstance(back, datetime)
        assert back == value
        assert back.tzinfo == value.tzinfo
        assert back.microsecond == value.microsecond
        assert back.utcoffset() == value.utcoffset()


def test_markup_comes_back_as_markup() -> None:
    back = through_json(Markup("<em>x</em> &amp;"))
    assert type(back) is Markup
    assert back == Markup("<em>x</em> &amp;")
    assert through_json([("warning", Markup("<b>"))]) == [("warning", Markup("<b>"))]


def test_anything_with_html_is_tagged_as_markup() -> None:
    class Widget:
        def __html__(self) -> str:
            return "<input>"

    back = through_json(Widget())
    assert type(back) is Markup
    assert back == "<input>"


def test_plain_data_is_untouched_and_the_same_object() -> None:
    data: dict[str, Any] = {"cart": [1, 2, {"x": None}], "n": 1.5}
    assert tag(data) is data
    assert untag(data) is data
    nested = [[1], [2]]
    assert tag(nested) is nested
    assert untag(nested) is nested


def test_tagged_values_are_json_data() -> None:
    tagged = tag({"t": (1, b"x"), "d": AWARE, "u": UUID, "m": Markup("<i>")})
    assert json.loads(json.dumps(tagged)) == tagged
    _json.check_json("key", tagged)


def test_a_one_key_dict_with_a_space_key_is_escaped() -> None:
    assert tag({" tuple": "x"}) == {" dict": {" tuple": "x"}}
    assert tag({"tuple": "x"}) == {"tuple": "x"}  # no space: plain data


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(bytearray(b"x"), id="bytearray"),
        pytest.param(datetime(2024, 1, 1).date(), id="date"),
        pytest.param(timedelta(seconds=1), id="timedelta"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param([1, object()], id="nested"),
        pytest.param(("a", {2: "b"}), id="in-a-tuple"),
    ],
)
def test_values_that_cannot_be_tagged_are_a_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        tag(value)


def test_a_cycle_is_a_type_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(TypeError, match="nested too deeply"):
        tag(cycle)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({" unknown": 1}, id="unknown-tag"),
        pytest.param({" bytes": 5}, id="bytes-not-a-str"),
        pytest.param({" bytes": "not base64!"}, id="bytes-bad-base64"),
        pytest.param({" bytes": "é"}, id="bytes-not-ascii"),
        pytest.param({" datetime": "yesterday"}, id="datetime-bad"),
        pytest.param({" datetime": ["2024"]}, id="datetime-not-a-str"),
        pytest.param({" uuid": "xyz"}, id="uuid-bad"),
        pytest.param({" uuid": 12}, id="uuid-not-a-str"),
        pytest.param({" tuple": "abc"}, id="tuple-not-a-list"),
        pytest.param({" tuple": {"a": 1}}, id="tuple-a-dict"),
        pytest.param({" dict": [1, 2]}, id="dict-not-a-dict"),
        pytest.param({" markup": 5}, id="markup-not-a-str"),
        pytest.param({" markup": None}, id="markup-none"),
    ],
)
def test_hostile_tags_are_plain_data(data: dict[str, object]) -> None:
    assert untag(data) == data
    assert type(untag(data)) is dict


def test_hostile_data_inside_tags_is_walked_safely() -> None:
    assert untag({" tuple": [{" unknown": 1}, {" bytes": "AA=="}]}) == ({" unknown": 1}, b"\x00")
    assert untag([{" uuid": "bad"}, 1]) == [{" uuid": "bad"}, 1]


def test_untag_of_very_deep_data_is_a_clean_error() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        untag(deep)


json_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_data)
def test_untag_never_crashes_on_json_data(data: object) -> None:
    untag(data)


taggable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.binary(max_size=8)
    | st.uuids()
    | st.datetimes(timezones=st.none() | st.just(timezone.utc)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=15,
)


@given(taggable)
def test_every_taggable_value_round_trips(value: object) -> None:
    assert through_json(value) == value
