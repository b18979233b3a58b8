"""RedisStore: sessions in Redis hashes with native expiry, merged by Lua scripts."""

from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any, Union
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.exceptions as rex
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .. import _clock, _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import Record, Update, log, security_log, user_bytes, valid_key


def _import_hiredis() -> Any:
    try:
        import hiredis
    except ImportError:  # redis-py works without it; so does the direct path, through the connection
        return None
    return hiredis


_hiredis = _import_hiredis()

# The clients a store accepts. redis-py 5+ types them as plain classes, the
# older types-redis stubs as generic ones: the ignore serves either.
RedisClient = Union["redis.Redis[Any]", "RedisCluster[Any]"]  # type: ignore[type-arg, unused-ignore]

_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_SCHEMES = ("redis", "rediss", "unix")
# Field names inside a session's hash. Data fields carry this prefix so that no
# session key can ever collide with the metadata fields.
_DATA = b"d:"
_CREATED = b"m:created"
_EXPIRES = b"m:expires"
_USER = b"m:user"
_USER_EXPIRES = b"m:uexp"
# Set on a record a rename is moving away (its value: the new key); see _MOVE_OUT.
_MOVED = b"m:moved"
# A user's set of session keys lives at <prefix>u:<sha256 of the user ID>: the
# ID is arbitrary text, its digest is safe in a key name (and in a SCAN
# pattern), and "u:" keeps the name from ever looking like a session's key.
_USER_SET = b"u:"
_DATA_LEN = len(_DATA)
# What sessions_of() reads for a hash a decode_responses=True client cannot decode.
_UNDECODABLE: Any = object()
# A connection that sat idle this long is PINGed before use, so one silently
# dropped by a firewall or a failover is replaced instead of failing a request.
_HEALTH_CHECK_INTERVAL = 30
_PRUNE_SCAN_COUNT = 1000
# redis-py 4.4+ raises OutOfMemoryError for "OOM ..." replies; older ones a plain ResponseError.
_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(rex, "OutOfMemoryError", None),) if isinstance(cls, type)
)
# What a command can raise that _failure() turns into a StoreError.
_FAILURES = (rex.RedisError, rex.ChildDeadlockedError)
# The connection classes the direct path knows (TCP, TLS, Unix socket): what
# from_url makes. A pool of any other class keeps the client's own path.
_DIRECT_CLASSES = (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection)
# What a hiredis.Reader returns while a reply is incomplete (its default, False,
# is also a RESP3 boolean), and the type of a RESP3 push message.
_MORE: Any = object()
_PUSH: Any = getattr(_hiredis, "PushNotification", _MORE)
_READ_SIZE = 65536
# How long a record stays in Redis once a rename has marked it moved: time
# enough to finish the rename, and a rename that dies halfway (its process
# killed) leaves nothing behind for longer than this.
_MOVE_GRACE_MS = 60_000

# Every script touches exactly one key, KEYS[1], so it runs on Redis Cluster
# (all keys of a script must live in one slot) without any hash tag. The user
# index spans two keys (a session's hash and its user's set), so it is kept by
# follow-up commands, ordered so that a live bound session is never missing
# from its user's set: at worst the set briefly holds a stale member, which
# sessions_of(), destroy_user() and prune() remove.
#
# A record is live when its m:expires is later than the caller's clock (ARGV[1]).
# Redis's own TTL removes it eventually; comparing m:expires as well makes the
# record dead at the same instant for every store and for a test's patched clock.
#
# m:user holds the bound user (UTF-8); m:uexp the expiry (same clock) up to
# which the user's set is known to live. A save or touch that moves the record's
# expiry past m:uexp returns the user, and the caller extends the set's TTL.
#
# A record marked moved (m:moved, see _MOVE_OUT) is gone to a save and a touch.
#
# ARGV: now, expires_at, created_at ('' for an update), ttl_ms, bind ('1' or '0'),
#       user, user set expiry to record, n_delete, n_delete field names, then
#       name/value pairs to set.
# Returns 0 when nothing was written, else {1, user to unindex, user to index}
# (false for none): the user the record is no longer bound to (or no longer
# live for), and the user whose set must hold the record and outlive it.
_SAVE = """
local key = KEYS[1]
if redis.call('HEXISTS', key, 'm:moved') == 1 then
  return 0
end
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
local live = stored ~= nil and stored > tonumber(ARGV[1])
local old = redis.call('HGET', key, 'm:user')
local ndel = tonumber(ARGV[8])
if live then
  for i = 9, 8 + ndel do
    redis.call('HDEL', key, ARGV[i])
  end
else
  if ARGV[3] == '' then
    return 0
  end
  -- Expired leftovers (or a hash without metadata) are replaced wholesale.
  redis.call('DEL', key)
  redis.call('HSET', key, 'm:created', ARGV[3])
end
for i = 9 + ndel, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', key, 'm:expires', ARGV[2])
local user = false
if ARGV[5] == '1' then
  user = ARGV[6]
  redis.call('HSET', key, 'm:user', user)
  if user ~= old then
    redis.call('HDEL', key, 'm:uexp')
  end
elseif live then
  user = old
end
local ttl = tonumber(ARGV[4])
if ttl <= 0 then
  redis.call('DEL', key)
  return {1, old, false}
end
redis.call('PEXPIRE', key, ttl)
local unindex = false
if old and old ~= user then
  unindex = old
end
local index = false
if user then
  local uexp = tonumber(redis.call('HGET', key, 'm:uexp'))
  if uexp == nil or uexp < tonumber(ARGV[2]) then
    redis.call('HSET', key, 'm:uexp', ARGV[7])
    index = user
  end
end
return {1, unindex, index}
"""

# ARGV: now, expires_at, ttl_ms, user set expiry to record. Data fields are
# left alone. Returns 0 or {1, user whose set must be extended, or false}.
_TOUCH = """
local key = KEYS[1]
if redis.call('HEXISTS', key, 'm:moved') == 1 then
  return 0
end
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
if stored == nil or stored <= tonumber(ARGV[1]) then
  return 0
end
local ttl = tonumber(ARGV[3])
if ttl <= 0 then
  redis.call('DEL', key)
  return {1, false}
end
redis.call('HSET', key, 'm:expires', ARGV[2])
redis.call('PEXPIRE', key, ttl)
local user = redis.call('HGET', key, 'm:user')
if user then
  local uexp = tonumber(redis.call('HGET', key, 'm:uexp'))
  if uexp == nil or uexp < tonumber(ARGV[2]) then
    redis.call('HSET', key, 'm:uexp', ARGV[4])
    return {1, user}
  end
end
return {1, false}
"""

