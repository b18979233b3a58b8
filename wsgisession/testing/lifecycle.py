"""The session lifecycle, proved against a reference model (hypothesis stateful testing).

:class:`SessionLifecycle` drives the real :class:`~wsgisession.SessionMiddleware`
with several browsers of two users, each request begun, acted in and ended
at its own step, so requests interleave as they do under a real server. Two
hosts share the store and rotate their secret by the documented procedure.
After every step it compares what each browser's cookie names, what the
store holds (data, user, creation and expiry times) and who is logged in
with :class:`_Model`, a few dozen lines that say what should happen.

To run it against a store of your own::

    from wsgisession.testing import SessionLifecycle

    class MyStoreLifecycle(SessionLifecycle):
        def make_store(self):
            return MyStore(...)

    TestMyStoreLifecycle = MyStoreLifecycle.TestCase

Set ``encrypt = True`` on the subclass to run it with sealed values
(``SessionMiddleware(encrypt=True)``): the store must then hold every value
sealed, and the model follows what sealing changes (no user agent is kept;
a rename re-seals the values the renaming request has, so values another
request added meanwhile cannot be opened: each is absent, and deleted by the
next save of a request that used it; a value is opened when first used).

``make_store`` is called once per example; :meth:`SessionLifecycle.release_store`
closes the store afterwards (override both to share one store between
examples: the machine's user IDs are unique to each example). The store
must read the time through :func:`wsgisession._clock.now`, which the machine
moves.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.util import setup_testing_defaults

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from .. import _clock
from ..ids import store_key
from ..middleware import SessionMiddleware, get_session
from ..session import Session
from ..signing import Signer
from ..stores.base import Store, Update, UserIndex, expiry_slack
from .contract import Clock

__all__ = ["SessionLifecycle"]

COOKIE = "session"
BROWSERS = 3
MAX_IN_FLIGHT = 4
KEYS = ("a", "b", "cart")
VALUES = st.sampled_from([0, 1, True, 1.0, "x", "", None, [], [1], {"k": 1}, {"k": True}])


def _json(value: Any) -> str:
    """Equality as JSON sees it: ``1``, ``1.0`` and ``True`` differ, key order does not."""
    return json.dumps(value, sort_keys=True)


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(data))
    return copied


# -- the reference model ---------------------------------------------------------------


@dataclass
class _Record:
    data: dict[str, Any]
    user: str | None
    created: float
    expires: float
    #: Names whose stored values cannot be opened (encrypt=True): absent to a read.
    unreadable: set[str] = field(default_factory=set)


@dataclass
class _Req:
    """What one in-flight request should see and do."""

    browser: int
    incoming: str | None
    resign: bool
    state: str = "unloaded"  # "unloaded", "new" or "live", as wsgisession.session.State
    data: dict[str, Any] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)  # the data as last read or written
    sid: str | None = None
    stored: str | None = None
    user: str | None = None
    stored_user: str | None = None
    created: float | None = None
    expires: float | None = None
    origin_expires: float | None = None
    unreadable: set[str] = field(default_factory=set)  # used but would not open: the next save deletes them
    hidden: set[str] = field(default_factory=set)  # in the record, would not open, not used yet: kept


class _Model:
    """What should happen: records by session ID, and each request's view."""

    def __init__(
        self, ttl: float, absolute: float | None, rolling: bool, save_uninitialized: bool, encrypt: bool = False
    ) -> None:
        self.ttl, self.absolute, self.encrypt = ttl, absolute, encrypt
        self.rolling, self.save_uninitialized = rolling, save_uninitialized
        self.records: dict[str, _Record] = {}
        #: The store calls the middleware's sessions should make, by operation.
        self.calls: Counter[str] = Counter()

    def live(self, sid: str | None, now: float) -> _Record | None:
        record = self.records.get(sid) if sid is not None else None
        if record is not None and record.expires <= now:
            del self.records[sid]  # type: ignore[arg-type]
            return None
        return record

    def expiry(self, req: _Req, now: float) -> float:
        assert req.created is not None
        if self.absolute is None:
            return now + self.ttl
        return min(now + self.ttl, req.created + self.absolute)

    def load(self, req: _Req, now: float) -> None:
        if req.state == "unloaded":
            self.read(req, req.incoming, now)

    def read(self, req: _Req, sid: str | None, now: float) -> None:
        if sid is not None:
            self.calls["load"] += 1
        record = self.live(sid, now)
        if record is None:
            self.become_new(req)
            return
        req.state, req.sid, req.stored = "live", sid, sid
        req.data, req.loaded = _copy(record.data), _copy(record.data)
        req.user = req.stored_user = record.user
        req.created, req.expires, req.origin_expires = record.created, record.expires, record.expires
        req.unreadable, req.hidden = set(), set(record.unreadable)

    @staticmethod
    def use(req: _Req, key: str) -> None:
        """The request used *key*: a value there that would not open is found out."""
        if key in req.hidden:
            req.hidden.discard(key)
            req.unreadable.add(key)

    @staticmethod
    def become_new(req: _Req) -> None:
        req.state, req.sid, req.stored = "new", None, None
        req.data, req.loaded = {}, {}
        req.user = req.stored_user = None
        req.created = req.expires = req.origin_expires = None
        req.unreadable, req.hidden = set(), set()

    def dirty(self, req: _Req) -> bool:
        if req.state == "new":
            return bool(req.data) or req.user is not None
        if req.sid != req.stored or req.user != req.stored_user or req.unreadable:
            return True
        sets, deletes = self.changes(req)
        return bool(sets or deletes)

    @staticmethod
    def changes(req: _Req) -> tuple[dict[str, Any], set[str]]:
        sets = {k: v for k, v in req.data.items() if k not in req.loaded or _json(v) != _json(req.loaded[k])}
        return sets, set(req.loaded) - set(req.data)

    def save(self, req: _Req, now: float, new_sid: Callable[[], str | None]) -> None:
        self.load(req, now)
        self.calls["save"] += 1
        if req.state == "new":
            req.created = now if req.created is None else req.created
            sid = new_sid()
            assert sid is not None and sid not in self.records, "a new session gets a fresh ID"
            expires = self.expiry(req, now)
            self.records[sid] = _Record(_copy(req.data), req.user, req.created, expires)
        else:
            old = self.live(req.stored, now)
            if old is None:  # destroyed by another request: destroy wins
                self.become_new(req)
                return
            sets, deletes = self.changes(req)
            sid = req.sid
            assert sid is not None and req.stored is not None
            renamed = sid != req.stored
            if renamed:  # re-sealing every value opens every value first
                req.unreadable |= req.hidden
                req.hidden = set()
            if renamed and self.encrypt:
                # Re-sealed under the new ID: every value this request has;
                # what another request added meanwhile stays sealed under the old one.
                sets = req.data
                left = set(old.data) - set(req.data) - set(req.loaded) - req.unreadable
            else:
                left = set()
            for k in deletes | req.unreadable:
                old.data.pop(k, None)
            old.data.update(_copy(sets))
            # What this save wrote or deleted opens, or is gone; what another
            # request added before a rename stays sealed under the old ID.
            old.unreadable = (old.unreadable - req.unreadable - deletes - set(sets)) | left
            for k in old.unreadable:
                old.data.pop(k, None)
            expires = self.expiry(req, now)
            old.expires = expires
            old.user = req.user
            if renamed:
                del self.records[req.stored]
                self.records[sid] = old
        req.state, req.sid, req.stored, req.stored_user = "live", sid, sid, req.user
        req.expires = expires
        req.loaded = _copy(req.data)
        req.unreadable = set()

    def touch(self, req: _Req, now: float) -> None:
        self.load(req, now)
        if req.state != "live" or req.sid != req.stored:
            return
        expires = self.expiry(req, now)
        assert req.expires is not None
        if 0 <= expires - req.expires < expiry_slack(self.ttl):
            return
        self.calls["touch"] += 1
        record = self.live(req.stored, now)
        if record is None:
            self.become_new(req)
            return
        record.expires = req.expires = expires

    def destroy(self, req: _Req) -> None:
        doomed = req.stored if req.state == "live" else req.incoming if req.state == "unloaded" else None
        if doomed is not None:
            self.calls["destroy"] += 1
            self.records.pop(doomed, None)
        self.become_new(req)

    def others(self, req: _Req, now: float) -> list[str]:
        self.load(req, now)
        if req.user is None:
            return []
        mine = {req.sid, req.stored}
        return [s for s in list(self.records) if s not in mine and self.user_of(s, now) == req.user]

    def user_of(self, sid: str, now: float) -> str | None:
        record = self.live(sid, now)
        return None if record is None else record.user

    def commit(self, req: _Req, now: float, new_sid: Callable[[], str | None]) -> str:
        """Return the cookie action: "set", "delete" or "none"."""
        if req.state == "unloaded" and (self.rolling or self.save_uninitialized):
            self.load(req, now)
        if req.state != "unloaded":
            if self.dirty(req) or (self.save_uninitialized and req.state == "new"):
                self.save(req, now, new_sid)
            elif self.rolling and req.state == "live":
                self.touch(req, now)
        if req.state == "live" and (req.sid != req.incoming or req.expires != req.origin_expires):
            return "set"
        if req.state == "new" and req.incoming is not None:
            return "delete"
        if req.resign:
            self.load(req, now)  # the middleware re-signs a live session's cookie
            if req.state == "live" and req.sid == req.incoming:
                return "set"
        return "none"


