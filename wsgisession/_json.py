"""Strict JSON for session data: what goes in comes out unchanged, or is refused."""

from __future__ import annotations

import json
import math
from typing import Any

JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]

# allow_nan=False: NaN and Infinity are not JSON, PostgreSQL's jsonb refuses them
# and a browser's JSON.parse cannot read them back.
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
encode = _encoder.encode
decode = json.loads

_SCALARS = (str, int, bool, type(None))


def check_json(key: str, value: object) -> None:
    """Raise TypeError naming *key* unless *value* is plain JSON data.

    Tuples, sets, bytes, datetimes, non-str dict keys and non-finite floats
    are refused rather than silently changed on the way back.
    """
    problem = _find_problem(value, 0)
    if problem is not None:
        raise TypeError(f"session[{key!r}] is not JSON data: {problem}")


def _find_problem(value: object, depth: int) -> str | None:
    if depth > 64:
        return "nested more than 64 levels deep"
    cls = type(value)
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
            problem = _find_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {cls.__name__} cannot be stored (use str, int, float, bool, None, list or dict)"


def copy_json(value: Any) -> Any:
    """Deep-copy plain JSON data (faster than copy.deepcopy for this shape)."""
    cls = type(value)
    if cls is list:
        return [copy_json(v) for v in value]
    if cls is dict:
        return {k: copy_json(v) for k, v in value.items()}
    return value
