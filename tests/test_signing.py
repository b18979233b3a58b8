from __future__ import annotations

import pickle

import pytest

from wsgisession.errors import BadSignature, ConfigurationError
from wsgisession.ids import new_id
from wsgisession.signing import Secret, Signer

KEY = "k" * 32
OLD = "o" * 32


def test_round_trip() -> None:
    signer = Signer(KEY)
    sid = new_id()
    signed = signer.sign(sid)
    assert signed.startswith(sid + ".")
    assert signer.unsign(signed) == (sid, True)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), id="flipped-signature"),
        pytest.param(lambda s: ("A" if s[0] != "A" else "B") + s[1:], id="flipped-value"),
        pytest.param(lambda s: s.split(".")[0], id="no-signature"),
        pytest.param(lambda s: s + ".", id="trailing-dot"),
        pytest.param(lambda s: "." + s, id="leading-dot"),
        pytest.param(lambda s: s.replace(".", ".."), id="double-dot"),
        pytest.param(lambda s: "", id="empty"),
        pytest.param(lambda s: s + "é", id="non-ascii"),
    ],
)
def test_tampering_is_refused(mangle: object) -> None:
    signer = Signer(KEY)
    signed = signer.sign(new_id())
    with pytest.raises(BadSignature):
        signer.unsign(mangle(signed))  # type: ignore[operator]


def test_rotation_first_signs_all_verify() -> None:
    old = Signer(OLD)
    rotated = Signer([KEY, OLD])
    sid = new_id()
    assert rotated.unsign(old.sign(sid)) == (sid, False)
    assert rotated.unsign(rotated.sign(sid)) == (sid, True)
    assert rotated.sign(sid) == Signer(KEY).sign(sid)
    with pytest.raises(BadSignature):
        Signer(KEY).unsign(old.sign(sid))


def test_key_is_derived_per_purpose() -> None:
    sid = new_id()
    assert Signer(KEY, purpose="a").sign(sid) != Signer(KEY, purpose="b").sign(sid)


@pytest.mark.parametrize(
    "bad", [None, "", b"", [], [""]], ids=["none", "empty-str", "empty-bytes", "empty-list", "list-of-empty"]
)
def test_missing_or_empty_secret_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="secret"):
        Signer(bad)  # type: ignore[arg-type]
    assert issubclass(ConfigurationError, ValueError)


def test_short_secret_warns() -> None:
    with pytest.warns(UserWarning, match="at least 32"):
        Signer("short")


def test_secret_never_shown() -> None:
    secret = Secret("hunter2-" + "z" * 32)
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in repr(Signer(secret))
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_bytes_and_str_secrets_agree() -> None:
    sid = new_id()
    assert Signer(KEY).sign(sid) == Signer(KEY.encode()).sign(sid)
