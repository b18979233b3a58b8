"""Session values sealed at rest, under a key that only the browser's cookie carries.

With ``SessionMiddleware(..., encrypt=True)`` every top-level value of a
session is stored as a *sealed* string instead of its JSON: AES-256-GCM under
a key derived (HKDF-SHA256, with a label of its own) from the session ID. The
store never sees the ID, only a SHA-256 hash of it, and the application's
secret plays no part, so neither a dump of the store nor the secret with it
opens a value: only a request carrying the cookie does.

Each value is sealed on its own, with the store key and the value's name as
associated data, so the store's per-key merge still works (it merges opaque
strings) and a sealed value moved to another name or another session fails to
open. A value that fails to open is treated like a corrupt record: absent, and
logged as a security event.

The format of a sealed value: ``"$wss1$"`` then base64 (RFC 4648, padded) of
a 12-byte nonce (a random prefix and a counter, see :func:`_nonces`) and the
ciphertext with its 16-byte tag. The
plaintext is the value's JSON text.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Iterator
from typing import Any

from . import _json
from .errors import ConfigurationError

#: What every sealed value starts with.
PREFIX = "$wss1$"
_SKIP = len(PREFIX)
_NONCE = 12
_TAG = 16
_SALT = b"wsgisession sealed values"
_INFO = b"AES-256-GCM key for one session's values, v1\x01"  # HKDF-Expand's info, then block counter 1

# cryptography's AEAD class and its exception, imported on first use: a
# deployment that never seals never imports it.
_aead: Any = None
_invalid_tag: type[Exception] = Exception


def available() -> bool:
    """Whether the ``cryptography`` package that sealing needs is installed."""
    try:
        _load()
    except ImportError:
        return False
    return True


def _load() -> None:
    global _aead, _invalid_tag
    if _aead is None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        _aead, _invalid_tag = AESGCM, InvalidTag


def require() -> None:
    """:raises ConfigurationError: sealing is asked for and ``cryptography`` is not installed."""
    if not available():
        raise ConfigurationError("encrypt=True needs the cryptography package: pip install 'wsgisession[encryption]'")


def is_sealed(value: object) -> bool:
    """Whether a stored value is a sealed one (it may still fail to open)."""
    return type(value) is str and value.startswith(PREFIX)


def session_key(session_id: str) -> bytes:
    """The 256-bit key of one session's values: HKDF-SHA256 (RFC 5869) of the ID, with a label of its own.

    An ID this library issues is 256 random bits (``secrets.token_urlsafe(32)``):
    as RFC 5869 (section 3.3) allows for input that is already uniformly
    random, its 32 bytes are the pseudorandom key and only Expand runs. Any
    other ID goes through Extract first. The standard library's HMAC does
    the work: the same function as ``cryptography``'s ``HKDFExpand`` and
    ``HKDF``, at a fraction of the cost.
    """
    prk = None
    if len(session_id) == 43:
        try:
            prk = base64.urlsafe_b64decode(session_id + "=")
        except (binascii.Error, ValueError):
            prk = None
    if prk is None or len(prk) != 32:
        prk = hmac.digest(_SALT, session_id.encode("utf-8", "surrogatepass"), "sha256")
    return hmac.digest(prk, _INFO, "sha256")


def _nonces() -> Iterator[bytes]:
    """Nonces for one sealer: a random 64-bit prefix of its own, then a 32-bit counter.

    Every sealer of a session (one per process that sealed it) draws its own
    prefix, so two never share a nonce under the same key but with chance
    2**-64 per pair; a counter that runs out draws a new prefix. One random
    draw per sealer, not per value.
    """
    while True:
        prefix = os.urandom(8)
        for counter in range(2**32):
            yield prefix + counter.to_bytes(4, "big")


class Sealer:
    """Seals and opens the values of the session one session ID names.

    :param session_id: the session ID (never stored; the key comes from it alone).
    :param store_key: the key the store files the session under; bound into every value.
    """

    __slots__ = ("_aead", "_nonces", "_prefix")

    def __init__(self, session_id: str, store_key: str) -> None:
        _load()
        self._aead = _aead(session_key(session_id))
        self._prefix = b"wsgisession value\x00" + store_key.encode("ascii") + b"\x00"
        self._nonces = _nonces()

    def seal(self, name: str, value: Any) -> str:
        """*value* (JSON data) sealed as the value of *name*."""
        nonce = next(self._nonces)
        aad = self._prefix + name.encode("utf-8", "surrogatepass")
        sealed = self._aead.encrypt(nonce, _json.encode(value).encode("utf-8"), aad)
        return PREFIX + binascii.b2a_base64(nonce + sealed, newline=False).decode("ascii")

    def open(self, name: str, sealed: str) -> Any:
        """The value *sealed* holds for *name*.

        :raises ValueError: it is not a sealed value, was sealed for another
            name or session, or was changed (the message never holds the value).
        """
        # Lenient base64: a character out of place only changes the bytes, which
        # the tag then refuses; what must hold is authenticity, and it does.
        try:
            raw = binascii.a2b_base64(sealed[_SKIP:])
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) < _NONCE + _TAG or not sealed.startswith(PREFIX):
            raise ValueError("not a sealed value")
        try:
            text = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._prefix + name.encode("utf-8", "surrogatepass"))
        except _invalid_tag:
            raise ValueError("a sealed value that does not open under this session's key and name") from None
        return _json.decode(text)
