"""The strict JSON codec every store decodes records with."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgisession import MemoryStore, SQLiteStore, _json
from wsgisession.ids import new_id, store_key
from wsgisession.stores.base import Update

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


@given(JSON)
def test_encode_writes_exactly_what_the_standard_encoder_writes(value: Any) -> None:
    """Scalars take a short path; every value still comes out as json.dumps writes it, compact."""
    assert _json.encode(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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


# -- what check_json accepts, encode writes -----------------------------------------------

LIMIT = sys.get_int_max_str_digits()


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_an_int_too_long_for_str_is_refused_when_set() -> None:
    assert LIMIT > 0, "this test needs Python's int-to-str limit"
    with pytest.raises(TypeError, match=r"session\['big'\].*digits"):
        _json.check_json("big", 10**LIMIT)  # LIMIT + 1 digits
    with pytest.raises(TypeError, match=r"session\['big'\].*digits"):
        _json.check_json("big", [{"x": -(10**5000)}])
    longest = -(10**LIMIT - 1)  # exactly LIMIT digits
    _json.check_json("big", longest)
    assert _json.decode(_json.encode(longest)) == longest


def test_the_int_limit_in_force_is_the_one_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    value = 10**700  # 701 digits
    _json.check_json("k", value)
    monkeypatch.setattr(sys, "get_int_max_str_digits", lambda: 700)
    with pytest.raises(TypeError, match="700 digits"):
        _json.check_json("k", value)
    monkeypatch.setattr(sys, "get_int_max_str_digits", lambda: 0)  # 0: no limit
    _json.check_json("k", 10**LIMIT)


def test_the_deepest_accepted_value_encodes_even_deep_in_the_stack() -> None:
    deepest = nested(64)
    _json.check_json("k", deepest)
    with pytest.raises(TypeError, match="64 levels"):
        _json.check_json("k", nested(65))

    def encode_at(frames: int) -> str:
        return encode_at(frames - 1) if frames else _json.encode({"k": deepest})

    # An app calling deep into its own code still leaves the encoder room.
    text = encode_at(sys.getrecursionlimit() - 300)
    assert _json.decode(text) == {"k": deepest}


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=LIMIT - 3, max_value=LIMIT + 3).map(lambda n: 10**n - 1)  # LIMIT +- 3 digits
    | st.integers(min_value=LIMIT - 3, max_value=LIMIT + 3).map(lambda n: -(10**n))
    | st.floats()
    | st.text()
    | st.binary(max_size=3)
    | st.just(float("nan"))
)
CONTAINERS = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.dictionaries(st.integers(), inner, max_size=2)
    ),
    max_leaves=10,
)
JSONISH = CONTAINERS | st.builds(nested, st.integers(min_value=0, max_value=120), CONTAINERS)


@given(JSONISH)
def test_accepted_values_encode_and_come_back_unchanged(value: Any) -> None:
    refused: TypeError | None = None
    try:
        _json.check_json("the-key", value)
    except TypeError as exc:
        refused = exc
    if refused is not None:
        assert "session['the-key']" in str(refused)
        return
    text = _json.encode(value)
    assert _json.decode(text) == value


# -- deeply nested text is corrupt data, not a crash ---------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("text", [DEEP, " " + DEEP, DEEP + " ", '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_text_nested_too_deeply_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        _json.decode(text)
    with pytest.raises(ValueError, match="nested too deeply"):
        _json.decode(text.encode())


def corrupt_events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "wsgisession.security" and getattr(r, "security_event", None) == "corrupt_record"
    ]


def new_record(store: MemoryStore | SQLiteStore) -> str:
    key = store_key(new_id())
    now = time.time()
    assert store.save(key, Update(set={"a": 1}, expires_at=now + 600, created_at=now))
    return key


def test_deeply_nested_record_in_memory_store_is_absent(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    key = new_record(store)
    store._records[key] = store._records[key]._replace(text='{"a":' + DEEP + "}")
    with caplog.at_level(logging.WARNING, "wsgisession.security"):
        assert store.load(key) is None
    assert len(corrupt_events(caplog)) == 1


def test_deeply_nested_record_in_sqlite_store_is_absent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    key = new_record(store)
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as conn, conn:
        conn.execute(f"UPDATE {store.table} SET data = ? WHERE key = ?", ('{"a":' + DEEP + "}", key))
    with caplog.at_level(logging.WARNING, "wsgisession.security"):
        assert store.load(key) is None
    assert len(corrupt_events(caplog)) == 1
    store.close()
