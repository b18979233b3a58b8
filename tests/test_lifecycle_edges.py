"""The edges of the session lifecycle, one focused test each, through the real middleware.

Requests are held open between steps (the app's body is read later, which
is when the middleware commits), so "a request in flight while another logs
out" is an exact interleaving, not a race.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from wsgisession import Session, SessionMiddleware, get_session
from wsgisession.ids import store_key
from wsgisession.session import CookieAction, State
from wsgisession.stores.base import Store, UserIndex
from wsgisession.testing import Clock

from .conftest import SECRET

OLD_SECRET = "old-secret-" + "o" * 32
NEW_SECRET = "new-secret-" + "n" * 32


class Calls:
    """A metrics hook that counts store calls."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def increment(self, name: str, value: int = 1) -> None:
        pass

    def timing(self, name: str, seconds: float) -> None:
        self.counts[name.removeprefix("store.")] += 1


class Browser:
    """Holds the session cookie like a browser does, for one or more hosts."""

    def __init__(self) -> None:
        self.cookie: str | None = None

    def begin(self, middleware: SessionMiddleware, path: str = "/") -> Flight:
        return Flight(self, middleware, path)

    def request(self, middleware: SessionMiddleware, act: Callable[[Session], Any] = lambda s: None) -> Flight:
        flight = self.begin(middleware)
        act(flight.session)
        flight.end()
        return flight


