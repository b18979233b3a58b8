"""Session: the mapping an application reads and writes, and what changed in it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from . import _clock, _json
from .errors import WSGISessionError
from .ids import log_tag, new_id, store_key
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

#: User agents longer than this are cut when kept in a session.
_MAX_USER_AGENT = 256


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session needs to know about its middleware's configuration."""

    store: Store
    ttl: float = DEFAULT_TTL
    absolute_timeout: float | None = None


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


class Session(MutableMapping[str, Any]):
    """One browser's session: a mapping of JSON data with a lifecycle.

    The store is not read until the data is first used. Values must be JSON
    data (``str``, ``int``, ``float``, ``bool``, ``None``, ``list``, ``dict``
    with ``str`` keys); anything else raises :class:`TypeError` naming the key.
    Changes are tracked per key, including changes made inside a list or dict
    that was read (``session["cart"].append(item)``), and only the keys that
    changed are written, so concurrent requests that change different keys
    never undo each other.
    """

    __slots__ = (
        "_bind_user",
        "_cleared",
        "_created_at",
        "_data",
        "_dead_ids",
        "_deleted",
        "_exists",
        "_expires_at",
        "_force_save",
        "_is_new",
        "_loaded",
        "_resign",
        "_set",
        "_settings",
        "_sid",
        "_snapshots",
        "_stale_cookie",
        "_touched",
        "_user_agent",
        "_user_id",
        "accessed",
    )

    def __init__(
        self,
        settings: SessionSettings,
        session_id: str | None = None,
        *,
        resign: bool = False,
        user_agent: str | None = None,
    ) -> None:
        """Make a session; *session_id* is the verified ID from the cookie, if any."""
        self._settings = settings
        self._sid = session_id
        self._loaded = False
        self._exists = False
        self._is_new = True
        self._data: dict[str, Any] = {}
        self._set: set[str] = set()
        self._deleted: set[str] = set()
        self._snapshots: dict[str, str] = {}
        self._created_at: float | None = None
        self._expires_at: float | None = None
        self._dead_ids: list[str] = []
        self._force_save = False
        self._touched = False
        self._cleared = False
        self._resign = resign
        self._stale_cookie = False
        self._user_agent = user_agent
        self._user_id: str | None = None
        self._bind_user = False
        #: Whether the application used the session in this request (``Vary: Cookie``).
        self.accessed = False

    def __repr__(self) -> str:
        state = "not loaded" if not self._loaded else ("new" if self._sid is None else "live")
        return f"<Session {state}, {len(self._data)} key(s)>"

    # -- loading ------------------------------------------------------------------

    def _load(self) -> None:
        self.accessed = True
        if self._loaded:
            return
        self._loaded = True
        self._data = {}
        self._exists = False
        self._is_new = True
        if self._sid is None:
            return
        settings = self._settings
        record = settings.store.load(store_key(self._sid))
        timeout = settings.absolute_timeout
        if record is not None and timeout is not None and record.created_at + timeout <= _clock.now():
            security_log.info(
                "session %s replayed after its absolute timeout",
                log_tag(self._sid),
                extra={"security_event": "expired_replay"},
            )
            settings.store.destroy(store_key(self._sid))
            record = None
        if record is None:
            # An ID we do not have is never adopted: the session starts afresh
            # and gets a new ID if it is saved.
            security_log.info(
                "session %s is unknown or expired", log_tag(self._sid), extra={"security_event": "expired_replay"}
            )
            self._sid = None
            self._stale_cookie = True
            self._resign = False
            return
        self._data = record.data
        self._user_id = record.user_id
        self._created_at = record.created_at
        self._expires_at = record.expires_at
        self._exists = True
        self._is_new = False

    # -- the mapping ----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._load()
        value = self._data[key]
        if type(value) in _MUTABLE and key not in self._snapshots and key not in self._set:
            # Remember how it looked, to notice changes made in place.
            self._snapshots[key] = _json.encode(value)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        _json.check_key(key)
        _json.check_json(key, value)
        self._load()
        self._data[key] = value
        self._set.add(key)
        self._deleted.discard(key)
        self._snapshots.pop(key, None)

    def __delitem__(self, key: str) -> None:
        self._load()
        del self._data[key]
        self._deleted.add(key)
        self._set.discard(key)
        self._snapshots.pop(key, None)

    def __contains__(self, key: object) -> bool:
        self._load()
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._load()
        return len(self._data)

    def clear(self) -> None:
        """Remove every key (the session itself lives on; see :meth:`destroy`)."""
        self._load()
        self._deleted.update(self._data)
        self._set.clear()
        self._snapshots.clear()
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
        return self._is_new

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
        """Whether this request changed the data (in place changes included)."""
        if not self._loaded:
            return False
        return bool(self._set or self._deleted or self._changed_in_place())

    def _changed_in_place(self) -> list[str]:
        data = self._data
        changed = []
        for key, before in self._snapshots.items():
            if key not in data:
                continue
            try:
                now = _json.encode(data[key])
            except (TypeError, ValueError):
                now = None  # not JSON any more: changed, and save() says why
            if now != before:
                changed.append(key)
        return changed

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
        as it is now in the store. If another request destroyed the session
        meanwhile, nothing is written and the session is left empty and new:
        a logout is never undone.
        """
        self._load()
        data = self._data
        values: dict[str, Any] = {}
        for key in (*self._set, *self._changed_in_place()):
            if key in data:
                value = data[key]
                if type(value) in _MUTABLE:
                    # Checked when set, but it may have changed in place since.
                    _json.check_json(key, value)
                values[key] = value
        now = _clock.now()
        if self._sid is None:
            self._sid = new_id()
            self._exists = False
        created_at = None if self._exists else self.created_at
        if not self._exists:
            # A new record: the whole data, not only what changed. The rest came
            # from the store as JSON and is unchanged, or it would be in values.
            values = dict(data)
        expires_at = self._expiry(now)
        update = Update(
            set=values,
            delete=frozenset(self._deleted),
            expires_at=expires_at,
            created_at=created_at,
            user_id=self._user_id if self._bind_user or created_at is not None else None,
        )
        store = self._settings.store
        if not store.save(store_key(self._sid), update):
            security_log.warning(
                "save of session %s dropped: it was destroyed by another request",
                log_tag(self._sid),
                extra={"security_event": "resurrection_attempt"},
            )
            self._reset(stale_cookie=False)
            return
        self._exists = True
        self._expires_at = expires_at
        self._set.clear()
        self._deleted.clear()
        self._snapshots.clear()
        self._force_save = False
        self._cleared = False
        self._bind_user = False
        for dead in self._dead_ids:
            store.destroy(store_key(dead))
        self._dead_ids.clear()

    def regenerate(self) -> None:
        """Give the session a new ID, keeping its data; the old ID stops working.

        Call it when privileges change, at login above all, so an ID planted in
        the browser before login (session fixation) is worthless after it. The
        new record is written and the old one deleted when the session is saved
        (at the end of the request, or by :meth:`save`); :attr:`id` is the new
        ID from now on.
        """
        self._load()
        if self._sid is not None and self._exists:
            self._dead_ids.append(self._sid)
        self._sid = new_id()
        self._exists = False
        self._created_at = _clock.now()
        self._expires_at = None
        self._force_save = True
        self._resign = False

    def destroy(self) -> None:
        """Delete the session from the store now, clear its data and expire the cookie.

        The session object stays usable: anything written to it afterwards in
        this request starts a new session with a new ID (a flash message after
        logout, say).
        """
        self.accessed = True
        store = self._settings.store
        for dead in (*self._dead_ids, *([self._sid] if self._sid is not None else [])):
            store.destroy(store_key(dead))
        self._reset(stale_cookie=False)
        self._cleared = True

    def _reset(self, *, stale_cookie: bool) -> None:
        self._loaded = True
        self._sid = None
        self._exists = False
        self._is_new = True
        self._data = {}
        self._set.clear()
        self._deleted.clear()
        self._snapshots.clear()
        self._dead_ids.clear()
        self._created_at = None
        self._expires_at = None
        self._force_save = False
        self._touched = False
        self._resign = False
        self._stale_cookie = stale_cookie
        self._user_id = None
        self._bind_user = False

    def reload(self) -> None:
        """Discard this request's unsaved changes and read the session again from the store."""
        self._loaded = False
        self._set.clear()
        self._deleted.clear()
        self._snapshots.clear()
        self._load()

    def touch(self) -> None:
        """Refresh the session's expiry now, without rewriting its data.

        Skipped when the expiry would move by less than 1 % of the session's
        lifetime (at most a minute): a ``rolling`` session is then written at
        most about once a minute, not on every request.
        """
        self._load()
        if self._sid is None or not self._exists:
            return
        expires_at = self._expiry(_clock.now())
        if self._expires_at is not None and 0 <= expires_at - self._expires_at < expiry_slack(self._settings.ttl):
            # Refreshed moments ago: a write (on every request of a rolling
            # session) would move the expiry by less than the slack.
            return
        if self._settings.store.touch(store_key(self._sid), expires_at):
            self._expires_at = expires_at
            self._touched = True
        else:
            security_log.info(
                "touch of session %s found it gone",
                log_tag(self._sid),
                extra={"security_event": "resurrection_attempt"},
            )
            self._reset(stale_cookie=True)

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
        self._bind_user = True
        self.new_csrf_token()
        if self._user_agent:
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
        mine = store_key(self._sid) if self._sid is not None else None
        return [(key, record) for key, record in self._user_index().sessions_of(self._user_id) if key != mine]

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
                    user_agent=agent if type(agent) is str else None,
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
        """The queued messages as ``(category, message)`` pairs, left in place."""
        queued = self.get(FLASH_KEY)
        if type(queued) is not list:
            return []
        return [(str(c), str(m)) for c, m in (item for item in queued if type(item) is list and len(item) == 2)]

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

    # -- end of request (called by the middleware) ------------------------------------------

    def _commit(self, *, rolling: bool, save_uninitialized: bool) -> str | None:
        """Persist what the request did; return ``"set"``, ``"delete"`` or ``None`` for the cookie."""
        if not self._loaded:
            if not (self._sid is not None and (rolling or self._resign)) and not save_uninitialized:
                return None
            accessed = self.accessed
            self._load()
            self.accessed = accessed
        if self.modified or self._force_save or (save_uninitialized and not self._exists):
            self.save()
            return "set" if self._exists else None
        if self._exists and (rolling or self._touched):
            if not self._touched:
                self.touch()
            if not self._exists:
                return "delete"
            return "set" if self._touched else None
        if self._exists and self._resign:
            return "set"
        if self._cleared or self._stale_cookie:
            return "delete"
        return None
