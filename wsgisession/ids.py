"""Session IDs, the keys stores see, and the tags logs see."""

from __future__ import annotations

import hashlib
import secrets

#: Bytes of randomness in a session ID (256 bits).
ID_BYTES = 32
#: Length of an ID as text: base64url of 32 bytes without padding.
ID_LENGTH = 43

_LOG_SALT = secrets.token_bytes(16)


def new_id() -> str:
    """A fresh session ID: 256 bits from :mod:`secrets`, base64url."""
    return secrets.token_urlsafe(ID_BYTES)


def store_key(session_id: str) -> str:
    """The key a store files a session under: SHA-256 of the ID, hex.

    The raw ID is a bearer credential; a leaked store dump or an index lookup
    reveals only this hash, from which no cookie can be made.
    """
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def log_tag(session_id: str) -> str:
    """A short tag for logs: a salted hash, unlinkable to the ID or the store key."""
    return hashlib.blake2b(session_id.encode("ascii", "replace"), key=_LOG_SALT, digest_size=6).hexdigest()