class Flight:
    """A request begun, acted in through its session, and ended later."""

    def __init__(self, browser: Browser, middleware: SessionMiddleware, path: str) -> None:
        self.browser = browser
        self.headers: list[tuple[str, str]] = []
        environ: dict[str, Any] = {"PATH_INFO": path, "test.flight": self}
        if browser.cookie is not None:
            environ["HTTP_COOKIE"] = f"session={browser.cookie}"
        setup_testing_defaults(environ)
        self._session: Session | None = None
        self._body = middleware(environ, self._start_response)

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self._session = get_session(environ)
        return self._respond(start_response)

    @staticmethod
    def _respond(start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"ok"

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.headers = headers
        return lambda data: None

    @property
    def session(self) -> Session:
        assert self._session is not None
        return self._session

    @property
    def set_cookie(self) -> str | None:
        found = [v for k, v in self.headers if k == "Set-Cookie" and v.startswith("session=")]
        assert len(found) <= 1
        return found[0] if found else None

    def end(self) -> None:
        for _ in self._body:
            pass
        header = self.set_cookie
        if header is not None:
            value = header.split(";", 1)[0].split("=", 1)[1]
            self.browser.cookie = value or None


@pytest.fixture
def host(every_store: Store) -> Callable[..., SessionMiddleware]:
    """Make a middleware ("a host") on the shared store."""

    def make(**options: Any) -> SessionMiddleware:
        options.setdefault("secret", SECRET)
        return SessionMiddleware(_DispatchApp(), store=every_store, **options)

    return make


class _DispatchApp:
    """Routes each request to the Flight that began it (set in the environ just in time)."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        flight: Flight = environ["test.flight"]
        return flight.app(environ, start_response)


def logged_in(browser: Browser, middleware: SessionMiddleware, user: str = "alice") -> str:
    def act(s: Session) -> None:
        s.login(user)
        s["cart"] = ["book"]

    browser.request(middleware, act)
    assert browser.cookie is not None
    return browser.cookie.split(".")[0]


# -- 1. save() of a new session sends its cookie ------------------------------------------


def test_save_of_a_new_session_sends_the_cookie(host: Callable[..., SessionMiddleware], every_store: Store) -> None:
    app = host()
    browser = Browser()

    def act(s: Session) -> None:
        s["cart"] = ["book"]
        s.save()

    flight = browser.request(app, act)
    assert flight.set_cookie is not None, "the data saved by save() must reach the browser"
    assert browser.request(app, lambda s: None).session.get("cart") == ["book"]


def test_login_then_save_sends_the_new_id(host: Callable[..., SessionMiddleware], every_store: Store) -> None:
    app = host()
    browser = Browser()
    browser.request(app, lambda s: s.__setitem__("visits", 1))
    before = browser.cookie

    def act(s: Session) -> None:
        s.login("alice")
        s.save()

    browser.request(app, act)
    assert browser.cookie is not None and browser.cookie != before
    assert browser.request(app).session.user_id == "alice", "logging in must not log the user out"


# -- 2. regenerate() in flight never resurrects a destroyed session -----------------------


@pytest.mark.parametrize("how", ["logout", "destroy_user", "end_other_sessions"])
@pytest.mark.parametrize("then", ["regenerate", "login"])
def test_regenerate_in_flight_does_not_resurrect(
    host: Callable[..., SessionMiddleware], every_store: Store, how: str, then: str
) -> None:
    if how != "logout" and not isinstance(every_store, UserIndex):
        pytest.skip("needs a user index")
    app = host()
    phone, laptop = Browser(), Browser()
    sid = logged_in(phone, app)
    logged_in(laptop, app)
    slow = phone.begin(app)
    assert slow.session["cart"] == ["book"]  # loaded before the logout
    if how == "logout":
        phone_copy = Browser()
        phone_copy.cookie = phone.cookie
        phone_copy.request(app, lambda s: s.destroy())
    elif how == "destroy_user":
        assert isinstance(every_store, UserIndex)
        every_store.destroy_user("alice")
    else:
        laptop.request(app, lambda s: s.end_other_sessions())
    if then == "regenerate":
        slow.session.regenerate()
    else:
        slow.session.login("alice")
    new_id = slow.session.id
    slow.end()
    assert new_id is not None and new_id != sid
    assert every_store.load(store_key(new_id)) is None, "the renamed session came back"
    assert every_store.load(store_key(sid)) is None
    assert slow.set_cookie is not None and slow.set_cookie.startswith("session=;"), "the dead cookie is expired"
    if isinstance(every_store, UserIndex) and how != "end_other_sessions":
        assert every_store.sessions_of("alice") == [] or how == "logout"


# -- 3. regenerate() keeps the absolute deadline --------------------------------------------


def test_regenerate_keeps_created_at_and_the_absolute_timeout(
    host: Callable[..., SessionMiddleware], every_store: Store, clock: Clock
) -> None:
    app = host(absolute_timeout=1000, max_age=600, rolling=True)
    browser = Browser()
    born = clock()
    logged_in(browser, app)
    for _ in range(3):
        clock.advance(300)
        flight = browser.request(app, lambda s: s.regenerate())
        assert flight.session.created_at == pytest.approx(born, abs=0.01)
        assert flight.session.expires_at is not None and flight.session.expires_at <= born + 1000
    clock.advance(101)
    assert browser.request(app).session.is_new, "rotating the ID must not dodge the absolute timeout"


# -- 4. assigning the value a key already has is no change -----------------------------------


@pytest.mark.parametrize(
    ("stored", "assigned"),
    [
        pytest.param("bob", "bob", id="str"),
        pytest.param({"b": 2, "a": 1}, {"a": 1, "b": 2}, id="dict-order"),
        pytest.param([1, [2, 3]], [1, [2, 3]], id="nested-list"),
    ],
)
def test_assigning_an_equal_value_writes_nothing(
    host: Callable[..., SessionMiddleware], every_store: Store, clock: Clock, stored: Any, assigned: Any
) -> None:
    calls = Calls()
    app = host(metrics=calls)
    browser = Browser()
    browser.request(app, lambda s: s.__setitem__("user", stored))
    clock.advance(30)
    before = calls.counts["save"]
    flight = browser.request(app, lambda s: s.__setitem__("user", assigned))
    assert calls.counts["save"] == before, "an unchanged session is not written"
    assert flight.set_cookie is None, "nor re-sent"


def test_a_changed_type_is_a_change(host: Callable[..., SessionMiddleware], every_store: Store) -> None:
    app = host()
    browser = Browser()
    browser.request(app, lambda s: s.__setitem__("n", 1))
    seen = []

    def act(s: Session) -> None:
        s["n"] = True
        seen.append(s.modified)

    browser.request(app, act)
    assert seen == [True]
    assert browser.request(app).session["n"] is True


def test_set_then_restored_in_the_same_request_is_no_change(
    host: Callable[..., SessionMiddleware], every_store: Store
) -> None:
    calls = Calls()
    app = host(metrics=calls)
    browser = Browser()
    browser.request(app, lambda s: s.update(cart=[1], user="bob"))
    before = calls.counts["save"]

    def act(s: Session) -> None:
        s["user"] = "eve"
        del s["cart"]
        s["cart"] = [1]
        s["user"] = "bob"

    flight = browser.request(app, act)
    assert calls.counts["save"] == before and flight.set_cookie is None


# -- 5. destroy() without a cookie sends no deletion ------------------------------------------


def test_destroy_without_a_cookie_sends_nothing(host: Callable[..., SessionMiddleware], every_store: Store) -> None:
    flight = Browser().request(host(), lambda s: s.destroy())
    assert flight.set_cookie is None


def test_destroy_with_a_cookie_expires_it(host: Callable[..., SessionMiddleware], every_store: Store) -> None:
    app = host()
    browser = Browser()
    logged_in(browser, app)
    flight = browser.request(app, lambda s: s.destroy())
    assert flight.set_cookie is not None and flight.set_cookie.startswith("session=;")
    assert browser.cookie is None


# -- the states, as the session reports them ---------------------------------------------------


def test_states_and_cookie_actions(host: Callable[..., SessionMiddleware], every_store: Store) -> None:
    app = host()
    browser = Browser()
    first = browser.begin(app)
    assert first.session.state is State.NEW
    first.session["a"] = 1
    assert first.session.cookie_action() is CookieAction.NONE, "nothing stored yet"
    first.session.save()
    assert first.session.state is State.LIVE
    assert first.session.cookie_action() is CookieAction.SET
    first.end()
    second = browser.begin(app)
    assert second.session.state is State.UNLOADED, "the store is not read until the session is used"
    assert second.session["a"] == 1
    assert second.session.state is State.LIVE
    assert second.session.cookie_action() is CookieAction.NONE
    second.session.destroy()
    assert second.session.state is State.NEW
    assert second.session.cookie_action() is CookieAction.DELETE
    second.end()


# -- 10. secret rotation in a rolling deploy ------------------------------------------------


def test_rotation_by_the_documented_procedure_logs_nobody_out(
    host: Callable[..., SessionMiddleware], every_store: Store, clock: Clock
) -> None:
    browsers = [Browser() for _ in range(4)]
    hosts = [host(secret=[OLD_SECRET]), host(secret=[OLD_SECRET])]
    for n, browser in enumerate(browsers):
        logged_in(browser, hosts[n % 2], user=f"user{n}")

    def every_browser_still_logged_in() -> None:
        for n, browser in enumerate(browsers):
            for h in hosts:
                assert browser.request(h).session.user_id == f"user{n}"

    # 1. Add the new secret at the end, verify only, on one host after the other.
    hosts[0] = host(secret=[OLD_SECRET, NEW_SECRET])
    every_browser_still_logged_in()
    hosts[1] = host(secret=[OLD_SECRET, NEW_SECRET])
    every_browser_still_logged_in()
    # 2. Once every host has it, make it the signing one, host by host.
    hosts[0] = host(secret=[NEW_SECRET, OLD_SECRET])
    every_browser_still_logged_in()
    hosts[1] = host(secret=[NEW_SECRET, OLD_SECRET])
    every_browser_still_logged_in()
    # 3. After max_age, every live cookie is signed with the new one: drop the old.
    for browser in browsers:
        browser.request(hosts[0])  # re-signed on the way
    hosts[0] = host(secret=[NEW_SECRET])
    hosts[1] = host(secret=[NEW_SECRET])
    every_browser_still_logged_in()


def test_putting_a_new_secret_first_on_one_host_logs_users_out_on_the_others(
    host: Callable[..., SessionMiddleware], every_store: Store
) -> None:
    """Why the procedure has a verify-only step: the shortcut loses logins."""
    browser = Browser()
    old_host = host(secret=[OLD_SECRET])
    logged_in(browser, old_host)
    new_host = host(secret=[NEW_SECRET, OLD_SECRET])
    browser.request(new_host)  # re-signed with the new secret
    assert browser.request(old_host).session.user_id is None


# -- 6. one rule for values: refused when set, or when saved if changed in place ------------


def deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "grow",
    [
        pytest.param(lambda cart: cart.append(deep(10_000)), id="10000-levels-deep"),
        pytest.param(lambda cart: cart.append(10**5000), id="5000-digit-int"),
        pytest.param(lambda cart: cart.append({1, 2}), id="a-set"),
        pytest.param(lambda cart: cart.append(float("nan")), id="nan"),
        pytest.param(lambda cart: cart.append((1, 2)), id="a-tuple"),
    ],
)
def test_a_value_grown_in_place_past_json_is_a_type_error_naming_the_key_at_save(
    host: Callable[..., SessionMiddleware], every_store: Store, grow: Callable[[list[Any]], None]
) -> None:
    app = host()
    browser = Browser()
    browser.request(app, lambda s: s.__setitem__("cart", ["book"]))
    flight = browser.begin(app)
    grow(flight.session["cart"])
    with pytest.raises(TypeError, match="'cart'"):
        flight.session.save()
    assert browser.request(app).session["cart"] == ["book"], "the stored data is untouched"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(deep(100), id="100-levels-deep"),
        pytest.param(10**5000, id="5000-digit-int"),
        pytest.param([10**5000], id="5000-digit-int-in-a-list"),
    ],
)
def test_a_value_past_json_is_refused_when_set(host: Callable[..., SessionMiddleware], value: Any) -> None:
    flight = Browser().begin(host())
    with pytest.raises(TypeError, match="'cart'"):
        flight.session["cart"] = value
    assert "cart" not in flight.session
