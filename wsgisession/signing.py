"""HMAC-SHA256 signing of cookie values, with key rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import warnings
from collections.abc import Sequence

from .errors import BadSignature, ConfigurationError

SecretLike = str | bytes

#: Secrets shorter than this draw a warning: HMAC-SHA256 wants 32 bytes of key.
MIN_SECRET_BYTES = 32


class Secret:
    """A secret key that never shows itself in a ``repr``, ``str`` or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: SecretLike) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes):
            raise ConfigurationError(f"a secret must be str or bytes, not {type(value).__name__}")
        if not value:
            raise ConfigurationError("a secret must not be empty")
        self._value = value

    def reveal(self) -> bytes:
        """The secret's bytes. Keep them out of logs."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def secrets_list(secret: SecretLike | Secret | Sequence[SecretLike | Secret] | None) -> list[Secret]:
    """Normalise the ``secret`` argument to a non-empty list, newest first."""
    if secret is None:
        raise ConfigurationError("secret is required: pass a long random string (e.g. from secrets.token_hex(32))")
    items: Sequence[object] = [secret] if isinstance(secret, (str, bytes, Secret)) else list(secret)
    if not items:
        raise ConfigurationError("secret must not be an empty list")
    out = [item if isinstance(item, Secret) else Secret(item) for item in items]  # type: ignore[arg-type]
    for position, item in enumerate(out):
        if len(item.reveal()) < MIN_SECRET_BYTES:
            which = "the signing secret" if position == 0 else f"secret #{position + 1}"
            warnings.warn(
                f"{which} is {len(item.reveal())} bytes; use at least {MIN_SECRET_BYTES} random bytes "
                "(python -c 'import secrets; print(secrets.token_hex(32))')",
                UserWarning,
                stacklevel=3,
            )
    return out


class Signer:
    """Sign a value as ``value.signature`` and verify it, constant-time.

    The first secret signs; every secret verifies, so a secret can be rotated
    without logging anybody out: put the new one first and keep the old one
    until the last cookie it signed has expired.

    Each secret is not used directly: a key is derived from it per *purpose*,
    so the same secret used elsewhere in an application never yields the
    same MAC.
    """

    __slots__ = ("_keys",)

    def __init__(
        self,
        secret: SecretLike | Secret | Sequence[SecretLike | Secret],
        purpose: str = "wsgisession.cookie",
    ) -> None:
        label = b"wsgisession signer key\x00" + purpose.encode("utf-8")
        self._keys = [hmac.new(s.reveal(), label, hashlib.sha256).digest() for s in secrets_list(secret)]

    def __repr__(self) -> str:
        return f"<Signer with {len(self._keys)} key(s)>"

    def _mac(self, key: bytes, value: str) -> str:
        return _b64(hmac.digest(key, value.encode("ascii"), "sha256"))

    def sign(self, value: str) -> str:
        """Return ``value.signature``. *value* must be ASCII without a dot."""
        return f"{value}.{self._mac(self._keys[0], value)}"

    def unsign(self, signed: str) -> tuple[str, bool]:
        """Verify ``value.signature``; return ``(value, signed_by_current_key)``.

        Raises :class:`BadSignature` if no configured secret made the signature.
        The second item is ``False`` when an older secret verified it, so the
        caller can re-sign with the current one.
        """
        value, dot, signature = signed.rpartition(".")
        if not dot or not value or not signature or not signed.isascii():
            raise BadSignature("malformed signed value")
        for position, key in enumerate(self._keys):
            if hmac.compare_digest(self._mac(key, value), signature):
                return value, position == 0
        raise BadSignature("signature does not match")
