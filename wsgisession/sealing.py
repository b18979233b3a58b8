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
a random 12-byte nonce and the ciphertext with its 16-byte tag. The plaintext
is the value's JSON text.
"""

from __future__ import annotations

import binascii
import hashlib
import os
from typing import Any

from . import _json
from .errors import ConfigurationError
from .ids import store_key

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
_urandom = os.urandom
_b2a = binascii.b2a_base64


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


# HMAC-SHA256 (RFC 2104) on hashlib, for the key derivation below: the
# key XORed with the inner and outer pads, by translation tables.
_INNER = bytes(byte ^ 0x36 for byte in range(256))
_OUTER = bytes(byte ^ 0x5C for byte in range(256))


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of *message* under *key*: the same bytes as ``hmac.digest(key, message, "sha256")``.

    Written out because the one-shot ``hmac.digest`` looks its algorithm up
    in OpenSSL on every call, which costs more than the two hashes (about
    1.5 µs of a new session's sealing, measured in a request).
    """
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(key.translate(_INNER) + message).digest()
    return hashlib.sha256(key.translate(_OUTER) + inner).digest()


def session_key(session_id: str) -> bytes:
    """The 256-bit key of one session's values: HKDF-SHA256 (RFC 5869) of the ID, with a label of its own.

    An ID this library issues is 256 random bits (``secrets.token_urlsafe(32)``):
    as RFC 5869 (section 3.3) allows for input that is already uniformly
    random, its 32 bytes are the pseudorandom key and only Expand runs. Any
    other ID goes through Extract first. The same function as
    ``cryptography``'s ``HKDFExpand`` and ``HKDF`` (the tests check it), at a
    fraction of the cost.
    """
    prk = None
    if len(session_id) == 43 and session_id.isascii():
        try:
            prk = binascii.a2b_base64(session_id.replace("-", "+").replace("_", "/") + "=")
        except (binascii.Error, ValueError):
            prk = None
    if prk is None or len(prk) != 32:
        prk = _hmac_sha256(_SALT, session_id.encode("utf-8", "surrogatepass"))
    return _hmac_sha256(prk, _INFO)


class Sealer:
    """Seals and opens session values, each under its own session's key.

    A value is bound to its session's store key and to its name (associated
    data), so it opens only as the value it was sealed as.

    Deriving a session's key and setting up its cipher cost more than opening
    a value, and a browser's next request needs the same cipher, so a sealer
    keeps the ciphers of the sessions it last used: at most *size*, emptied
    when full. Few are kept: every new session's cipher is set up in memory
    last touched *size* sessions ago, and with 4,096 kept that cost a login
    about 2 µs more than with 256. (They are kept as plain tuples, which the
    garbage collector stops walking; an object of our own per session would
    cost every collection.)
    """

    __slots__ = ("_kept", "_size")

    def __init__(self, size: int = 256) -> None:
        self._kept: dict[str, tuple[Any, bytes]] = {}
        self._size = size

    def _keep(self, session_id: str, key: str | None = None) -> tuple[Any, bytes]:
        """*session_id*'s cipher and the start of its values' associated data, derived and kept.

        :param key: the session's store key, if the caller has it at hand.
        """
        _load()
        if len(self._kept) >= self._size:
            self._kept.clear()
        aad = b"wsgisession value\x00" + (key or store_key(session_id)).encode("ascii") + b"\x00"
        kept = self._kept[session_id] = (_aead(session_key(session_id)), aad)
        return kept

    def seal(self, session_id: str, values: dict[str, Any], key: str | None = None) -> dict[str, str]:
        """Each of *values* (JSON data) sealed as the value of its name in *session_id*'s session.

        :param key: the session's store key, if the caller has it at hand.
        :raises ImportError: the ``cryptography`` package is not installed.
        """
        aead, aad = self._kept.get(session_id) or self._keep(session_id, key)
        # A random 96-bit nonce per value (one draw for all of them): any
        # process, thread or fork may seal for the same session, and none needs
        # to know of the others. A session seals far fewer values than the
        # 2**32 that NIST SP 800-38D allows one key with random nonces.
        nonces = _urandom(_NONCE * len(values))
        encrypt, encode = aead.encrypt, _json.encode
        sealed = {}
        at = 0
        for name, value in values.items():
            nonce = nonces[at : at + _NONCE]
            at += _NONCE
            box = encrypt(nonce, encode(value).encode("utf-8"), aad + name.encode("utf-8", "surrogatepass"))
            sealed[name] = PREFIX + _b2a(nonce + box, newline=False).decode("ascii")
        return sealed

    def open(self, session_id: str, name: str, sealed: str) -> Any:
        """The value *sealed* holds as *name* in *session_id*'s session.

        :raises ValueError: it is not a sealed value, was sealed for another
            name or session, or was changed (the message never holds the value).
        :raises ImportError: the ``cryptography`` package is not installed.
        """
        aead, aad = self._kept.get(session_id) or self._keep(session_id)
        # Lenient base64: a character out of place only changes the bytes, which
        # the tag then refuses; what must hold is authenticity, and it does.
        try:
            raw = binascii.a2b_base64(sealed[_SKIP:])
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) < _NONCE + _TAG or not sealed.startswith(PREFIX):
            raise ValueError("not a sealed value")
        try:
            text = aead.decrypt(raw[:_NONCE], raw[_NONCE:], aad + name.encode("utf-8", "surrogatepass"))
        except _invalid_tag:
            raise ValueError("a sealed value that does not open under this session's key and name") from None
        return _json.decode(text)
