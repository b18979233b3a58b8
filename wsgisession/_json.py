"""Strict JSON for session data: what goes in comes out unchanged, or is refused."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]

# allow_nan=False: NaN and Infinity are not JSON, PostgreSQL's jsonb refuses them
# and a browser's JSON.parse cannot read them back.
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_encode_any = _encoder.encode
# What the encoder itself writes for a str; for any other value it builds a
# C encoder first, which costs ten times the text of a short value.
_encode_str: Callable[[str], str] = json.encoder.encode_basestring
_CONSTANTS = {True: "true", False: "false"}


def encode(value: Any) -> str:
    """*value* (JSON data) as compact JSON text, exactly as :class:`json.JSONEncoder` writes it."""
    cls = type(value)
    if cls is str:
        return _encode_str(value)
    if cls is int:
        return int.__repr__(value)
    if cls is bool:
        return _CONSTANTS[value]
    if value is None:
        return "null"
    return _encode_any(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
# The decoder's own scanner, with the same hooks. JSONDecoder.decode wraps it in
# two whitespace regex matches and a try/except, which cost twice the scan of a
# small record: every store load decodes one.
_scan_once: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def decode(text: str | bytes) -> Any:
    """Parse JSON text; ``NaN``, ``Infinity`` and numbers that overflow to them are refused (ValueError).

    Text nested too deeply for the parser is refused with ValueError too,
    not RecursionError: a planted ``[[[[...`` record is corrupt data, which
    every store already handles as an absent session.
    """
    if type(text) is not str:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")  # a UnicodeDecodeError is a ValueError
        elif isinstance(text, str):
            text = str(text)
        else:
            raise TypeError(f"JSON text must be str or bytes, not {type(text).__name__}")
    # What stores write is one value with no whitespace around it: scan it
    # directly. Anything else (surrounding whitespace, trailing data, invalid
    # text) goes through the full decoder, which accepts or names the error.
    try:
        try:
            value, end = _scan_once(text, 0)
        except StopIteration:
            return _decoder.decode(text)
        if end != len(text):
            return _decoder.decode(text)
        return value
    except RecursionError:
        raise ValueError("JSON text is nested too deeply to parse") from None


_SCALARS = (bool, type(None))

# An int this short has fewer digits than the lowest limit Python lets
# sys.set_int_max_str_digits() set (640), so it can always be written: only
# longer ones are compared against the current limit.
_SHORT_INT_BITS = 2000
# (limit, 10**limit), recomputed only when the limit changes.
_int_bound: tuple[int, int] = (0, 0)


def _int_problem(value: int) -> str | None:
    """Why *value* cannot be written as JSON text (too many digits for str()), or None."""
    global _int_bound
    # Python 3.10 before 3.10.7 has no limit (and no getter).
    getter: Callable[[], int] | None = getattr(sys, "get_int_max_str_digits", None)
    limit = 0 if getter is None else getter()
    if limit <= 0:
        return None
    if _int_bound[0] != limit:
        _int_bound = (limit, 10**limit)
    if abs(value) < _int_bound[1]:
        return None
    return (
        f"an int of more than {limit} digits cannot be written as JSON text "
        "(Python's int-to-str limit, sys.get_int_max_str_digits()); store it as a str"
    )


def _bad_text(text: str) -> bool:
    # A lone surrogate ("\ud800") is a Python str but not Unicode text: no
    # store could write it as UTF-8.
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_json(key: str, value: object) -> None:
    """Raise TypeError naming *key* unless *value* is plain JSON data.

    Tuples, sets, bytes, datetimes, non-str dict keys and non-finite floats
    are refused rather than silently changed on the way back. Ints too long
    for str() (``sys.get_int_max_str_digits()``) and data nested more than 64
    levels deep are refused too: whatever is accepted here, ``encode`` writes.
    """
    problem = _find_problem(value, 0)
    if problem is not None:
        raise TypeError(f"session[{key!r}] is not JSON data: {problem}")


def check_key(key: object) -> None:
    """Raise TypeError unless *key* can name a session value."""
    if type(key) is not str:
        raise TypeError(f"session keys must be str, not {type(key).__name__}")
    if _bad_text(key):
        raise TypeError("a session key with a lone surrogate is not Unicode text")


def _find_problem(value: object, depth: int) -> str | None:
    if depth > 64:
        return "nested more than 64 levels deep"
    cls = type(value)
    if cls is str:
        return "a string with a lone surrogate is not Unicode text" if _bad_text(value) else None  # type: ignore[arg-type]
    if cls is int:
        return None if value.bit_length() <= _SHORT_INT_BITS else _int_problem(value)  # type: ignore[attr-defined,arg-type]
    if cls in _SCALARS:
        return None
    if cls is float:
        return None if math.isfinite(value) else f"{value!r} is not a finite number"  # type: ignore[arg-type]
    if cls is list:
        for item in value:  # type: ignore[attr-defined]
            problem = _find_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if cls is dict:
        for k, item in value.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                return f"dict key {k!r} is a {type(k).__name__}, not a str"
            if _bad_text(k):
                return "a dict key with a lone surrogate is not Unicode text"
            problem = _find_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {cls.__name__} cannot be stored (use str, int, float, bool, None, list or dict)"
