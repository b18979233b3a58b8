"""Hostile Cookie headers thrown at the middleware: never a crash, never an unsigned session."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgisession import MemoryStore, SessionMiddleware, get_session
from wsgisession.ids import new_id
from wsgisession.signing import Signer

from .conftest import SECRET

SIGNER = Signer(SECRET)
STORE = MemoryStore()
LIVE_ID = new_id()
LIVE_COOKIE = SIGNER.sign(LIVE_ID)


def _seed() -> None:
    from wsgisession.ids import store_key
    from wsgisession.stores.base import Update

    STORE.save(store_key(LIVE_ID), Update(set={"user": "alice"}, expires_at=4e9, created_at=1.0))


_seed()
SEEN: dict[str, Any] = {}


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = get_session(environ)
    SEEN["user"] = session.get("user")
    SEEN["id"] = session.id
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


MIDDLEWARE = SessionMiddleware(app, SECRET, STORE)


def run(cookie_header: str) -> tuple[str, list[tuple[str, str]]]:
    SEEN.clear()
    out: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        out["status"], out["headers"] = status, headers
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "wsgi.url_scheme": "http",
        "HTTP_COOKIE": cookie_header,
    }
    body = MIDDLEWARE(environ, start_response)
    assert b"".join(body) == b"ok"
    return out["status"], out["headers"]


latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=300)
token = st.sampled_from(["session", "Session", "session ", " session", "sess", "session=", "__Host-session", ""])
value = st.one_of(
    latin1,
    st.just(LIVE_COOKIE),
    st.builds(lambda s, i: s[:i] + "A" + s[i + 1 :], st.just(LIVE_COOKIE), st.integers(0, 86)),
    st.builds(lambda v: '"' + v + '"', st.just(LIVE_COOKIE)),
    st.builds(lambda n: "x" * n, st.integers(0, 50_000)),
)
pair = st.builds(lambda n, v, sep: f"{n}{sep}{v}", token, value, st.sampled_from(["=", "==", " = ", ""]))
header = st.builds(
    lambda parts, sep: sep.join(parts), st.lists(pair, max_size=8), st.sampled_from(["; ", ";", ",", " "])
)


def _contains_live_cookie_as_session(h: str) -> bool:
    for part in h.split(";"):
        k, eq, v = part.partition("=")
        v = v.strip()
        if len(v) > 1 and v[0] == v[-1] == '"':
            v = v[1:-1]
        if eq and k.strip() == "session" and v == LIVE_COOKIE:
            return True
    return False


@given(header)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_cookie_headers(h: str) -> None:
    status, headers = run(h)
    assert status == "200 OK"
    if SEEN["user"] is not None:
        # A session was found: only the genuinely signed cookie can have done it.
        assert SEEN["id"] == LIVE_ID
        assert _contains_live_cookie_as_session(h[: 32 * 1024]) and len(h) <= 32 * 1024
    else:
        assert SEEN["id"] is None
    assert not any(k == "Set-Cookie" for k, _ in headers), "a read-only request never sets a cookie"


@given(latin1)
def test_arbitrary_signed_values_are_refused(v: str) -> None:
    if v == LIVE_COOKIE:
        return
    from wsgisession.errors import BadSignature

    with pytest.raises(BadSignature):
        SIGNER.unsign(v)