# Deletes the record; returns the user it was bound to, or false.
_DESTROY = """
local user = redis.call('HGET', KEYS[1], 'm:user')
redis.call('DEL', KEYS[1])
return user
"""

# ARGV: user, now. Deletes the record only if it is bound to that user:
# returns 2 if it was live, 1 if it was already expired (or a tombstone), 0 if
# left alone; {2 or 1, new key} for a record a rename moved (see _MOVE_OUT).
_DESTROY_BOUND = """
local key = KEYS[1]
if redis.call('HGET', key, 'm:user') ~= ARGV[1] then
  return 0
end
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
local moved = redis.call('HGET', key, 'm:moved')
redis.call('DEL', key)
local state = 1
if stored ~= nil and stored > tonumber(ARGV[2]) then
  state = 2
end
if moved then
  return {state, moved}
end
return state
"""

# A rename (Update.replaces) spans two session keys, which need not share a
# slot, so it is three scripts of one key each, tied together by the new key
# as a token (OLD and NEW the two hashes):
#
#  1. _MOVE_OUT on OLD: if it is live, set m:moved = NEW (and cut its TTL to
#     _MOVE_GRACE_MS) and return its fields. From then on OLD is absent to a
#     load, a count and sessions_of(), and a save or touch of it is refused:
#     a write either landed before, and is carried over, or returns False.
#  2. save() creates NEW from those fields with the update applied, the old
#     m:created and binding, indexed first as every save is.
#  3. _MOVE_DONE on OLD: if it still says m:moved = NEW, strip it to a
#     tombstone of m:moved and m:user (gone after the grace TTL) and return
#     the user, to unindex OLD. If not, OLD was deleted after step 1: NEW is
#     destroyed again and the rename returns False.
#
# So the rename takes effect at step 3, and whatever deletes OLD before that
# wins: destroy(OLD) deletes the marked hash; destroy_user() finds OLD in its
# user's set (OLD leaves it only after step 3) and deletes it like any record
# bound to that user; prune() skips marked records, and any deletion of OLD
# counts as a destroy. Step 3 then finds no mark and destroys NEW, which only
# this call knows of yet.
#
# destroy_user() also follows m:moved from each record it deletes to the key
# it moved to, as PostgreSQL follows an updated row, and deletes that record
# too if it is bound to the same user. So one that read the user's set before
# NEW was indexed (or tried NEW before step 2 made it), and reaches OLD only
# after step 3, finds the tombstone and still ends NEW; one that ends NEW
# while OLD is still marked lets the rename return True for a session already
# gone, as if destroy_user() came just after it. Either way it counts the
# session once. (The tombstone lives _MOVE_GRACE_MS: far longer than any
# destroy_user() takes between reading the set and reaching OLD.) A
# destroy(OLD) after step 3 deletes only the tombstone, as if it came after.
#
# Two renames of one record: only one marks it; the other's step 1 returns 0.
# The token makes each step safe to retry on a fresh connection (redis-py's
# retry after a lost reply): step 1 returns the fields it marked, step 3
# finds its own tombstone and returns the same user.
#
# A rename that fails with an error (Redis out of memory in step 2, say)
# destroys NEW and then _MOVE_UNDO takes the mark off OLD, restoring its TTL
# from m:expires; a tombstone is never brought back. In that order, a rollback
# that itself fails leaves the session lost, never alive twice. A process
# killed halfway leaves OLD marked for at most _MOVE_GRACE_MS, and perhaps
# NEW, bound but known to no one, until it expires.
#
# ARGV: now, new key, grace ms. Returns 0, or the hash's fields and values.
_MOVE_OUT = """
local key = KEYS[1]
local moved = redis.call('HGET', key, 'm:moved')
if moved and moved ~= ARGV[2] then
  return 0
end
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
if stored == nil or stored <= tonumber(ARGV[1]) then
  return 0
end
if not moved then
  redis.call('HSET', key, 'm:moved', ARGV[2])
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or ttl > tonumber(ARGV[3]) then
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
return redis.call('HGETALL', key)
"""

# ARGV: new key, grace ms. HDEL field by field rather than DEL and HSET, so
# that a full Redis (which refuses writes that allocate) can still finish.
# Returns 0 if the record is not marked by this rename, else {1, its user or false}.
_MOVE_DONE = """
local key = KEYS[1]
if redis.call('HGET', key, 'm:moved') ~= ARGV[1] then
  return 0
end
local user = redis.call('HGET', key, 'm:user')
for _, name in ipairs(redis.call('HKEYS', key)) do
  if name ~= 'm:moved' and name ~= 'm:user' then
    redis.call('HDEL', key, name)
  end
end
redis.call('PEXPIRE', key, ARGV[2])
return {1, user}
"""

# ARGV: new key, now. Returns 1 if the mark was taken off, else 0.
_MOVE_UNDO = """
local key = KEYS[1]
if redis.call('HGET', key, 'm:moved') ~= ARGV[1] then
  return 0
end
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
if stored == nil then
  return 0
end
redis.call('HDEL', key, 'm:moved')
local ttl = math.ceil((stored - tonumber(ARGV[2])) * 1000)
if ttl > 0 then
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
return 1
"""

# KEYS[1] is a user's set. ARGV: member, ttl_ms. Adds the member and makes the
# set live at least ttl_ms (never shortens it: other sessions may need longer).
# A comparison rather than PEXPIRE ... GT, which needs Redis 7.
_INDEX_ADD = """
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
local current = redis.call('PTTL', KEYS[1])
if current < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""

# ARGV: now. Deletes the record only if it is still expired at this instant:
# a save or touch that landed after the scan read it keeps it alive.
_PRUNE = """
local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'hash' then
  return 0
end
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
if stored ~= nil and stored <= tonumber(ARGV[1]) then
  redis.call('DEL', key)
  return 1
