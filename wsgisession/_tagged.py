"""Tagged JSON: the Python values web frameworks keep in sessions, as plain JSON data.

:func:`tag` turns a value into JSON data (``dict``, ``list``, ``str``,
``int``, ``float``, ``bool``, ``None``) and :func:`untag` turns it back. Plain
JSON data passes through unchanged; the other supported values become an
object with a single key, the tag, which starts with a space:

=====================  ==================================  =========================================
value                  tagged as                           comes back as
=====================  ==================================  =========================================
``tuple``              ``{" tuple": [...]}``               ``tuple``
``bytes``              ``{" bytes": "<base64>"}``          ``bytes``
``datetime``           ``{" datetime": "<ISO 8601>"}``     the same: naive stays naive, an aware one
                                                           keeps its UTC offset, microseconds kept
``uuid.UUID``          ``{" uuid": "<hex>"}``              ``uuid.UUID``
``Markup`` (anything   ``{" markup": "<html>"}``           ``markupsafe.Markup`` (a ``str`` if
with ``__html__``)                                         markupsafe is not installed)
a one-key ``dict``     ``{" dict": {...}}``                that ``dict``
whose key starts
with a space
=====================  ==================================  =========================================

The last row keeps data that merely looks like a tag from being read as one.
Lists, tuples and dicts are tagged inside, to any depth. Nothing is ever
pickled: the result is JSON text in the store like any other value.
:func:`untag` reads stored data, which may have been planted or damaged: an
unknown tag, or a known tag around a payload of the wrong shape, is plain
data and comes back as the dict it is. Data written to the core
:class:`~wsgisession.Session` directly is read by :func:`untag` too: a value
from outside (a form, a JSON body) stored there should go through
:func:`tag` first, or a planted ``{" markup": ...}`` would come back as
trusted HTML.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["tag", "untag"]

_TUPLE, _BYTES, _DATETIME, _UUID, _MARKUP, _DICT = " tuple", " bytes", " datetime", " uuid", " markup", " dict"
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def tag(value: object) -> object:
    """*value* as plain JSON data, tagged where JSON has no type for it.

    Plain JSON data is returned as it is (the same object when nothing inside
    it needs a tag). Dict keys must be ``str``.

    :raises TypeError: for a value of any other type (or nested too deeply),
        saying which type; the caller names the session key.
    """
    try:
        return _tag(value)
    except RecursionError:
        raise TypeError("the value is nested too deeply to store") from None


def _tag(value: object) -> object:
    cls = type(value)
    if cls in _PLAIN_SCALARS:
        return value
    html: Callable[[], object] | None = getattr(value, "__html__", None)
    if html is not None and callable(html):
        markup = html()
        if not isinstance(markup, str):
            raise TypeError(f"{cls.__name__}.__html__() returned a {type(markup).__name__}, not a str")
        return {_MARKUP: str(markup)}
    if isinstance(value, list):
        items = [_tag(item) for item in value]
        if cls is list and all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items
    if isinstance(value, tuple):
        return {_TUPLE: [_tag(item) for item in value]}
    if isinstance(value, dict):
        tagged: dict[str, object] = {}
        same = cls is dict
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"dict key {key!r} is a {type(key).__name__}, not a str")
            tagged[key] = new = _tag(item)
            same = same and new is item
        if len(tagged) == 1 and next(iter(tagged)).startswith(" "):
            return {_DICT: tagged}
        return value if same else tagged
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    if isinstance(value, _dt.datetime):
        return {_DATETIME: value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {_UUID: value.hex}
    raise TypeError(f"a {cls.__name__} cannot be stored (use JSON data, tuple, bytes, datetime, uuid.UUID or Markup)")


def untag(data: object) -> object:
    """The value that :func:`tag` made *data* from; data with no tag inside is returned as it is.

    *data* is what a store read back, so it is not trusted: a one-key dict
    with an unknown tag, or with a known tag whose payload has the wrong
    shape (``{" bytes": 5}``), is left as plain data.

    :raises ValueError: if *data* is nested too deeply to walk.
    """
    try:
        return _untag(data)
    except RecursionError:
        raise ValueError("session data is nested too deeply to read") from None


def _untag(data: object) -> object:
    cls = type(data)
    if cls is list:
        items = [_untag(item) for item in data]  # type: ignore[attr-defined]
        return data if all(new is old for new, old in zip(items, data, strict=True)) else items  # type: ignore[call-overload]
    if cls is not dict:
        return data
    assert isinstance(data, dict)
    if len(data) == 1:
        ((key, payload),) = data.items()
        if type(key) is str and key.startswith(" "):
            decoded = _decode(key, payload)
            if decoded is not _NOT_A_TAG:
                return decoded
    values = {key: _untag(item) for key, item in data.items()}
    return data if all(values[key] is item for key, item in data.items()) else values


#: What :func:`_decode` returns for a one-key dict that is not a valid tag.
_NOT_A_TAG: Any = object()


def _decode(key: str, payload: object) -> object:
    kind = type(payload)
    if key == _TUPLE and kind is list:
        return tuple(_untag(item) for item in payload)  # type: ignore[attr-defined]
    if key == _DICT and kind is dict:
        return {k: _untag(item) for k, item in payload.items()}  # type: ignore[attr-defined]
    if kind is not str:
        return _NOT_A_TAG
    assert isinstance(payload, str)
    try:
        if key == _BYTES:
            return base64.b64decode(payload.encode("ascii"), validate=True)
        if key == _DATETIME:
            return _dt.datetime.fromisoformat(payload)
        if key == _UUID:
            return uuid.UUID(hex=payload)
    except (ValueError, UnicodeError, binascii.Error):
        return _NOT_A_TAG
    if key == _MARKUP:
        try:
            from markupsafe import Markup
        except ImportError:  # pragma: no cover - markupsafe comes with Flask and Jinja
            return payload
        # Trusted HTML only because tag() alone writes this shape: a one-key
        # dict of the application's own is escaped as " dict".
        return Markup(payload)  # noqa: S704
    return _NOT_A_TAG
