"""Session: the mapping an application reads and writes, and what changed in it."""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from . import _clock, _json, sealing
from .errors import WSGISessionError
from .ids import log_tag, new_id, store_key
from .sealing import Sealer
from .stores.base import Record, Store, Update, UserIndex, expiry_slack

log = logging.getLogger("wsgisession")
security_log = logging.getLogger("wsgisession.security")

#: How long a session lives on the server when the cookie has no Max-Age.
DEFAULT_TTL = 86400

_MUTABLE = (list, dict)

#: Where flash messages and the CSRF token live in the session's data.
FLASH_KEY = "_flashes"
CSRF_KEY = "_csrf_token"
USER_AGENT_KEY = "_user_agent"
#: Where a session keeps its own choice of cookie lifetime (see :attr:`Session.permanent`).
PERMANENT_KEY = "_permanent"

#: User agents longer than this are cut when kept in a session.
_MAX_USER_AGENT = 256


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session needs to know about its middleware's configuration."""

    store: Store
    ttl: float = DEFAULT_TTL
    absolute_timeout: float | None = None
    #: Refresh a live session's expiry on every response (an idle timeout).
    rolling: bool = False
    #: Save a new session even if nothing was put in it.
    save_uninitialized: bool = False
    #: Seal every stored value under a key derived from the session ID (:mod:`wsgisession.sealing`).
    encrypt: bool = False
    #: What seals and opens the values (encrypt=True), with the ciphers of recently used sessions.
    sealer: Sealer = field(default_factory=Sealer, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Another live session of the same user, as :meth:`Session.other_sessions` lists it.

    ``handle`` is an opaque name for the session, for :meth:`Session.end_session`:
    it cannot be turned back into a session ID or a cookie.
    """

    handle: str
    created_at: float
    last_seen: float
    expires_at: float
    user_agent: str | None


def _handle(key: str) -> str:
    return hashlib.sha256(b"wsgisession session handle\x00" + key.encode("ascii")).hexdigest()[:32]


class State(enum.Enum):
    """Where a session is in its life, as this request sees it.

    ``UNLOADED`` -> ``LIVE`` or ``NEW`` when the data is first used (the store
    is read then, not before). ``NEW`` -> ``LIVE`` when it is saved.
    ``LIVE`` -> ``NEW`` when it is destroyed, here or by another request (a
    save or touch that finds it gone). :meth:`Session.regenerate` keeps a
    ``LIVE`` session ``LIVE`` under a new ID; the store renames the record when
    the session is next saved.
    """

    #: The cookie names a session; the store has not been read yet.
    UNLOADED = "unloaded"
    #: No record in the store: no cookie, a cookie naming nothing live, or destroyed.
    NEW = "new"
    #: A record is in the store (read, or written by this request).
    LIVE = "live"


class CookieAction(enum.Enum):
    """What the response must do with the session cookie, as :meth:`Session.commit` says."""

    #: Leave the browser's cookie as it is (or send none).
    NONE = "none"
    #: Send the cookie: a new ID, or a refreshed expiry.
    SET = "set"
    #: Expire the browser's cookie: the session it named is gone.
    DELETE = "delete"


# Module-level names for the members: an Enum attribute lookup costs more than
# the rest of a read-only request's state checks together.
_UNLOADED, _NEW, _LIVE = State.UNLOADED, State.NEW, State.LIVE
_NO_ACTION, _SET, _DELETE = CookieAction.NONE, CookieAction.SET, CookieAction.DELETE


class Session(MutableMapping[str, Any]):
    """One browser's session: a mapping of JSON data with a lifecycle (see :class:`State`).

    The store is not read until the data is first used. Values must be JSON
    data (``str``, ``int``, ``float``, ``bool``, ``None``, ``list``, ``dict``
    with ``str`` keys); anything else raises :class:`TypeError` naming the key,
    when it is set or, for a change made in place, when the session is saved.
    Changes are tracked per key, including changes made inside a list or dict
    that was read (``session["cart"].append(item)``), and only the keys whose
    value differs from the stored one are written, so concurrent requests that
    change different keys never undo each other, and setting a key to the
    value it already has writes nothing.
    """

    __slots__ = (
        "_baseline",
        "_created_at",
        "_data",
        "_expires_at",
        "_incoming",
        "_origin_expires_at",
        "_pending",
        "_resend",
        "_settings",
        "_sid",
        "_state",
        "_stored",
        "_stored_user",
        "_user_agent",
        "_user_id",
        "accessed",
    )

    def __init__(
        self,
        settings: SessionSettings,
        session_id: str | None = None,
        *,
        user_agent: str | None = None,
    ) -> None:
        """Make a session; *session_id* is the verified ID from the browser's cookie, if any."""
        self._settings = settings
        #: The ID the browser's cookie carries (verified), or None.
        self._incoming = session_id
        self._state = _NEW if session_id is None else _UNLOADED
        #: The ID the session has now: what the cookie will carry.
        self._sid = session_id
        #: The ID the store holds the record under (LIVE only); differs from
        #: _sid while a regenerate() waits for its rename.
        self._stored: str | None = None
        self._data: dict[str, Any] = {}
        #: Sealed values read but not opened yet, by name (encrypt=True): a
        #: value is opened when first used, so a request pays only for what it reads.
        self._pending: dict[str, str] = {}
        #: For each key this request touched: its value as JSON text as the
        #: store has it (None: absent). A key is changed when it differs.
        self._baseline: dict[str, object] = {}
        self._created_at: float | None = None
        self._expires_at: float | None = None
        #: The expiry of the record this request found (None: it found none).
        self._origin_expires_at: float | None = None
        self._user_id: str | None = None
        self._stored_user: str | None = None
        self._user_agent = user_agent
        #: A save changed the cookie's own lifetime (:attr:`permanent`): send it again.
        self._resend = False
        #: Whether the application used the session in this request (``Vary: Cookie``).
        self.accessed = False

    def __repr__(self) -> str:
        return f"<Session {self._state.value}, {len(self._data) + len(self._pending)} key(s)>"

    @property
    def state(self) -> State:
        """Where the session is in its lifecycle (reading it does not load the session)."""
        return self._state

    # -- loading ------------------------------------------------------------------

    def _load(self) -> None:
        self.accessed = True
        if self._state is _UNLOADED:
            self._read(self._sid)

    def _read(self, session_id: str | None) -> None:
        """Read *session_id*'s record: LIVE if it is there, NEW if not."""
        if session_id is None:
            self._become_new()
            return
        settings = self._settings
        key = store_key(session_id)
        record = settings.store.load(key)
        timeout = settings.absolute_timeout
        if record is not None and timeout is not None and record.created_at + timeout <= _clock.now():
            security_log.info(
                "session %s replayed after its absolute timeout",
                log_tag(session_id),
                extra={"security_event": "expired_replay"},
            )
            settings.store.destroy(key)
            record = None
        if record is None:
            # An ID we do not have is never adopted: the session starts afresh
            # and gets a new ID if it is saved.
            security_log.info(
                "session %s is unknown or expired", log_tag(session_id), extra={"security_event": "expired_replay"}
            )
            self._become_new()
            return
        self._state = _LIVE
        self._sid = self._stored = session_id
        self._data = record.data
        self._baseline = {}
        self._pending = {}
        if settings.encrypt or any(type(v) is str and v.startswith(sealing.PREFIX) for v in record.data.values()):
            self._sort_values()
        self._user_id = self._stored_user = record.user_id
        self._created_at = record.created_at
        self._expires_at = self._origin_expires_at = record.expires_at

    def _sort_values(self) -> None:
        """Sort the values just read into those to keep, to open and to rewrite.

        Under ``encrypt=True`` a sealed value waits, unopened, until the
        request first uses it (:meth:`_open`); a plain one (written before
        encryption was turned on) is rewritten sealed by the next save, and a
        plain user agent is deleted by it. Without ``encrypt``, sealed values
        are opened now, to be rewritten plain by the next save. Either way the
        session is modified, so the end of this request saves it.
        """
        encrypt = self._settings.encrypt
        baseline = self._baseline
        data: dict[str, Any] = {}
        for name, value in self._data.items():
            if sealing.is_sealed(value):
                self._pending[name] = value
            elif encrypt:
                baseline[name] = _UNLIKE
                if name != USER_AGENT_KEY:  # not kept under encryption: the next save deletes it
                    data[name] = value
            else:
                data[name] = value
        self._data = data
        if not encrypt:
            self._open_all()

    def _open(self, name: str) -> None:
        """Open the pending sealed value *name*: into the data, or absent if it does not open.

        A value that fails to open (planted, moved, damaged, or left by a
        rename that raced another request) is logged and deleted by the next
        save.
        """
        sealed = self._pending.pop(name)
        stored = self._stored
        assert stored is not None  # only a LIVE session has values read from the store
        try:
            value = self._settings.sealer.open(stored, name, sealed)
        except ImportError:
            # Only unreadable here: kept, for a process that can open it.
            self._refused(name, "the cryptography package is not installed")
            return
        except ValueError as exc:
            self._refused(name, str(exc))
            self._baseline[name] = _UNLIKE  # it does not open: the next save deletes it
            return
        self._data[name] = value
        if not self._settings.encrypt:
            self._baseline[name] = _UNLIKE  # sealed, but encryption is off: the next save writes it plain

    def _refused(self, name: str, why: str) -> None:
        security_log.warning(
            "sealed value %r of session %s treated as absent: %s",
            name,
            log_tag(self._stored or ""),
            why,
            extra={"security_event": "sealed_value_refused"},
        )

    def _open_all(self) -> None:
        if self._pending:
            for name in list(self._pending):
                self._open(name)

    def _become_new(self) -> None:
        """No record any more (or never): an empty session that gets a new ID if saved."""
        self._state = _NEW
        self._sid = self._stored = None
        self._data = {}
        self._baseline = {}
        self._pending = {}
        self._user_id = self._stored_user = None
        self._created_at = self._expires_at = self._origin_expires_at = None

    # -- the mapping ----------------------------------------------------------------

    def _remember(self, key: str) -> None:
        """Keep how *key* looks in the store before this request changes it."""
        if self._pending and key in self._pending:
            self._open(key)  # how it is stored decides whether a new value changes it
        if key not in self._baseline and self._state is _LIVE:
            data = self._data
            if key not in data:
                self._baseline[key] = None
                return
            try:
                self._baseline[key] = _snapshot(key, data[key])
            except TypeError:
                self._baseline[key] = _UNLIKE  # read back but not writable: whatever is set is a change

    def __getitem__(self, key: str) -> Any:
        self._load()
        data = self._data
        if self._pending and key not in data and key in self._pending:
            self._open(key)
        value = data[key]
        if type(value) in _MUTABLE:
            # It may be changed in place: remember how it looked.
            self._remember(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        _json.check_key(key)
        _json.check_json(key, value)
        self._load()
        self._remember(key)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._load()
        self._remember(key)
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        self._load()
        if self._pending and key in self._pending:
            self._open(key)
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        self._load()
        self._open_all()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._load()
        self._open_all()
        return len(self._data)

    def clear(self) -> None:
        """Remove every key (the session itself lives on; see :meth:`destroy`)."""
        self._load()
        self._open_all()
        for key in self._data:
            self._remember(key)
        self._data.clear()

    # -- state ------------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The session ID, or ``None`` until a new session is first saved.

        This is the bearer credential in the cookie: never log it.
        """
        self._load()
        return self._sid

    @property
    def is_new(self) -> bool:
        """Whether this session did not exist before this request."""
        self._load()
        return self._origin_expires_at is None

    @property
    def created_at(self) -> float:
        """When the session was created (epoch seconds)."""
        self._load()
        if self._created_at is None:
            self._created_at = _clock.now()
        return self._created_at

    @property
    def expires_at(self) -> float | None:
        """When the stored session expires unless saved or touched (epoch seconds); ``None`` until saved."""
        self._load()
        return self._expires_at

    @property
    def modified(self) -> bool:
        """Whether saving now would change the stored session (in-place changes included)."""
        if self._state is _UNLOADED:
            return False
        try:
            return self._dirty()
        except TypeError:
            return True  # a value is not JSON any more: changed, and save() says why

    def _dirty(self) -> bool:
        if self._state is _NEW:
            return bool(self._data) or self._user_id is not None
        return self._dirty_live(self._changes())

    def _dirty_live(self, changes: tuple[dict[str, Any], frozenset[str]]) -> bool:
        return bool(changes[0] or changes[1]) or self._sid != self._stored or self._user_id != self._stored_user

    def _changes(self) -> tuple[dict[str, Any], frozenset[str]]:
        """The keys to set (with their values) and to delete, against the stored record.

        :raises TypeError: naming the key, for a value that is not JSON any more.
        """
        if self._sid != self._stored:
            self._open_all()  # a rename re-seals every value under the new ID's key
        data = self._data
        sets: dict[str, Any] = {}
        deletes = []
        for key, before in self._baseline.items():
            if key in data:
                value = data[key]
                if _snapshot(key, value) != before:
                    if type(value) in _MUTABLE:
                        # Checked when set, but it may have changed in place since.
                        _json.check_json(key, value)
                    sets[key] = value
            elif before is not None:
                deletes.append(key)
        return sets, frozenset(deletes)

    # -- lifecycle ----------------------------------------------------------------------

    def _expiry(self, now: float) -> float:
        settings = self._settings
        expires_at = now + settings.ttl
        if settings.absolute_timeout is not None:
            expires_at = min(expires_at, self.created_at + settings.absolute_timeout)
        return expires_at

    def save(self) -> None:
        """Write the session to the store now (a new session gets its ID here).

        Only the keys this request changed are written, merged into the record
        as it is now in the store; a pending :meth:`regenerate` renames the
        record in the same step. If another request destroyed the session
        meanwhile, nothing is written and the session is left empty and new:
        a logout is never undone.

        :raises TypeError: naming the key, if a value changed in place is not JSON any more.
        """
        self._load()
        self._write(self._changes() if self._state is _LIVE else None)

    def _write(self, changes: tuple[dict[str, Any], frozenset[str]] | None) -> None:
        """Save: create a NEW session, or apply *changes* (and a pending rename) to a LIVE one."""
        data = self._data
        now = _clock.now()
        expires_at = self._expiry(now)
        lifetime_changed = False  # a NEW session's cookie is sent anyway
        if self._state is _NEW:
            for key, value in data.items():
                if type(value) in _MUTABLE:
                    # Checked when set, but it may have changed in place since.
                    _json.check_json(key, value)
                    _snapshot(key, value)
            sid = new_id()
            key = store_key(sid)
            sets = self._settings.sealer.seal(sid, data, key) if self._settings.encrypt else dict(data)
            update = Update(set=sets, expires_at=expires_at, created_at=self.created_at, user_id=self._user_id)
            written = set(data)
        else:
            assert self._sid is not None and self._stored is not None and changes is not None
            sid = self._sid
            key = store_key(sid)
            sets, deletes = changes
            if self._settings.encrypt:
                # A new ID means a new key: a rename re-seals every value under it.
                sets = self._settings.sealer.seal(sid, data if sid != self._stored else sets, key)
            update = Update(
                set=sets,
                delete=deletes,
                expires_at=expires_at,
                user_id=self._user_id if self._user_id != self._stored_user else None,
                replaces=None if sid == self._stored else store_key(self._stored),
            )
            written = set(self._baseline)
            lifetime_changed = PERMANENT_KEY in sets or PERMANENT_KEY in deletes
        if not self._settings.store.save(key, update):
            security_log.warning(
                "save of session %s dropped: it was destroyed by another request",
                log_tag(self._stored or sid),
                extra={"security_event": "resurrection_attempt"},
            )
            self._become_new()
            return
        self._state = _LIVE
        self._sid = self._stored = sid
        self._stored_user = self._user_id
        self._expires_at = expires_at
        if lifetime_changed:
            self._resend = True
        # The store now holds what data holds. A list or dict the app still
        # holds may change in place before the request ends: remember how it
        # looks. Any other key is remembered when it is next set or deleted.
        self._baseline = {key: _snapshot(key, data[key]) for key in written if type(data.get(key)) in _MUTABLE}

    def regenerate(self) -> None:
        """Give the session a new ID, keeping its data and creation time; the old ID stops working.

        Call it when privileges change, at login above all, so an ID planted in
        the browser before login (session fixation) is worthless after it. The
        store renames the record when the session is saved (at the end of the
        request, or by :meth:`save`), in one atomic step: if another request
        destroyed the session meanwhile, nothing is written under the new ID.
        :attr:`created_at`, and so ``absolute_timeout``, carries over. A session
        with no record yet has no ID to replace: it gets one when saved.
        """
        self._load()
        if self._state is _LIVE:
            self._sid = new_id()

    def destroy(self) -> None:
        """Delete the session from the store now, clear its data and expire the cookie.

        The session object stays usable: anything written to it afterwards in
        this request starts a new session with a new ID (a flash message after
        logout, say).
        """
        self.accessed = True
        doomed = self._stored if self._state is _LIVE else self._sid
        if self._state is not _NEW and doomed is not None:
            self._settings.store.destroy(store_key(doomed))
        self._become_new()

    def reload(self) -> None:
        """Discard this request's unsaved changes (a pending :meth:`regenerate` too) and read the session again."""
        self.accessed = True
        if self._state is _UNLOADED:
            return  # nothing read, nothing changed: the next use reads it
        if self._state is _LIVE:
            self._read(self._stored)
        else:
            self._become_new()

    def touch(self) -> None:
        """Refresh the session's expiry now, without rewriting its data.

        Skipped when the expiry would move by less than 1 % of the session's
        lifetime (at most a minute): a ``rolling`` session is then written at
        most about once a minute, not on every request. A session waiting for
        the rename of :meth:`regenerate` gets its expiry when it is saved.
        """
        self._load()
        if self._state is not _LIVE or self._sid != self._stored:
            return
        assert self._stored is not None
        expires_at = self._expiry(_clock.now())
        if self._expires_at is not None and 0 <= expires_at - self._expires_at < expiry_slack(self._settings.ttl):
            # Refreshed moments ago: a write (on every request of a rolling
            # session) would move the expiry by less than the slack.
            return
        if self._settings.store.touch(store_key(self._stored), expires_at):
            self._expires_at = expires_at
        else:
            security_log.info(
                "touch of session %s found it gone",
                log_tag(self._stored),
                extra={"security_event": "resurrection_attempt"},
            )
            self._become_new()

    @property
    def permanent(self) -> bool | None:
        """This session's own choice of cookie lifetime, or ``None`` to follow the middleware's ``max_age``.

        ``False``: a browser-session cookie (no ``Max-Age``), gone when the
        browser closes; ``True``: a cookie with a ``Max-Age`` that lasts as
        long as the stored session. The choice is kept in the session's data
        (under :data:`PERMANENT_KEY`), so it holds on every later response
        that sets the cookie. The server-side lifetime does not change.
        """
        value = self.get(PERMANENT_KEY)
        return value if type(value) is bool else None

    @permanent.setter
    def permanent(self, value: bool | None) -> None:
        if value is None:
            self.pop(PERMANENT_KEY, None)
        else:
            self[PERMANENT_KEY] = bool(value)

    # -- users ---------------------------------------------------------------------------

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to by :meth:`login`, or ``None``."""
        self._load()
        return self._user_id

    def login(self, user_id: str | int) -> None:
        """Bind the session to *user_id*, with a new session ID and a new CSRF token.

        The ID changes (see :meth:`regenerate`) so that an ID planted before
        login is worthless; the store indexes the session under the user, for
        :meth:`other_sessions` and ``store.destroy_user()``.
        """
        if type(user_id) is int:
            user_id = str(user_id)
        if type(user_id) is not str or not user_id or not user_id.isprintable():
            raise TypeError("login() takes a non-empty str (or int) user ID of printable text")
        try:
            user_id.encode("utf-8")
        except UnicodeEncodeError:
            raise TypeError("login() takes a user ID of Unicode text (no lone surrogates)") from None
        self.regenerate()
        self._user_id = user_id
        self.new_csrf_token()
        if self._user_agent and not self._settings.encrypt:
            # (Sealed, the user's other sessions could not read it: none is kept.)
            self[USER_AGENT_KEY] = self._user_agent[:_MAX_USER_AGENT]

    def _user_index(self) -> UserIndex:
        store = self._settings.store
        if not isinstance(store, UserIndex):
            raise WSGISessionError(f"{type(store).__name__} keeps no index of users' sessions")
        return store

    def _others(self) -> list[tuple[str, Record]]:
        self._load()
        if self._user_id is None:
            return []
        mine = {store_key(sid) for sid in (self._sid, self._stored) if sid is not None}
        return [(key, record) for key, record in self._user_index().sessions_of(self._user_id) if key not in mine]

    def other_sessions(self) -> list[SessionInfo]:
        """The same user's other live sessions (other browsers and devices), oldest first.

        Empty when the session is not bound to a user. ``last_seen`` is when
        that session was last saved or touched.
        """
        ttl = self._settings.ttl
        infos = []
        for key, record in self._others():
            agent = record.data.get(USER_AGENT_KEY)
            infos.append(
                SessionInfo(
                    handle=_handle(key),
                    created_at=record.created_at,
                    last_seen=max(record.created_at, min(_clock.now(), record.expires_at - ttl)),
                    expires_at=record.expires_at,
                    user_agent=agent if type(agent) is str and not sealing.is_sealed(agent) else None,
                )
            )
        return infos

    def end_other_sessions(self) -> int:
        """End every other session of this user ("log out other devices"); return how many."""
        store = self._settings.store
        others = self._others()
        for key, _ in others:
            store.destroy(key)
        return len(others)

    def end_session(self, handle: str) -> bool:
        """End one of this user's other sessions, named by its :attr:`SessionInfo.handle`."""
        for key, _ in self._others():
            if hmac.compare_digest(_handle(key).encode(), str(handle).encode("utf-8", "surrogateescape")):
                self._settings.store.destroy(key)
                return True
        return False

    # -- helpers for web apps ---------------------------------------------------------------

    def flash(self, message: str, category: str = "info") -> None:
        """Queue a one-time message for the next page that calls :meth:`pop_flashes`."""
        if type(message) is not str or type(category) is not str:
            raise TypeError("flash() takes a str message and a str category")
        queued = self.get(FLASH_KEY)
        queued = list(queued) if type(queued) is list else []
        queued.append([category, message])
        self[FLASH_KEY] = queued

    def peek_flashes(self) -> list[tuple[str, str]]:
        """The queued messages as ``(category, message)`` pairs, left in place.

        A framework integration may queue messages that are not text (Pyramid's
        ``flash()`` takes JSON data and ``Markup``); they come back as text
        here: a ``Markup`` as its HTML source in a plain ``str`` (so a template
        escapes it), anything else as its JSON text.
        """
        queued = self.get(FLASH_KEY)
        if type(queued) is not list:
            return []

        def text(message: object) -> str:
            if type(message) is str:
                return message
            from ._tagged import untag

            try:
                value = untag(message)
            except ValueError:
                value = message
            if isinstance(value, str):
                return str.__str__(value)  # a plain str, never Markup
            try:
                return _json.encode(value)
            except (TypeError, ValueError):
                return str(value)

        return [(str(c), text(m)) for c, m in (item for item in queued if type(item) is list and len(item) == 2)]

    def pop_flashes(self) -> list[tuple[str, str]]:
        """The queued messages as ``(category, message)`` pairs, removed from the session."""
        if FLASH_KEY not in self:
            return []
        messages = self.peek_flashes()
        del self[FLASH_KEY]
        return messages

    @property
    def csrf_token(self) -> str:
        """This session's CSRF token, made on first use (256 bits from :mod:`secrets`)."""
        token = self.get(CSRF_KEY)
        if type(token) is not str or not token:
            token = secrets.token_urlsafe(32)
            self[CSRF_KEY] = token
        return token

    def new_csrf_token(self) -> str:
        """Replace the CSRF token with a fresh one and return it."""
        token = secrets.token_urlsafe(32)
        self[CSRF_KEY] = token
        return token

    def check_csrf(self, token: object) -> bool:
        """Whether *token* is this session's CSRF token (constant-time; ``False`` if either is missing)."""
        expected = self.get(CSRF_KEY)
        if type(expected) is not str or not expected or type(token) is not str or not token:
            return False
        return hmac.compare_digest(expected.encode("utf-8"), token.encode("utf-8", "surrogateescape"))

    # -- end of request ------------------------------------------------------------------------

    def commit(self) -> CookieAction:
        """Persist what the request did and say what the response must do with the cookie.

        The middleware calls this once, before the response headers go out. It
        saves a modified session (or a new one, with ``save_uninitialized``),
        refreshes a ``rolling`` one, and reads the store only if one of those
        needs it.
        """
        settings = self._settings
        if self._state is _UNLOADED:
            if not (settings.rolling or settings.save_uninitialized):
                return _NO_ACTION
            accessed = self.accessed
            self._load()
            self.accessed = accessed
        if self._state is _LIVE:
            changes = self._changes()
            if self._dirty_live(changes):
                self._write(changes)
            elif settings.rolling:
                # Refreshing the expiry is not a use of the session: the
                # response varies on Cookie only if it sets one.
                accessed = self.accessed
                self.touch()
                self.accessed = accessed
        elif self._data or self._user_id is not None or settings.save_uninitialized:
            self._write(None)
        return self.cookie_action()

    def cookie_action(self) -> CookieAction:
        """What the browser's cookie needs now: a new ID or expiry to send, a dead ID to expire, or nothing."""
        if self._state is _LIVE:
            if self._sid != self._incoming or self._expires_at != self._origin_expires_at or self._resend:
                return _SET
            return _NO_ACTION
        if self._state is _NEW and self._incoming is not None:
            return _DELETE
        return _NO_ACTION


# A list or dict is compared by its JSON text with sorted object keys, so
# {"a": 1, "b": 2} and {"b": 2, "a": 1} are equal but [1] and [True] are not.
_fingerprint = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True).encode
#: A snapshot equal to no other: a stored value that cannot be written back.
_UNLIKE = object()


def _snapshot(key: str, value: Any) -> object:
    """What *value* is compared by to tell a change, as JSON sees it: 1, 1.0 and True all differ.

    :raises TypeError: naming *key*, if *value* is not JSON data.
    """
    cls = type(value)
    if cls is float:
        return (cls, value.hex())  # -0.0 is not 0.0 either
    if cls not in _MUTABLE:
        return (cls, value)  # str, int, bool, None: checked when set, and immutable
    try:
        return _fingerprint(value)
    except (TypeError, ValueError, RecursionError) as exc:
        _json.check_json(key, value)  # names the problem, where it can
        raise TypeError(f"session[{key!r}] is not JSON data: {type(exc).__name__}") from None