end
return 0
"""


class RedisStore:
    """Sessions in Redis: one hash per session, expired by Redis itself.

    Each session is a hash at ``<prefix><key>``: one field per top-level
    session key (``d:<name>`` holding the value as JSON text) plus ``m:created``
    and ``m:expires``. Saves, touches and prunes run as Lua scripts on that one
    key, so they are atomic, two requests changing different keys both land, an
    update never recreates a destroyed session, and Redis Cluster works.

    A session bound to a user (:meth:`Session.login`) also has ``m:user``, and
    its key is a member of the user's set at ``<prefix>u:<sha256 of the user
    ID>``, which lives at least as long as the user's sessions: that set is how
    :meth:`sessions_of` and :meth:`destroy_user` find them without a SCAN.

    A rename (``Update.replaces``, for :meth:`Session.regenerate`) touches two
    keys that may live on different Cluster nodes, so it takes three scripts:
    the old hash is marked ``m:moved`` (and is absent from then on), the new
    one is written, and the old one is cut down to a tombstone that expires
    within a minute. A destroy or destroy_user that comes in between still
    wins (see the comment above ``_MOVE_OUT``).

    :param client_or_url: a ``redis://``, ``rediss://`` or ``unix://`` URL
        (default ``redis://127.0.0.1:6379/0``), or a redis-py client you made
        (``Redis``, ``RedisCluster``, or ``Sentinel.master_for(...)``). A client
        you pass is used as it is: its timeouts and retries are yours, and
        :meth:`close` leaves it open. ``decode_responses`` may be either.
    :param prefix: prepended to every Redis key; a ``prefix`` query parameter
        in the URL takes precedence.
    :param socket_timeout: seconds to wait for Redis to answer a command before
        :class:`~wsgisession.errors.StoreTimeoutError` (URL clients only; a
        ``socket_timeout`` in the URL takes precedence).
    :param connect_timeout: seconds to wait for a connection before
        :class:`~wsgisession.errors.StoreUnavailableError` (URL clients only).

    A client made from a URL retries a command once, on a fresh connection, when
    its connection turns out to be dead (Redis restarted): every operation here
    is idempotent, so a retry never applies a change twice. redis-py's
    connection pool notices a ``fork()`` and opens new connections in the child.

    With a plain ``Redis`` client on an ordinary ``ConnectionPool`` (what a URL
    makes), :meth:`load`, :meth:`save`, :meth:`touch` and :meth:`destroy` run
    on connections of the store's own, made with the pool's settings, which
    skips redis-py's per-command overhead (about half the time of a request
    on loopback). They follow the same retry policy, are replaced after any
    error and after a ``fork()``, and are closed by :meth:`close`.
    """

    def __init__(
        self,
        client_or_url: str | RedisClient | None = None,
        *,
        prefix: str = "wsgisession:",
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
    ) -> None:
        for name, value in (("socket_timeout", socket_timeout), ("connect_timeout", connect_timeout)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ConfigurationError(f"RedisStore: {name} must be a positive number of seconds or None")
        self._owns_client = not isinstance(client_or_url, (redis.Redis, RedisCluster))
        if isinstance(client_or_url, (redis.Redis, RedisCluster)):
            self._client: RedisClient = client_or_url
        elif client_or_url is None or isinstance(client_or_url, str):
            url, url_prefix = _split_url(client_or_url or _DEFAULT_URL)
            if url_prefix is not None:
                prefix = url_prefix
            self._client = _client_from_url(url, socket_timeout, connect_timeout)
        else:
            raise ConfigurationError(
                f"RedisStore needs a redis:// URL or a redis-py client, not {type(client_or_url).__name__}"
            )
        if not isinstance(prefix, str):
            raise ConfigurationError("RedisStore: prefix must be a str")
        self.prefix = prefix
        self._prefix_bytes = prefix.encode("utf-8")
        self._socket_timeout = socket_timeout if self._owns_client else None
        self._where = _describe(self._client)
        self._save_lua = _Lua(self._client, _SAVE)
        self._touch_lua = _Lua(self._client, _TOUCH)
        self._destroy_lua = _Lua(self._client, _DESTROY)
        self._index_add_lua = _Lua(self._client, _INDEX_ADD)
        self._prune_script = _Lua(self._client, _PRUNE).script
        self._destroy_bound_script = _Lua(self._client, _DESTROY_BOUND).script
        self._move_out_script = _Lua(self._client, _MOVE_OUT).script
        self._move_done_script = _Lua(self._client, _MOVE_DONE).script
        self._move_undo_script = _Lua(self._client, _MOVE_UNDO).script
        # load, save, touch and destroy skip the client's per-command machinery
        # when the client is a plain one (see _Direct); the rest, rarer and
        # often pipelined, go through the client.
        self._direct = _Direct.for_client(self._client)
        self._glob_prefix = _glob_escape(self._prefix_bytes)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> RedisStore:
        """Open a store from ``redis://[user:password@]host[:port][/db][?prefix=...]``.

        ``rediss://`` uses TLS and ``unix:///path/to/redis.sock?db=0`` a Unix
        socket. Other query parameters are redis-py's (``socket_timeout``,
        ``health_check_interval``, ...). Raises
        :class:`~wsgisession.errors.ConfigurationError` for a URL it cannot use.
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"a Redis URL must be a str, not {type(url).__name__}")
        return cls(url)

    def __repr__(self) -> str:
        return f"<RedisStore {self._where} prefix={self.prefix!r}>"

    # -- the Store protocol ---------------------------------------------------------

    def load(self, key: str) -> Record | None:
        if not valid_key(key):
            return None
        if self._closed:
            raise self._closed_error()
        name = self._prefix_bytes + key.encode("ascii")
        direct = self._direct
        try:
            if direct is not None:
                fields: Any = direct.call(b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n" % (len(name), name))
                if type(fields) is list:  # RESP2: a flat list of names and values
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
            else:
                fields = self._client.hgetall(name)
        except UnicodeDecodeError:
            # Only a client with decode_responses=True gets here: the hash
            # holds bytes that are not UTF-8, so it was not written by us.
            security_log.warning(
                "corrupt session record in RedisStore at %s treated as absent",
                self._where,
                extra={"security_event": "corrupt_record"},
            )
            return None
        except _FAILURES as exc:
            raise self._failure("load", key, exc) from exc
        return self._record(fields)

    def _record(self, fields: dict[Any, Any]) -> Record | None:
        """The live record a hash's fields hold; ``None`` if empty, expired or corrupt (logged)."""
        if not fields:
            return None
        try:
            return self._decode(fields)
        except (ValueError, TypeError, UnicodeDecodeError):
            security_log.warning(
                "corrupt session record in RedisStore at %s treated as absent",
                self._where,
                extra={"security_event": "corrupt_record"},
            )
            return None

    def _decode(self, fields: dict[Any, Any]) -> Record | None:
        # Names are bytes, unless a decode_responses=True client read them;
        # values are bytes or str: float() and _json.decode() take either.
        if type(next(iter(fields))) is not bytes:
            fields = {_as_bytes(k): v for k, v in fields.items()}
        if _MOVED in fields:
            return None  # being renamed, or a rename's tombstone: either way gone
        try:
            expires_at = float(fields[_EXPIRES])
            created_at = float(fields[_CREATED])
        except KeyError:
            raise ValueError("metadata missing") from None
        if not (math.isfinite(expires_at) and math.isfinite(created_at)):
            raise ValueError("metadata not finite")
        if expires_at <= _clock.now():
            return None
        data: dict[str, Any] = {}
        decode = _json.decode
        for name, value in fields.items():
            if name[:_DATA_LEN] == _DATA:
                data[name[_DATA_LEN:].decode("utf-8")] = decode(value)
        user = fields.get(_USER)
        user_id = None if user is None else _as_bytes(user).decode("utf-8")
        return Record(data, created_at, expires_at, user_id)

    def save(self, key: str, update: Update) -> bool:
        if not valid_key(key):
            raise ValueError("not a store key")
        if update.replaces is not None:
            return self._rename(key, update)
        user = None if update.user_id is None else user_bytes(update.user_id)
        now = float(_clock.now())
        expires_at = float(update.expires_at)
        ttl_ms = _ttl_ms(expires_at, now)
        deletes = [_DATA + name.encode("utf-8") for name in update.delete]
        # Every argument as bytes, formatted as redis-py would (repr of a float).
        args = [
            b"%r" % now,
            b"%r" % expires_at,
            b"" if update.created_at is None else b"%r" % float(update.created_at),
            b"%d" % ttl_ms,
            b"0" if user is None else b"1",
            b"" if user is None else user,
            b"%r" % _index_expiry(expires_at, now),
            b"%d" % len(deletes),
            *deletes,
        ]
        encode = _json.encode
        for name, value in update.set.items():
            args.append(_DATA + name.encode("utf-8"))
            args.append(encode(value).encode("utf-8"))
        if self._closed:
            raise self._closed_error()
        try:
            if user is not None and ttl_ms > 0:
                # Index first: a crash between the two leaves a stale member
                # (cleaned later), never a bound session its user cannot find.
                self._index_add(user, key, 2 * ttl_ms)
            result = self._eval(self._save_lua, self._prefix_bytes + key.encode("ascii"), args)
            if not isinstance(result, list):
                if user is not None and ttl_ms > 0:
                    self._unindex(user, [key])
                log.info("save dropped: the session was destroyed or expired meanwhile")
                return False
            _, unindex, index = result
            if unindex is not None:
                self._unindex(_as_bytes(unindex), [key])
            if index is not None:
                self._index_add(_as_bytes(index), key, 2 * ttl_ms)
            elif user is not None and ttl_ms <= 0:
                self._unindex(user, [key])  # written and at once deleted: expired on arrival
        except _FAILURES as exc:
            raise self._failure("save", key, exc) from exc
        return True

    def _rename(self, key: str, update: Update) -> bool:
        """Move the record at ``update.replaces`` to *key* (the protocol above _MOVE_OUT)."""
        old = update.replaces
        assert old is not None
        if old == key:
            return self.save(key, replace(update, replaces=None, created_at=None))
        if not valid_key(old):
            log.info("save dropped: the session it renames is not a store key")
            return False
        # A value or user ID that cannot be stored is refused before anything is marked.
        for value in update.set.values():
            _json.encode(value)
        if update.user_id is not None:
            user_bytes(update.user_id)
        token = key.encode("ascii")
        now = float(_clock.now())
        try:
            fields = self._on_old(self._move_out_script, old, [b"%r" % now, token, b"%d" % _MOVE_GRACE_MS])
        except UnicodeDecodeError:
            # A decode_responses=True client, and bytes that are not UTF-8: not
            # written by us. The record is marked all the same, and unmarked below.
            security_log.warning(
                "corrupt session record in RedisStore at %s treated as absent",
                self._where,
                extra={"security_event": "corrupt_record"},
            )
            fields = []
        if not isinstance(fields, list):
            log.info("save dropped: the session was destroyed or expired meanwhile")
            return False
        pairs = zip(fields[::2], fields[1::2], strict=True)
        record = self._record({name: value for name, value in pairs if _as_bytes(name) != _MOVED})
        if record is None:  # corrupt, or expired since the script ran
            self._undo_rename(key, old)
            log.info("save dropped: the session was destroyed or expired meanwhile")
            return False
        moved = Update(
            set=update.apply(record.data),
            expires_at=update.expires_at,
            created_at=record.created_at,
            user_id=record.user_id if update.user_id is None else update.user_id,
        )
        try:
            done = None
            if self.save(key, moved):  # False only if NEW is itself being renamed: never, it is new
                done = self._on_old(self._move_done_script, old, [token, b"%d" % _MOVE_GRACE_MS])
        except BaseException:
            with suppress(StoreError):
                self._undo_rename(key, old)
            raise
        if not isinstance(done, list):
            # OLD was deleted after step 1 (destroy, destroy_user): destroy
            # wins. An error here must reach the caller: NEW would outlive it.
            self._undo_rename(key, old)
            log.info("save dropped: the session was destroyed while it was renamed")
            return False
        if done[1] is not None:
            try:
                self._unindex(_as_bytes(done[1]), [old])
            except _FAILURES as exc:
                # The rename has landed; the stale member is cleaned up later.
                log.warning("RedisStore: a renamed session stays in its user's set for now: %s", _scrub(exc, old))
        return True

    def _undo_rename(self, key: str, old: str) -> None:
        """Destroy the rename's new record, then take the mark off the old one, if it is still there."""
        self.destroy(key)
        self._on_old(self._move_undo_script, old, [key.encode("ascii"), b"%r" % float(_clock.now())])

    def _on_old(self, script: Any, old: str, args: list[bytes]) -> Any:
        """Run one of the rename's scripts on the old record, through the client (renames are rare)."""
        if self._closed:
            raise self._closed_error()
        try:
            return script(keys=[self._redis_key(old)], args=args)
        except _FAILURES as exc:
            raise self._failure("save", old, exc) from exc

    def touch(self, key: str, expires_at: float) -> bool:
        if not valid_key(key):
            return False
        now = float(_clock.now())
        expires_at = float(expires_at)
        ttl_ms = _ttl_ms(expires_at, now)
        args = [b"%r" % now, b"%r" % expires_at, b"%d" % ttl_ms, b"%r" % _index_expiry(expires_at, now)]
        if self._closed:
            raise self._closed_error()
        try:
            result = self._eval(self._touch_lua, self._prefix_bytes + key.encode("ascii"), args)
            if not isinstance(result, list):
                return False
            if result[1] is not None:
                self._index_add(_as_bytes(result[1]), key, 2 * ttl_ms)
        except _FAILURES as exc:
            raise self._failure("touch", key, exc) from exc
        return True

    def destroy(self, key: str) -> None:
        if not valid_key(key):
            return
        if self._closed:
            raise self._closed_error()
        try:
            user = self._eval(self._destroy_lua, self._prefix_bytes + key.encode("ascii"), [])
            if user is not None:
                self._unindex(_as_bytes(user), [key])
        except _FAILURES as exc:
            raise self._failure("destroy", key, exc) from exc

    def prune(self) -> int:
        """Delete records whose ``m:expires`` has passed; return how many.

        Redis expires sessions by itself, so this usually returns 0: it only
        finds records whose TTL outlives their recorded expiry (a clock moved
        forward, a TTL changed by hand). It also removes the user index's
        entries for sessions that are gone, expired or bound to someone else
        (uncounted). It SCANs every key under the prefix, which is
        O(number of keys), so run it rarely, if at all.
        """
        now = repr(float(_clock.now()))
        removed = 0
        with self._errors("prune", None):
            keys: list[bytes] = []
            user_sets: list[bytes] = []
            for name in self._scan(self._glob_prefix + b"*"):
                # Other keys may share the prefix: only touch ones shaped like ours.
                if self._is_session_key(name):
                    keys.append(name)
                elif self._is_user_set(name):
                    user_sets.append(name)
                if len(keys) >= _PRUNE_SCAN_COUNT:
                    removed += self._prune_batch(keys, now)
                    keys = []
                if len(user_sets) >= _PRUNE_SCAN_COUNT:
                    self._prune_user_sets(user_sets)
                    user_sets = []
            removed += self._prune_batch(keys, now)
            self._prune_user_sets(user_sets)
        return removed

    def _prune_batch(self, keys: list[bytes], now: str) -> int:
        if not keys:
            return 0
        # One round trip reads every expiry; the script, which re-checks
        # atomically, runs only for the few that look expired.
        removed = 0
        cutoff = float(now)
        for k, stored in zip(keys, self._expiries(keys), strict=True):
            try:
                expired = stored is not None and float(stored) <= cutoff
            except (TypeError, ValueError):
                expired = False  # not our hash, or no usable expiry: leave it to its TTL
            if expired:
                removed += int(self._prune_script(keys=[k], args=[now]))
        return removed

    def _prune_user_sets(self, user_sets: list[bytes]) -> None:
        if not user_sets:
            return
        pipe = self._client.pipeline(transaction=False)
        for name in user_sets:
            pipe.smembers(name)
        for name, members in zip(user_sets, pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(members, (set, list)):
                continue  # not a set: a key of someone else's that merely looks like ours
            digest = name[len(self._prefix_bytes) + len(_USER_SET) :].decode("ascii")
            keys = sorted(_member_keys(members))
            states = self._bindings(keys)
            stale = [k for k, state in zip(keys, states, strict=True) if state is None or state[0] != digest]
            strays = [m for m in members if not valid_key(_as_bytes(m).decode("ascii", "replace"))]
            if strays:
                self._client.srem(name, *strays)
            self._unindex_digest(digest, stale)

    # -- the user index ---------------------------------------------------------------

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first.

        Reads the user's set and each member's hash: one SMEMBERS and one
        pipelined round trip, whatever the size of the store. Members whose
        session is gone, expired or bound to someone else are removed.
        """
        user = user_bytes(user_id)
        found: list[tuple[str, Record]] = []
        with self._errors("sessions_of", None):
            keys = sorted(_member_keys(self._client.smembers(self._user_set(user))))
            if not keys:
                return []
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self._redis_key(key))
            try:
                replies = pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:
                # decode_responses=True and some hash holds non-UTF-8 bytes:
                # read one by one so that only that record counts as corrupt.
                replies = [self._hgetall_or_corrupt(key) for key in keys]
            stale = []
            now = _clock.now()
            for key, fields in zip(keys, replies, strict=True):
                if isinstance(fields, Exception) and not isinstance(fields, UnicodeDecodeError):
                    raise fields
                if fields is _UNDECODABLE or isinstance(fields, UnicodeDecodeError):
                    continue  # not listed, but left indexed for destroy_user
                raw = {_as_bytes(k): v for k, v in fields.items()}
                bound = raw.get(_USER)
                if bound is None or _as_bytes(bound) != user or not _is_live(raw.get(_EXPIRES), now):
                    stale.append(key)
                    continue
                record = self._record(fields)
                if record is not None:  # a corrupt record stays indexed, for destroy_user
                    found.append((key, record))
            if stale:
                self._unindex(user, stale)
        found.sort(key=lambda item: item[1].created_at)
        return found

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many live ones there were.

        Each member of the user's set is deleted by a script that first checks
        the record is still bound to this user, so a stale member never ends
        someone else's session. A record a rename moved leads on to its new
        key, which is deleted the same way (see the comment above _MOVE_OUT).
        """
        user = user_bytes(user_id)
        now = repr(float(_clock.now()))
        with self._errors("destroy_user", None):
            keys = sorted(_member_keys(self._client.smembers(self._user_set(user))))
            ended: set[str] = set()  # deleted while live
            moving: list[str] = []  # where the live records a rename was moving were going
            followed: set[str] = set()
            for key in keys:  # grows as renames are followed
                result = self._destroy_bound_script(keys=[self._redis_key(key)], args=[user, now])
                if isinstance(result, list):
                    target = _as_bytes(result[1]).decode("ascii", "replace")
                    if int(result[0]) == 2:
                        moving.append(target)
                    # Even a key already tried: it may have been created since.
                    if valid_key(target) and target not in ended and target not in followed:
                        followed.add(target)
                        keys.append(target)
                elif int(result) == 2:
                    ended.add(key)
            if keys:
                self._unindex(user, sorted(set(keys)))
        # A session caught halfway through a rename counts once, under either key.
        return len(ended) + sum(1 for target in moving if target not in ended)

    def count(self) -> int:
        """How many live records the store holds (a SCAN of every key under the prefix)."""
        now = _clock.now()
        total = 0
        with self._errors("count", None):
            batch: list[bytes] = []
            for name in self._scan(self._glob_prefix + b"*"):
                if self._is_session_key(name):
                    batch.append(name)
                if len(batch) >= _PRUNE_SCAN_COUNT:
                    total += self._count_live(batch, now)
                    batch = []
            total += self._count_live(batch, now)
        return total

    def _count_live(self, keys: list[bytes], now: float) -> int:
        if not keys:
            return 0
        return sum(1 for stored in self._expiries(keys) if _is_live(stored, now))

    def _expiries(self, keys: list[bytes]) -> list[Any]:
        """Each key's stored m:expires (None if none or moved by a rename, or the error), in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, [_EXPIRES, _MOVED])
        expiries = []
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, list):
                reply = reply[0] if reply[1] is None else None
            expiries.append(reply)
        return expiries

    def index_size(self) -> int:
        """How many entries the user index holds, stale ones included (for tests and diagnostics)."""
        total = 0
        with self._errors("index_size", None):
            names = [n for n in self._scan(self._glob_prefix + _USER_SET + b"*") if self._is_user_set(n)]
            for start in range(0, len(names), _PRUNE_SCAN_COUNT):
                pipe = self._client.pipeline(transaction=False)
                for name in names[start : start + _PRUNE_SCAN_COUNT]:
                    pipe.scard(name)
                total += sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))
        return total

    def close(self) -> None:
        """Release this store's connections; a client you passed in stays open."""
        if self._closed:
            return
        self._closed = True
        if self._direct is not None:
            self._direct.close()
        if self._owns_client:
            self._client.close()

    # -- helpers --------------------------------------------------------------------

    def _redis_key(self, key: str) -> bytes:
        return self._prefix_bytes + key.encode("ascii")

    def _user_set(self, user: bytes) -> bytes:
        return self._prefix_bytes + _USER_SET + _digest(user).encode("ascii")

    def _is_session_key(self, name: bytes) -> bool:
        return valid_key(name[len(self._prefix_bytes) :].decode("ascii", "replace"))

    def _is_user_set(self, name: bytes) -> bool:
        rest = name[len(self._prefix_bytes) :]
        return rest.startswith(_USER_SET) and valid_key(rest[len(_USER_SET) :].decode("ascii", "replace"))

    def _scan(self, pattern: bytes) -> Iterator[bytes]:
        for found in self._client.scan_iter(match=pattern, count=_PRUNE_SCAN_COUNT):
            yield _as_bytes(found)

    def _hgetall_or_corrupt(self, key: str) -> Any:
        try:
            return self._client.hgetall(self._redis_key(key))
        except UnicodeDecodeError:
            security_log.warning(
                "corrupt session record in RedisStore at %s treated as absent",
                self._where,
                extra={"security_event": "corrupt_record"},
            )
            return _UNDECODABLE

    def _index_add(self, user: bytes, key: str, ttl_ms: int) -> None:
        self._eval(self._index_add_lua, self._user_set(user), [key.encode("ascii"), b"%d" % max(ttl_ms, 1)])

    def _eval(self, lua: _Lua, name: bytes, args: list[bytes]) -> Any:
        """Run one of the scripts on the key *name*: directly if this client allows it."""
        direct = self._direct
        if direct is None:
            return lua.script(keys=[name], args=args)
        return direct.evalsha(lua, name, args)

    def _unindex(self, user: bytes, keys: list[str]) -> None:
        self._unindex_digest(_digest(user), keys)

    def _unindex_digest(self, digest: str, keys: list[str]) -> None:
        """Remove *keys* from a user's set, then put back any that is (now) bound to that user.

        Removing first and checking after means a save binding one of them
        concurrently is never lost: either this check sees its binding, or its
        own SADD comes after this SREM.
        """
        if not keys:
            return
        name = self._prefix_bytes + _USER_SET + digest.encode("ascii")
        self._client.srem(name, *keys)
        for key, state in zip(keys, self._bindings(keys), strict=True):
            if state is not None and state[0] == digest:
                self._eval(self._index_add_lua, name, [key.encode("ascii"), b"%d" % state[1]])

    def _bindings(self, keys: list[str]) -> list[tuple[str, int] | None]:
        """For each live bound record: the digest of its user and how long its user's set must live (ms)."""
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._redis_key(key), [_USER, _EXPIRES, _USER_EXPIRES])
        now = _clock.now()
        states: list[tuple[str, int] | None] = []
        for reply in pipe.execute(raise_on_error=False):
            state = None
            if isinstance(reply, list) and reply[0] is not None and _is_live(reply[1], now):
                until = max(_float_or(reply[1], now), _float_or(reply[2], now))
                state = (_digest(_as_bytes(reply[0])), max(_ttl_ms(until, now), 1))
            states.append(state)
        return states

    def _closed_error(self) -> StoreUnavailableError:
        return StoreUnavailableError(f"RedisStore at {self._where} is closed")

    @contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        """Turn redis-py's exceptions into StoreErrors, around the less frequent operations."""
        if self._closed:
            raise self._closed_error()
        try:
            yield
        except _FAILURES as exc:
            raise self._failure(action, key, exc) from exc

    def _failure(self, action: str, key: str | None, exc: BaseException) -> StoreError:
        """The StoreError for redis-py's *exc*: it names the server, never the session.

        The hot path calls this from a plain ``except``, cheaper than entering
        the ``_errors`` context manager on every command.
        """
        if isinstance(exc, rex.TimeoutError):
            limit = f" within {self._socket_timeout:g}s" if self._socket_timeout else ""
            return StoreTimeoutError(
                f"RedisStore: Redis at {self._where} did not answer {action}{limit}: {_scrub(exc, key)}"
            )
        if isinstance(exc, rex.ConnectionError):
            # Includes AuthenticationError and BusyLoadingError (Redis still loading its data).
            return StoreUnavailableError(
                f"RedisStore: cannot reach Redis at {self._where} ({action}): {_scrub(exc, key)}"
            )
        if isinstance(exc, rex.ResponseError):
            text = _scrub(exc, key)
            if isinstance(exc, _OOM_ERRORS) or "OOM" in text or "maxmemory" in text:
                return StoreFullError(f"RedisStore: Redis at {self._where} is out of memory ({action}): {text}")
            return StoreError(f"RedisStore: Redis at {self._where} refused {action}: {text}")
        if isinstance(exc, rex.ChildDeadlockedError):
            return StoreUnavailableError(
                f"RedisStore: the connection pool for {self._where} was locked when this process forked"
            )
        return StoreError(f"RedisStore: Redis at {self._where} failed {action}: {_scrub(exc, key)}")


class _Lua:
    """One of the scripts above, ready for either path: the client's Script object, or packed EVALSHA pieces."""

    __slots__ = ("head", "load", "script")

    def __init__(self, client: Any, text: str) -> None:
        # The client path: EVALSHA, and SCRIPT LOAD on NOSCRIPT (a restarted or
        # failed-over server), on Redis, Sentinel and Cluster clients alike.
        self.script = client.register_script(text)
        body = text.encode("utf-8")
        sha = hashlib.sha1(body, usedforsecurity=False).hexdigest().encode("ascii")
        # The direct path: everything of an EVALSHA of one key but its array
        # header, the key and the arguments.
        self.head = b"$7\r\nEVALSHA\r\n$40\r\n" + sha + b"\r\n$1\r\n1\r\n"
        self.load = _pack((b"SCRIPT", b"LOAD", body))


def _pack(parts: tuple[bytes, ...] | list[bytes]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(parts), _bulks(parts))


def _bulks(parts: tuple[bytes, ...] | list[bytes]) -> bytes:
    return b"".join([b"$%d\r\n%s\r\n" % (len(part), part) for part in parts])


class _Link:
    """One of _Direct's connections, with the socket and reader its commands are read with."""

    __slots__ = ("conn", "next_check", "reader", "sock")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: Any = None  # None: not connected (yet, or any more)
        self.reader: Any = None  # None with a socket: read through the connection (no raw I/O)
        self.next_check = 0.0

    def drop(self, error: BaseException | None = None) -> None:
        """Forget the socket (and whatever was half written or read on it); the next command reconnects."""
        self.sock = None
        self.reader = None
        self.conn.disconnect()


class _Direct:
    """Connections of the store's own, for the commands of every request: load, save, touch, destroy.

    Through the client, a command pays for more than its round trip: the
    pool's lock and its poll of the socket on every get_connection(), retry,
    observability hooks and response callbacks, the packing of each
    argument. On this machine an HGETALL took ~45 µs through client.hgetall(),
    ~24 µs written and read on a redis-py connection directly, ~22 µs on the
    raw socket: most of a request.

    So this keeps connections made exactly as the client's pool makes them
    (its connection class and keyword arguments: AUTH, credential providers,
    db SELECT, TLS, Unix sockets, client name, protocol, timeouts and retry
    policy all apply), and, once redis-py has connected one and done its
    handshake, writes commands packed once to its socket and reads the
    replies with a hiredis.Reader of our own. That uses redis-py's private
    ``_sock`` attribute: if hiredis is missing or the attribute is not a
    socket, commands go through the connection's send_packed_command() and
    read_response() instead, which are public.

    The connections are taken from a free list (list.pop() and list.append()
    are atomic) rather than one per thread: a server that starts a thread per
    request reuses them instead of opening one per request, and a connection
    is never used by two threads at once. Replies are always bytes (a
    decode_responses=True client only changes how the store's other commands
    read), and the connections do not count against the pool's max_connections.

    A failed command follows the connection's retry policy (the client's; a
    URL client's retries a dead connection once), and any error but a
    complete error reply drops the socket: a reply half read, after a timeout,
    is never read as the answer to the next command. A connection idle longer
    than its health_check_interval is PINGed first, as the pool would. A
    fork() is noticed by the process ID: the child makes connections of its
    own and leaves the parent's sockets alone.
    """

    def __init__(self, pool: Any) -> None:
        self._connection_class = pool.connection_class
        self._kwargs: dict[str, Any] = {**pool.connection_kwargs, "decode_responses": False}
        self._interval = float(self._kwargs.get("health_check_interval") or 0)
        self._lock = threading.Lock()
        self._idle: list[_Link] = []
        self._made: set[_Link] = set()
        self._pid = os.getpid()
        self._closed = False

    @classmethod
    def for_client(cls, client: Any) -> _Direct | None:
        """A direct path for a plain ``redis.Redis`` on an ordinary pool; ``None`` for anything else.

        Cluster and Sentinel clients, a single-connection client, a pool of
        another kind (blocking, Sentinel-managed), client-side caching or a
        connection class of the user's own keep the client's own path.
        """
        if type(client) is not redis.Redis or getattr(client, "connection", None) is not None:
            return None
        pool = getattr(client, "connection_pool", None)
        if type(pool) is not redis.ConnectionPool or getattr(pool, "cache", None) is not None:
            return None
        if pool.connection_class not in _DIRECT_CLASSES:
            return None
        return cls(pool)

    def call(self, packed: bytes) -> Any:
        """Send one packed command and return its reply (bytes, never decoded)."""
        if self._pid != os.getpid():
            self._forked()
        idle = self._idle
        try:
            link = idle.pop()
        except IndexError:
            link = self._link()
        try:
            reply = link.conn.retry.call_with_retry(lambda: self._roundtrip(link, packed), link.drop)
        except rex.ResponseError:
            idle.append(link)  # a whole error reply was read: the connection is clean
            raise
        except BaseException:
            self._discard(link)
            raise
        idle.append(link)
        return reply

    def _roundtrip(self, link: _Link, packed: bytes) -> Any:
        conn = link.conn
        if self._interval:
            now = time.monotonic()
            if now > link.next_check and link.sock is not None:
                conn.check_health()  # a PING, read by redis-py: our reader holds nothing between commands
                if getattr(conn, "_sock", None) is not link.sock:
                    link.sock = None  # the PING reconnected
            link.next_check = now + self._interval
        sock = link.sock
        if sock is None:
            sock = self._open(link)
        reader = link.reader
        if reader is None:
            conn.send_packed_command((packed,), check_health=False)
            return conn.read_response()
        try:
            sock.sendall(packed)
            reply = reader.gets()
            while reply is _MORE or type(reply) is _PUSH:
                if reply is _MORE:
                    data = sock.recv(_READ_SIZE)
                    if not data:
                        raise rex.ConnectionError("Connection closed by server.")
                    reader.feed(data)
                reply = reader.gets()  # a push message (RESP3) is not the reply: read on
        except TimeoutError:  # socket.timeout
            raise rex.TimeoutError("Timeout reading from Redis") from None
        except OSError as exc:
            raise rex.ConnectionError(f"Error while talking to Redis: {exc}") from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _open(self, link: _Link) -> Any:
        """Connect (redis-py does the handshake) and take the socket to talk on."""
        conn = link.conn
        conn.connect()
        sock = getattr(conn, "_sock", None)
        link.sock = sock
        if _hiredis is not None and isinstance(sock, socket.socket):
            parse_error = getattr(getattr(conn, "_parser", None), "parse_error", None)
            if callable(parse_error):
                link.reader = _hiredis.Reader(
                    protocolError=rex.InvalidResponse, replyError=parse_error, notEnoughData=_MORE
                )
        return sock

    def evalsha(self, lua: _Lua, key: bytes, args: list[bytes]) -> Any:
        packed = b"*%d\r\n%s$%d\r\n%s\r\n%s" % (len(args) + 4, lua.head, len(key), key, _bulks(args))
        try:
            return self.call(packed)
        except rex.NoScriptError:
            # A restarted or failed-over server: load the script, then run it.
            self.call(lua.load)
            return self.call(packed)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            made, self._made, self._idle = self._made, set(), []
        for link in made:
            link.drop()

    def _link(self) -> _Link:
        link = _Link(self._connection_class(**self._kwargs))  # connects on its first command
        with self._lock:
            if self._closed:
                raise rex.ConnectionError("the store is closed")
            self._made.add(link)
        return link

    def _discard(self, link: _Link) -> None:
        with self._lock:
            self._made.discard(link)
        link.drop()

    def _forked(self) -> None:
        # The parent's connections are left to it: dropping the references
        # closes only this process's copies of their sockets. No lock is
        # taken: one could have been held by a thread that no longer exists.
        self._lock = threading.Lock()
        self._idle = []
        self._made = set()
        self._pid = os.getpid()


def _ttl_ms(expires_at: float, now: float) -> int:
    # Redis counts the TTL in real time; deriving it from the same clock that
    # decides liveness keeps the two consistent (and lets tests move the clock).
    return math.ceil((expires_at - now) * 1000)


def _index_expiry(expires_at: float, now: float) -> float:
    # A user's set is made to live twice as long as the session that extends
    # it, so a session saved or touched on every request extends it only once
    # per TTL, not every time.
    return float(expires_at) + max(float(expires_at) - now, 0.0)


def _digest(user: bytes) -> str:
    return hashlib.sha256(user).hexdigest()


def _member_keys(members: Any) -> list[str]:
    keys = (_as_bytes(m).decode("ascii", "replace") for m in members)
    return [k for k in keys if valid_key(k)]


def _float_or(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _is_live(stored: Any, now: float | None = None) -> bool:
    if stored is None:
        return False
    return _float_or(stored, -math.inf) > (_clock.now() if now is None else now)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _glob_escape(pattern: bytes) -> bytes:
    out = bytearray()
    for byte in pattern:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _scrub(exc: BaseException, key: str | None) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace(key, "<key>") if key else text


def _split_url(url: str) -> tuple[str, str | None]:
    """Validate a Redis URL and take out our own ``prefix`` parameter."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"RedisStore: invalid Redis URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError("RedisStore: the URL must start with redis://, rediss:// or unix://")
    # redis-py quietly ignores a database number it cannot parse; a typo
    # would then share database 0 with whatever else lives there.
    if scheme != "unix" and not re.fullmatch(r"/?[0-9]*", parts.path):
        raise ConfigurationError("RedisStore: the URL's path must be a database number, as in redis://host:6379/0")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    # Rebuilt by hand: urlunsplit would turn unix:///path into unix:/path.
    base = url.split("#", 1)[0].split("?", 1)[0]
    return base + (f"?{rest}" if rest else ""), (prefixes[-1] if prefixes else None)


def _client_from_url(url: str, socket_timeout: float | None, connect_timeout: float | None) -> RedisClient:
    password = urlsplit(url).password
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=_HEALTH_CHECK_INTERVAL,
            # Once, quickly, and only for a dead connection: a timeout already
            # spent the caller's whole budget.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(rex.ConnectionError,)),
        )
    except (ValueError, TypeError) as exc:
        text = str(exc)
        if password:
            text = text.replace(password, "***")
        raise ConfigurationError(f"RedisStore: invalid Redis URL: {text}") from None


def _describe(client: RedisClient) -> str:
    """Where the client connects, for messages: host:port/db, never a password."""
    if isinstance(client, RedisCluster):
        try:
            nodes = [node.name for node in client.get_nodes()][:3]  # type: ignore[no-untyped-call, unused-ignore]
        except Exception:  # describing must never be what fails
            nodes = []
        return "cluster " + (",".join(nodes) or "(no nodes)")
    pool = client.connection_pool
    service = getattr(pool, "service_name", None)
    if service:
        return f"sentinel service {service!r}"
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {}) or {}
    if kwargs.get("path"):
        where = f"unix:{kwargs['path']}"
    else:
        where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"{where}/{kwargs.get('db', 0)}"
