"""Sealed values: what opens, and what must not."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgisession.ids import new_id, store_key
from wsgisession.sealing import PREFIX, Sealer, is_sealed

from .servers import require_module


@pytest.fixture(autouse=True)
def _cryptography() -> None:
    require_module("cryptography", "cannot test sealed values")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


class OneSession:
    """A sealer, and one session's ID to seal and open values of."""

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.sealer = sealer or Sealer()
        self.sid = new_id()

    def seal(self, name: str, value: object) -> str:
        return self.sealer.seal(self.sid, {name: value})[name]

    def open(self, name: str, sealed: str) -> object:
        return self.sealer.open(self.sid, name, sealed)


@given(name=st.text(max_size=20), value=json_values)
def test_a_sealed_value_opens_to_what_was_sealed(name: str, value: object) -> None:
    s = OneSession()
    sealed = s.seal(name, value)
    assert is_sealed(sealed)
    assert s.open(name, sealed) == value


@given(values=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_values_sealed_together_open_one_by_one(values: dict[str, object]) -> None:
    sealer, sid = Sealer(), new_id()
    sealed = sealer.seal(sid, values)
    assert sealed.keys() == values.keys()
    assert {name: sealer.open(sid, name, text) for name, text in sealed.items()} == values
    nonces = {base64.b64decode(text[len(PREFIX) :])[:12] for text in sealed.values()}
    assert len(nonces) == len(values), "every value has a nonce of its own"


def test_the_same_value_seals_differently_each_time() -> None:
    s = OneSession()
    assert s.seal("a", "x") != s.seal("a", "x")


def test_a_sealed_value_holds_no_plaintext() -> None:
    s = OneSession()
    marker = "marker-7f3a9c"
    sealed = s.seal("note", {"text": marker})
    assert marker not in sealed
    body = sealed[len(PREFIX) :]
    raw = base64.b64decode(body, validate=True)
    assert marker.encode() not in raw


def test_another_session_cannot_open_it() -> None:
    s = OneSession()
    other = OneSession(s.sealer)
    with pytest.raises(ValueError, match="does not open"):
        other.open("a", s.seal("a", 1))


def test_the_format_binds_the_store_key_and_the_name() -> None:
    """What SECURITY.md says of a sealed value, checked with cryptography's own AES-GCM."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from wsgisession.sealing import session_key

    s = OneSession()
    raw = base64.b64decode(s.seal("role", "admin")[len(PREFIX) :], validate=True)
    nonce, box = raw[:12], raw[12:]
    aead = AESGCM(session_key(s.sid))
    aad = b"wsgisession value\x00" + store_key(s.sid).encode() + b"\x00role"
    assert aead.decrypt(nonce, box, aad) == b'"admin"'
    for wrong in (aad.replace(store_key(s.sid).encode(), store_key(new_id()).encode()), aad[:-1]):
        with pytest.raises(InvalidTag):
            aead.decrypt(nonce, box, wrong)


def test_a_value_moved_to_another_name_does_not_open() -> None:
    s = OneSession()
    with pytest.raises(ValueError):
        s.open("role", s.seal("nickname", "admin"))


def test_another_sealer_for_the_same_session_opens_it() -> None:
    s = OneSession()
    assert s.sealer.open(s.sid, "a", s.seal("a", [1, 2])) == [1, 2]
    assert Sealer().open(s.sid, "a", s.seal("a", [1, 2])) == [1, 2]


def test_a_full_sealer_forgets_and_derives_again() -> None:
    sealer = Sealer(size=2)
    sessions = [OneSession(sealer) for _ in range(5)]
    sealed = [s.seal("a", i) for i, s in enumerate(sessions)]
    assert [s.open("a", text) for s, text in zip(sessions, sealed, strict=True)] == list(range(5))


def test_sealing_in_threads_and_forks_never_repeats_a_nonce() -> None:
    """Nonces are drawn per value, so neither a thread nor a forked child can repeat one."""
    import os

    from wsgisession.testing import at_once

    s = OneSession()
    s.seal("warm", 0)  # the session's cipher is kept before the threads and the fork

    def nonce(text: str) -> bytes:
        return base64.b64decode(text[len(PREFIX) :])[:12]

    def work() -> list[bytes]:
        return [nonce(s.seal("a", i)) for i in range(200)]

    nonces = [n for batch in at_once(work, work, work, work) for n in batch]
    if hasattr(os, "fork"):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: seal with the parent's kept cipher, report the nonces
            try:
                os.close(read)
                os.write(write, b"".join(nonce(s.seal("a", i)) for i in range(50)))
            finally:
                os._exit(0)
        os.close(write)
        child = b""
        while chunk := os.read(read, 4096):
            child += chunk
        os.close(read)
        os.waitpid(pid, 0)
        nonces += [child[i : i + 12] for i in range(0, len(child), 12)]
        nonces += [nonce(s.seal("a", i)) for i in range(50)]
    assert len(nonces) == (900 if hasattr(os, "fork") else 800)
    assert len(set(nonces)) == len(nonces)


@pytest.mark.parametrize("position", [0, 5, 11, 12, 20, -17, -1])
def test_any_flipped_bit_is_refused(position: int) -> None:
    s = OneSession()
    sealed = s.seal("a", "a fairly long value to flip bits in")
    body = sealed[len(PREFIX) :]
    raw = bytearray(base64.b64decode(body, validate=True))
    assert s.open("a", PREFIX + base64.b64encode(bytes(raw)).decode()) == "a fairly long value to flip bits in"
    raw[position] ^= 0x01
    forged = PREFIX + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ValueError):
        s.open("a", forged)


@pytest.mark.parametrize(
    "text", ["", "plain", PREFIX, PREFIX + "!!!", PREFIX + "AAAA", PREFIX + "A" * 37, PREFIX + "\udcff" * 40]
)
def test_hostile_text_is_a_clean_value_error(text: str) -> None:
    s = OneSession()
    with pytest.raises(ValueError):
        s.open("a", text)


@given(st.text())
def test_arbitrary_text_never_crashes(text: str) -> None:
    s = OneSession()
    with pytest.raises(ValueError):
        s.open("a", PREFIX + text)


def test_the_session_key_is_rfc_5869_hkdf_sha256() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

    from wsgisession import sealing

    info = sealing._INFO[:-1]  # without the block counter the Expand step appends
    sid = new_id()
    raw = base64.urlsafe_b64decode(sid + "=")
    assert len(raw) == 32, "an issued ID is 32 random bytes: the pseudorandom key itself"
    assert sealing.session_key(sid) == HKDFExpand(hashes.SHA256(), 32, info=info).derive(raw)
    for other in ("short-id", "!" * 43, "ü" * 43, sid + "x"):
        expected = HKDF(hashes.SHA256(), 32, salt=sealing._SALT, info=info).derive(other.encode())
        assert sealing.session_key(other) == expected, other
    assert sealing.session_key(new_id()) != sealing.session_key(sid)


@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_the_key_derivation_hmac_is_the_standard_one(key: bytes, message: bytes) -> None:
    import hmac

    from wsgisession import sealing

    assert sealing._hmac_sha256(key, message) == hmac.digest(key, message, "sha256")
