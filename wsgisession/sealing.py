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

The format of a sealed value: ``"$wss1$"`` then URL-safe base64 (no padding)
of a 12-byte random nonce and the ciphertext with its 16-byte tag. The
plaintext is the value's JSON text.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from . import _json
from .errors import ConfigurationError

#: What every sealed value starts with.
PREFIX = "$wss1$"
_NONCE = 12
_TAG = 16
_SALT = b"wsgisession sealed values"
_INFO = b"AES-256-GCM key for one session's values, v1"


def available() -> bool:
    """Whether the ``cryptography`` package that sealing needs is installed."""
    try:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """:raises ConfigurationError: sealing is asked for and ``cryptography`` is not installed."""
    if not available():
        raise ConfigurationError("encrypt=True needs the cryptography package: pip install 'wsgisession[encryption]'")


def is_sealed(value: object) -> bool:
    """Whether a stored value is a sealed one (it may still fail to open)."""
    return type(value) is str and value.startswith(PREFIX)


class Sealer:
    """Seals and opens the values of the session one session ID names.

    :param session_id: the session ID (never stored; the key comes from it alone).
    :param store_key: the key the store files the session under; bound into every value.
    """

    __slots__ = ("_aead", "_prefix")

    def __init__(self, session_id: str, store_key: str) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(hashes.SHA256(), 32, salt=_SALT, info=_INFO).derive(session_id.encode("ascii"))
        self._aead = AESGCM(key)
        self._prefix = b"wsgisession value\x00" + store_key.encode("ascii") + b"\x00"

    def _aad(self, name: str) -> bytes:
        return self._prefix + name.encode("utf-8", "surrogatepass")

    def seal(self, name: str, value: Any) -> str:
        """*value* (JSON data) sealed as the value of *name*."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, _json.encode(value).encode("utf-8"), self._aad(name))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, name: str, sealed: str) -> Any:
        """The value *sealed* holds for *name*.

        :raises ValueError: it is not a sealed value, was sealed for another
            name or session, or was changed (the message never holds the value).
        """
        from cryptography.exceptions import InvalidTag

        body = sealed[len(PREFIX) :] if is_sealed(sealed) else ""
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("not a sealed value") from None
        if len(raw) < _NONCE + _TAG:
            raise ValueError("not a sealed value")
        try:
            text = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._aad(name))
        except InvalidTag:
            raise ValueError("a sealed value that does not open under this session's key and name") from None
        return _json.decode(text)
