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


def sealer() -> tuple[Sealer, str, str]:
    sid = new_id()
    key = store_key(sid)
    return Sealer(sid, key), sid, key


@given(name=st.text(max_size=20), value=json_values)
def test_a_sealed_value_opens_to_what_was_sealed(name: str, value: object) -> None:
    s, _, _ = sealer()
    sealed = s.seal(name, value)
    assert is_sealed(sealed)
    assert s.open(name, sealed) == value


def test_the_same_value_seals_differently_each_time() -> None:
    s, _, _ = sealer()
    assert s.seal("a", "x") != s.seal("a", "x")


def test_a_sealed_value_holds_no_plaintext() -> None:
    s, _, _ = sealer()
    marker = "marker-7f3a9c"
    sealed = s.seal("note", {"text": marker})
    assert marker not in sealed
    body = sealed[len(PREFIX) :]
    raw = base64.b64decode(body, validate=True)
    assert marker.encode() not in raw


def test_another_session_cannot_open_it() -> None:
    s, _, _ = sealer()
    other, _, _ = sealer()
    with pytest.raises(ValueError, match="does not open"):
        other.open("a", s.seal("a", 1))


def test_the_same_id_under_another_store_key_cannot_open_it() -> None:
    sid = new_id()
    sealed = Sealer(sid, store_key(sid)).seal("a", 1)
    with pytest.raises(ValueError):
        Sealer(sid, store_key(new_id())).open("a", sealed)


def test_a_value_moved_to_another_name_does_not_open() -> None:
    s, _, _ = sealer()
    with pytest.raises(ValueError):
        s.open("role", s.seal("nickname", "admin"))


def test_a_reopened_sealer_for_the_same_session_opens_it() -> None:
    s, sid, key = sealer()
    assert Sealer(sid, key).open("a", s.seal("a", [1, 2])) == [1, 2]


@pytest.mark.parametrize("position", [0, 5, 11, 12, 20, -17, -1])
def test_any_flipped_bit_is_refused(position: int) -> None:
    s, _, _ = sealer()
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
    s, _, _ = sealer()
    with pytest.raises(ValueError):
        s.open("a", text)


@given(st.text())
def test_arbitrary_text_never_crashes(text: str) -> None:
    s, _, _ = sealer()
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