# -- the real thing, driven step by step --------------------------------------------------


@dataclass
class _Host:
    keys: list[str]  # labels of the secrets, the signing one first
    middleware: SessionMiddleware


@dataclass
class _Browser:
    agent: str
    cookie: str | None = None  # the signed value
    cookie_key: str | None = None  # which secret signed it (the model knows)
    cookie_expires: float | None = None  # when the browser drops it (Max-Age)
    expected: str | None = None  # the session ID the model says the cookie names


class _Flight:
    """A request in flight: begun (the middleware called), ended when its body is read."""

    def __init__(self, host: _Host, environ: dict[str, Any], fail: bool) -> None:
        self.host, self.fail = host, fail
        self.headers: list[tuple[str, str]] = []
        self.session: Session | None = None
        environ[_FLIGHT] = self
        self._body = host.middleware(environ, self._start_response)

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.session = get_session(environ)
        return self._respond(start_response)

    def _respond(self, start_response: Callable[..., Any]) -> Iterator[bytes]:
        # start_response runs when the body is first read, which PEP 3333
        # allows: the request stays open, session in hand, between steps.
        start_response("500 Internal Server Error" if self.fail else "200 OK", [("Content-Type", "text/plain")])
        yield b"ok"

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.headers = headers
        return lambda data: None

    def end(self) -> list[tuple[str, str]]:
        try:
            for _ in self._body:
                pass
        finally:
            self.close()
        return self.headers

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


