"""Configuration refused at construction, not per request; every tossed cookie tried."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import webtest

from wsgisession import ConfigurationError, MemoryStore, SessionMiddleware
from wsgisession.ids import new_id
from wsgisession.middleware import MAX_COOKIE_HEADER
from wsgisession.signing import Signer

from .conftest import SECRET, demo_app

MakeApp = Callable[..., webtest.TestApp]

CENTURY = 36525 * 86400  # 100 years, in seconds


def build(**options: Any) -> SessionMiddleware:
    return SessionMiddleware(demo_app, SECRET, MemoryStore(), **options)


# -- configuration that could never work is refused when built ---------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/\u0100", id="non-latin-1"),
        pytest.param("/caf\u00e9", id="latin-1"),
        pytest.param("/a\u2028b", id="line-separator"),
        pytest.param("/a b", id="space"),
        pytest.param("/a\tb", id="tab"),
        pytest.param("/a\x7fb", id="del"),
        pytest.param("/a;b", id="semicolon"),
        pytest.param("", id="empty"),
    ],
)
def test_a_path_browsers_cannot_match_is_refused(path: str) -> None:
    with pytest.raises(ConfigurationError, match="printable ASCII other than ';'"):
        build(path=path)


def test_the_refusal_says_how_to_write_the_path() -> None:
    with pytest.raises(ConfigurationError, match="/caf%C3%A9/my%20app"):
        build(path="/caf\u00e9/my app")


def test_a_path_longer_than_browsers_keep_is_refused() -> None:
    build(path="/" + "a" * 1023)
    with pytest.raises(ConfigurationError, match="1024"):
        build(path="/" + "a" * 1024)


def test_an_international_domain_is_refused_with_its_ascii_form() -> None:
    with pytest.raises(ConfigurationError, match=r"xn--bcher-kva\.example"):
        build(domain="b\u00fccher.example")


@pytest.mark.parametrize("option", ["max_age", "absolute_timeout", "prune_interval"])
@pytest.mark.parametrize("seconds", [10**12, CENTURY + 1, 10**5000], ids=["1e12", "century+1", "5000-digits"])
def test_a_duration_past_a_century_is_refused(option: str, seconds: int) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{option} is too long.*100 years"):
        build(**{option: seconds})


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), 1e12])
def test_a_prune_interval_threading_cannot_wait_is_refused(seconds: float) -> None:
    with pytest.raises(ConfigurationError, match="prune_interval"):
        build(prune_interval=seconds)


def test_a_century_long_cookie_still_gets_an_expires_date(make_app: MakeApp) -> None:
    app = make_app(max_age=CENTURY, absolute_timeout=CENTURY)
    res = app.get("/incr")
    assert app.get("/incr").json == 2
    header = next(v for k, v in res.headerlist if k == "Set-Cookie")
    expires = dict(p.strip().partition("=")[::2] for p in header.split(";")[1:])["Expires"]
    assert parsedate_to_datetime(expires).year >= 2100


def mounted(prefix: str, app: Any) -> Any:
    """*app* mounted under *prefix*: SCRIPT_NAME is the prefix, as a WSGI server sets it."""

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ["PATH_INFO"]
        if not path.startswith(prefix + "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not here"]
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = prefix, path[len(prefix) :]
        return app(environ, start_response)

    return wrapper


def test_an_unusual_valid_path_works_end_to_end(make_app: MakeApp) -> None:
    app = make_app(app=mounted("/app-1/x_y", demo_app), path="/app-1/x_y")
    res = app.get("/app-1/x_y/incr")
    header = next(v for k, v in res.headerlist if k == "Set-Cookie")
    assert "; Path=/app-1/x_y;" in header
    assert app.get("/app-1/x_y/incr").json == 2
    assert app.get("/app-1/x_y/read").json == 2
    # The cookie jar, like a browser, sends the cookie under its path only.
    assert app.get("/elsewhere/read", status=404).request.headers.get("Cookie") is None


# -- cookie tossing: the genuine cookie after any number of planted ones -------------------------


def forged() -> str:
    """A value shaped exactly like a signed ID, signed with a key we do not hold."""
    return Signer("another-secret-" + "y" * 32).sign(new_id())


def security_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.security_event  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "wsgisession.security" and hasattr(r, "security_event")
    ]


def test_the_genuine_cookie_after_ten_planted_ones_is_used(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    app.get("/incr")
    good = app.cookies["session"]
    app.cookiejar.clear()
    sid = str(good).split(".")[0]
    planted = [
        forged(),
        f"{sid}.{'A' * 43}",  # the user's own ID with a made-up signature
        forged(),
        "junk",
        "",
        '"quoted"',
        "x" * 200,
        f"{sid}.{'A' * 42}",  # one character short
        forged(),
        f"{sid}={sid}",
    ]
    header = "; ".join(f"session={value}" for value in planted) + f"; theme=dark; session={good}"
    with caplog.at_level(logging.INFO, "wsgisession.security"):
        assert app.get("/read", headers={"Cookie": header}).json == 1
    events = security_events(caplog)
    # One record per kind and request, not one per planted cookie.
    assert events.count("duplicate_cookie") == 1
    assert events.count("bad_signature") == 1
    assert events.count("malformed_cookie") == 1
    messages = {getattr(r, "security_event", None): r.getMessage() for r in caplog.records}
    assert "11 cookies" in messages["duplicate_cookie"]
    assert messages["bad_signature"].startswith("4 ")
    assert messages["malformed_cookie"].startswith("6 ")


def test_a_header_full_of_forgeries_yields_no_session(make_app: MakeApp) -> None:
    app = make_app()
    app.get("/incr")
    app.cookiejar.clear()
    cookies = []
    while len("; ".join(cookies)) < MAX_COOKIE_HEADER - 200:
        cookies.append(f"session={forged()}")
        cookies.append(f"session={secrets.token_urlsafe(20)}")
    header = "; ".join(cookies)
    assert len(header) <= MAX_COOKIE_HEADER
    assert app.get("/read", headers={"Cookie": header}).json is None
    res = app.get("/incr", headers={"Cookie": header})
    assert res.json == 1, "a new session, not one of the forged IDs"