_FLIGHT = "wsgisession.testing.flight"


class _Calls:
    """The middleware's metrics hook: counts the store calls its sessions make."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def increment(self, name: str, value: int = 1) -> None:
        pass

    def timing(self, name: str, seconds: float) -> None:
        operation = name.removeprefix("store.")
        if operation in ("load", "save", "touch", "destroy"):
            self.counts[operation] += 1


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Every host's application: the request's own flight answers it."""
    flight: _Flight = environ[_FLIGHT]
    return flight.app(environ, start_response)


class SessionLifecycle(RuleBasedStateMachine):
    """The lifecycle model-based test. Subclass it and implement :meth:`make_store`."""

    #: Run with ``SessionMiddleware(encrypt=True)``: every stored value sealed.
    encrypt = False

    def make_store(self) -> Store:
        """The store under test, fresh or shared (user IDs are unique to each example)."""
        raise NotImplementedError("implement make_store() to return the store under test")

    def release_store(self, store: Store) -> None:
        """Called when an example ends: closes the store."""
        store.close()

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._real_now = _clock.now
        _clock.now = self.clock
        self.store = self.make_store()
        tag = secrets.token_hex(4)
        self.users = [f"alice-{tag}", f"bob-{tag}"]
        self.secrets: dict[str, str] = {}
        self.generation = 0
        self.flights: list[tuple[_Flight, _Req]] = []
        self.browsers = [_Browser(agent=f"browser {n}") for n in range(BROWSERS)]
        self.known: set[str] = set()  # every session ID the model ever saw
        self.hosts: list[_Host] = []
        self.calls = _Calls()
        self.model: _Model

    def teardown(self) -> None:
        for flight, _ in self.flights:
            flight.close()
        try:
            self.release_store(self.store)
        finally:
            _clock.now = self._real_now

    # -- set-up ------------------------------------------------------------------------

    @initialize(
        max_age=st.sampled_from([600, None]),
        absolute=st.sampled_from([None, 1500]),
        rolling=st.booleans(),
        save_uninitialized=st.booleans(),
    )
    def configure(self, max_age: int | None, absolute: int | None, rolling: bool, save_uninitialized: bool) -> None:
        self.options: dict[str, Any] = {
            "max_age": max_age,
            "absolute_timeout": absolute,
            "rolling": rolling,
            "save_uninitialized": save_uninitialized,
        }
        self.max_age = max_age
        self.ttl = 86400 if max_age is None else max_age
        self.model = _Model(self.ttl, absolute, rolling, save_uninitialized, self.encrypt)
        first = self._new_secret()
        self.hosts = [self._host([first]), self._host([first])]
        self.switched_at: float | None = None

    def _new_secret(self) -> str:
        label = f"k{self.generation}"
        self.generation += 1
        self.secrets[label] = secrets.token_hex(32)
        return label

    def _host(self, keys: list[str]) -> _Host:
        middleware = SessionMiddleware(
            _app,
            secret=[self.secrets[k] for k in keys],
            store=self.store,
            cookie_name=COOKIE,
            metrics=self.calls,
            encrypt=self.encrypt,
            **self.options,
        )
        return _Host(keys, middleware)

    # -- requests --------------------------------------------------------------------------

    @precondition(lambda self: len(self.flights) < MAX_IN_FLIGHT)
    @rule(browser=st.integers(0, BROWSERS - 1), host=st.integers(0, 1), fail=st.sampled_from([False] * 5 + [True]))
    def begin(self, browser: int, host: int, fail: bool) -> None:
        b = self.browsers[browser]
        now = self.clock()
        if b.cookie is not None and b.cookie_expires is not None and b.cookie_expires <= now:
            b.cookie = b.cookie_key = b.cookie_expires = None
            b.expected = None
        h = self.hosts[host]
        incoming = None
        resign = False
        if b.cookie is not None:
            assert b.cookie_key is not None and b.expected is not None
            if self.model.live(b.expected, now) is not None:
                assert b.cookie_key in h.keys, "a live session's cookie is refused by a host: rotation logged it out"
            if b.cookie_key in h.keys:
                incoming, resign = b.expected, b.cookie_key != h.keys[0]
        environ: dict[str, Any] = {"HTTP_USER_AGENT": b.agent}
        if b.cookie is not None:
            environ["HTTP_COOKIE"] = f"{COOKIE}={b.cookie}"
        setup_testing_defaults(environ)
        flight = _Flight(h, environ, fail)
        self.flights.append((flight, _Req(browser, incoming, resign)))

    def _pick(self, n: int) -> tuple[_Flight, _Req, Session]:
        flight, req = self.flights[n % len(self.flights)]
        assert flight.session is not None
        return flight, req, flight.session

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1))
    def end(self, n: int) -> None:
        flight, req = self.flights.pop(n % len(self.flights))
        session = flight.session
        assert session is not None
        now = self.clock()
        headers = flight.end()
        cookies = [v for k, v in headers if k.lower() == "set-cookie" and v.startswith(COOKIE + "=")]
        assert len(cookies) <= 1
        browser = self.browsers[req.browser]
        if flight.fail:
            assert not cookies, "a 5xx response sends no cookie"
            return
        expected = self.model.commit(req, now, lambda: session.id)
        got = "none" if not cookies else "delete" if cookies[0].startswith(COOKIE + "=;") else "set"
        assert got == expected, f"cookie action {got}, the model says {expected}"
        if got == "set":
            value = cookies[0].split(";", 1)[0].split("=", 1)[1]
            signer = Signer(self.secrets[flight.host.keys[0]])
            assert signer.unsign(value)[0] == req.sid, "the cookie names the session"
            browser.cookie, browser.cookie_key, browser.expected = value, flight.host.keys[0], req.sid
            self.known.add(value.split(".")[0])
            if self.max_age is None:
                assert "Max-Age" not in cookies[0]
                browser.cookie_expires = None
            else:
                max_age = int(cookies[0].split("Max-Age=", 1)[1].split(";", 1)[0])
                assert req.expires is not None and max_age == max(0, math.ceil(req.expires - now))
                browser.cookie_expires = now + max_age
        elif got == "delete":
            browser.cookie = browser.cookie_key = browser.cookie_expires = browser.expected = None

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1), key=st.sampled_from(KEYS))
    def read(self, n: int, key: str) -> None:
        _, req, session = self._pick(n)
        got = session.get(key)
        self.model.load(req, self.clock())
        self.model.use(req, key)
        assert _json(got) == _json(req.data.get(key)), f"read {key!r}"

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1), key=st.sampled_from(KEYS), value=VALUES)
    def set(self, n: int, key: str, value: Any) -> None:
        _, req, session = self._pick(n)
        session[key] = value
        self.model.load(req, self.clock())
        self.model.use(req, key)
        req.data[key] = _copy({"v": value})["v"]

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1), key=st.sampled_from(KEYS))
    def delete(self, n: int, key: str) -> None:
        _, req, session = self._pick(n)
        self.model.load(req, self.clock())
        self.model.use(req, key)
        if key in req.data:
            del session[key]
            del req.data[key]
        else:
            assert key not in session

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1), item=st.integers(0, 3))
    def change_in_place(self, n: int, item: int) -> None:
        _, req, session = self._pick(n)
        value = session.get("cart")
        self.model.load(req, self.clock())
        self.model.use(req, "cart")
        if type(value) is list:
            value.append(item)
            req.data["cart"].append(item)
        elif type(value) is dict:
            value["k"] = item
            req.data["cart"]["k"] = item

    @precondition(lambda self: self.encrypt and self.hosts)
    @rule(data=st.data())
    def move_a_value(self, data: st.DataObject) -> None:
        """Someone with write access to the store moves a sealed value: to another name or session, it cannot open."""
        now = self.clock()
        live = [sid for sid in list(self.model.records) if self.model.live(sid, now) is not None]  # in a fixed order
        if not live:
            return
        source = live[data.draw(st.integers(0, len(live) - 1), label="from session")]
        target = live[data.draw(st.integers(0, len(live) - 1), label="to session")]
        readable = sorted(self.model.records[source].data)  # a value that opens where it is: sealed there
        if not readable:
            return
        name, to = data.draw(st.sampled_from(readable), label="name"), data.draw(st.sampled_from(KEYS), label="to")
        if (source, name) == (target, to):
            return
        record = self.store.load(store_key(source))
        assert record is not None
        modelled = self.model.records[target]
        moved = Update(set={to: record.data[name]}, expires_at=modelled.expires)
        assert self.store.save(store_key(target), moved)
        modelled.data.pop(to, None)
        modelled.unreadable.add(to)

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1))
    def save(self, n: int) -> None:
        _, req, session = self._pick(n)
        session.save()
        self.model.save(req, self.clock(), lambda: session.id)

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1))
    def reload(self, n: int) -> None:
        _, req, session = self._pick(n)
        session.reload()
        if req.state == "live":
            self.model.read(req, req.stored, self.clock())
        elif req.state == "new":
            self.model.become_new(req)

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1))
    def touch(self, n: int) -> None:
        _, req, session = self._pick(n)
        session.touch()
        self.model.touch(req, self.clock())

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1))
    def regenerate(self, n: int) -> None:
        _, req, session = self._pick(n)
        before = session.id
        session.regenerate()
        self.model.load(req, self.clock())
        if req.state == "live":
            assert session.id is not None and session.id != before
            req.sid = session.id
        else:
            assert session.id is None

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1), user=st.integers(0, 1))
    def login(self, n: int, user: int) -> None:
        _, req, session = self._pick(n)
        session.login(self.users[user])
        self.model.load(req, self.clock())
        if req.state == "live":
            req.sid = session.id
        req.user = self.users[user]
        self.model.use(req, "_csrf_token")
        req.data["_csrf_token"] = session["_csrf_token"]
        if not self.encrypt:
            req.data["_user_agent"] = self.browsers[req.browser].agent

    @precondition(lambda self: self.flights)
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1))
    def destroy(self, n: int) -> None:
        _, req, session = self._pick(n)
        session.destroy()
        self.model.destroy(req)

    @precondition(lambda self: self.flights and isinstance(self.store, UserIndex))
    @rule(n=st.integers(0, MAX_IN_FLIGHT - 1))
    def end_other_sessions(self, n: int) -> None:
        _, req, session = self._pick(n)
        ended = session.end_other_sessions()
        others = self.model.others(req, self.clock())
        assert ended == len(others)
        self.model.calls["destroy"] += len(others)
        for sid in others:
            del self.model.records[sid]

    # -- outside any request ----------------------------------------------------------------

    @precondition(lambda self: isinstance(self.store, UserIndex))
    @rule(user=st.integers(0, 1))
    def destroy_user(self, user: int) -> None:
        assert isinstance(self.store, UserIndex)
        now = self.clock()
        doomed = [s for s in list(self.model.records) if self.model.user_of(s, now) == self.users[user]]
        assert self.store.destroy_user(self.users[user]) == len(doomed)
        for sid in doomed:
            del self.model.records[sid]

    @rule()
    def prune(self) -> None:
        self.store.prune()

    @rule(seconds=st.sampled_from([1, 7, 61, 301, 601, 1501]))
    def advance(self, seconds: int) -> None:
        """Move time: under the touch slack, past it, past half or all of max_age, past the absolute timeout."""
        self.clock.advance(seconds)

    @precondition(lambda self: self.hosts)
    @rule(host=st.integers(0, 1))
    def rotate(self, host: int) -> None:
        """One host's step in the documented rotation: add the new secret, then sign with it, then drop the old."""
        h = self.hosts[host]
        newest = max((k for o in self.hosts for k in o.keys), key=lambda k: int(k[1:]))
        if all(o.keys == [newest] for o in self.hosts):
            self.hosts[host] = self._host([newest, self._new_secret()])  # 1. a new secret, verify only
        elif newest not in h.keys:
            self.hosts[host] = self._host([*h.keys, newest])  # 1. ... on every host first
        elif h.keys[0] != newest:
            if all(newest in o.keys for o in self.hosts):  # 2. sign with it once every host knows it
                self.hosts[host] = self._host([newest, *[k for k in h.keys if k != newest]])
                if all(o.keys[0] == newest for o in self.hosts):
                    self.switched_at = self.clock()
        elif len(h.keys) > 1 and self._may_drop_old(newest):
            self.hosts[host] = self._host([newest])  # 3. drop the old one once its cookies are dead

    def _may_drop_old(self, newest: str) -> bool:
        if self.switched_at is None or any(o.keys[0] != newest for o in self.hosts):
            return False
        if any(f.host.keys[0] != newest for f, _ in self.flights):
            return False  # a request begun before the switch may still send an old-signed cookie
        return self.clock() >= self.switched_at + self.ttl

    # -- what must hold after every step --------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        if not self.hosts:
            return
        now = self.clock()
        for sid in sorted(self.known | set(self.model.records)):
            expected = self.model.live(sid, now)
            record = self.store.load(store_key(sid))
            if expected is None:
                assert record is None, "a session the model says is gone is in the store"
                continue
            assert record is not None, "a live session is missing from the store"
            data = record.data
            if self.encrypt:
                data = self._opened(sid, data)
                assert set(record.data) - set(data) == expected.unreadable, "the values that cannot be opened"
            assert _json(data) == _json(expected.data)
            assert record.user_id == expected.user
            assert math.isclose(record.created_at, expected.created, abs_tol=0.01), "created_at"
            assert math.isclose(record.expires_at, expected.expires, abs_tol=0.01), "expires_at"
        self.known.update(self.model.records)
        if isinstance(self.store, UserIndex):
            for user in self.users:
                stored = {k for k, _ in self.store.sessions_of(user)}
                modelled = {store_key(s) for s in list(self.model.records) if self.model.user_of(s, now) == user}
                assert stored == modelled, f"the sessions of {user}"

    @staticmethod
    def _opened(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """The sealed values of session *sid* opened; those that do not open left out."""
        from ..sealing import Sealer, is_sealed

        sealer = Sealer()
        opened = {}
        for name, value in data.items():
            assert is_sealed(value), f"{name!r} is stored in the clear"
            with contextlib.suppress(ValueError):
                opened[name] = sealer.open(sid, name, value)
        return opened

    @invariant()
    def store_calls_match_model(self) -> None:
        """No read the session did not need, no write of an unchanged session, no write missed."""
        if self.hosts:
            real, modelled = self.calls.counts, +self.model.calls
            assert real == modelled, f"store calls {dict(real)}, the model says {dict(modelled)}"

    @invariant()
    def browsers_match_model(self) -> None:
        for browser in self.browsers:
            named = None if browser.cookie is None else browser.cookie.split(".", 1)[0]
            assert named == browser.expected
