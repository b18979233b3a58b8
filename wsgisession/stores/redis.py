"""RedisStore: sessions in Redis hashes with native expiry, merged by Lua scripts."""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import suppress
from itertools import islice
from typing import Any, Union
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.exceptions as rex
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from .. import _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import (
    CORRUPT,
    BatchPruneBase,
    Record,
    Update,
    log,
    positive_seconds,
    query_options,
    scrub,
    user_bytes,
    valid_key,
)

# redis-py 5+ types its clients as plain classes, the older types-redis stubs
# as generic ones: the ignore serves either.
RedisClient = Union["redis.Redis[Any]", "RedisCluster[Any]"]  # type: ignore[type-arg, unused-ignore]
_DEFAULT_URL = "redis://127.0.0.1:6379/0"
# A session hash's metadata fields; data fields are "d:<name>", so no session key collides with them.
_CREATED, _EXPIRES, _USER, _MOVED = b"m:created", b"m:expires", b"m:user", b"m:moved"
# A user's set is <prefix>u:<sha256 of the user ID>: unlike the ID, a digest is safe in a key and a SCAN pattern.
_USER_SET = "u:"
# What sessions_of() reads for a hash a decode_responses=True client cannot decode.
_UNREADABLE: Any = object()
# An idle connection is PINGed after this long, so one a firewall or failover dropped fails no request.
_HEALTH_CHECK_INTERVAL = 30
_SCAN_COUNT = 1000
# How long a record marked moved stays: time to finish the rename; one that dies halfway leaves nothing longer.
_MOVE_GRACE_MS = 60_000
# Every script touches one key, KEYS[1], so it runs on Redis Cluster without a hash tag. The user index spans two
# keys (a hash, its user's set): follow-up commands keep it, ordered so that a live bound session is never missing
# from its user's set; at worst the set holds a stale member, which sessions_of(), destroy_user() and prune()
# remove. A record is live while m:expires is later than the caller's clock (ARGV[1]): one instant for every process
# and for a test's clock; Redis's TTL removes it later. m:uexp is how long the user's set is known to live: a save
# or touch past it returns the user, to extend the set. _SAVE writes every field with one HSET (chunked only because
# a few thousand values overflow Lua's stack): a script that fails halfway is not undone. ARGV: now, expires_at,
# created_at ('' for an update), ttl_ms, bind ('1': bind to ARGV[6], whose set the caller has made live up to
# ARGV[7]), user, user set expiry, n_delete, the names to delete, then name/value pairs to set. Returns 0 (nothing
# written), 1, or {user to unindex, user to index} (false for none).
_SAVE = """
local key = KEYS[1]
local function chunked(command, first, last)
  for i = first, last, 1000 do redis.call(command, key, unpack(ARGV, i, math.min(i + 999, last))) end
end
local meta = redis.call('HMGET', key, 'm:moved', 'm:expires', 'm:user', 'm:uexp')
if meta[1] then return 0 end
local stored = tonumber(meta[2])
local live = stored ~= nil and stored > tonumber(ARGV[1])
if not live and ARGV[3] == '' then return 0 end
local old, ttl, ndel = meta[3], tonumber(ARGV[4]), tonumber(ARGV[8])
if ttl <= 0 or not live then
  redis.call('DEL', key) -- expired leftovers are replaced wholesale
  if ttl <= 0 then return {old, false} end
  redis.call('HSET', key, 'm:created', ARGV[3])
end
if live then chunked('HDEL', 9, 8 + ndel) end
chunked('HSET', 9 + ndel, #ARGV)
redis.call('PEXPIRE', key, ttl)
local user, index = live and old, false
if ARGV[5] == '1' then
  user = ARGV[6]
  redis.call('HSET', key, 'm:user', user, 'm:uexp', ARGV[7])
elseif user and (tonumber(meta[4]) or 0) < tonumber(ARGV[2]) then
  redis.call('HSET', key, 'm:uexp', ARGV[7])
  index = user
end
local unindex = old ~= user and old
if unindex or index then return {unindex, index} end
return 1
"""
# ARGV: now, expires_at, ttl_ms, user set expiry. Returns 0 if the record is gone, 1, or the user whose set to extend.
_TOUCH = """
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:moved', 'm:expires', 'm:user', 'm:uexp')
local stored = tonumber(meta[2])
if meta[1] or stored == nil or stored <= tonumber(ARGV[1]) then return 0 end
if tonumber(ARGV[3]) <= 0 then
  redis.call('DEL', key)
  return 1
end
redis.call('PEXPIRE', key, ARGV[3])
if meta[3] and (tonumber(meta[4]) or 0) < tonumber(ARGV[2]) then
  redis.call('HSET', key, 'm:expires', ARGV[2], 'm:uexp', ARGV[4])
  return meta[3]
end
redis.call('HSET', key, 'm:expires', ARGV[2])
return 1
"""
# Deletes the record; returns the user it was bound to, or false.
_DESTROY = """
local user = redis.call('HGET', KEYS[1], 'm:user')
redis.call('DEL', KEYS[1])
return user
"""
# ARGV: user, now. Deletes the record only if it is bound to that user: 2 if it was live, 1 if
# expired (or a tombstone), 0 if left alone; {2 or 1, new key} for a record a rename moved.
_DESTROY_BOUND = """
local meta = redis.call('HMGET', KEYS[1], 'm:user', 'm:expires', 'm:moved')
if meta[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local state = 1
if (tonumber(meta[2]) or 0) > tonumber(ARGV[2]) then state = 2 end
if meta[3] then return {state, meta[3]} end
return state
"""
# A rename (Update.replaces) spans two keys, which need not share a slot: three one-key
# scripts, tied together by the new key as a token (OLD, NEW the hashes):
#  1. _MOVE_OUT on OLD: if live, set m:moved = NEW, cut its TTL to _MOVE_GRACE_MS and return
#     its fields. OLD is now absent to load, count and sessions_of(); a save or touch of it is False.
#  2. save() creates NEW from them with the update applied, indexed first.
#  3. _MOVE_DONE on OLD: if it still says m:moved = NEW, strip it to a tombstone (m:moved,
#     m:user) and return the user, to unindex OLD; if not, OLD was deleted after step 1: NEW is
#     destroyed and the rename returns False.
# So whatever deletes OLD before step 3 wins (destroy(), destroy_user(); prune() skips marked
# records). destroy_user() follows m:moved to NEW, as PostgreSQL follows an updated row, and ends
# it too if bound to the same user, counting the session once, even after step 3 (through the
# tombstone). Only one of two renames marks OLD; each step is safe to retry (redis-py retries
# after a lost reply). A rename that fails destroys NEW, then _MOVE_UNDO unmarks OLD: a rollback
# that fails leaves the session lost, never alive twice. A process killed halfway leaves OLD
# marked for _MOVE_GRACE_MS at most, and perhaps NEW, known to no one, until it expires.
# ARGV: now, new key, grace ms. Returns 0, or the hash's fields and values.
_MOVE_OUT = """
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:moved', 'm:expires')
if meta[1] and meta[1] ~= ARGV[2] then return 0 end
if (tonumber(meta[2]) or 0) <= tonumber(ARGV[1]) then return 0 end
if not meta[1] then
  redis.call('HSET', key, 'm:moved', ARGV[2])
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or ttl > tonumber(ARGV[3]) then redis.call('PEXPIRE', key, ARGV[3]) end
end
return redis.call('HGETALL', key)
"""
# ARGV: new key, grace ms. HDEL, not DEL and HSET: a full Redis refuses writes that allocate.
# Returns 0 if the record is not marked by this rename, else {1, its user or false}.
_MOVE_DONE = """
local key = KEYS[1]
if redis.call('HGET', key, 'm:moved') ~= ARGV[1] then return 0 end
local user = redis.call('HGET', key, 'm:user')
for _, name in ipairs(redis.call('HKEYS', key)) do
  if name ~= 'm:moved' and name ~= 'm:user' then redis.call('HDEL', key, name) end
end
redis.call('PEXPIRE', key, ARGV[2])
return {1, user}
"""
# ARGV: new key, now. Takes this rename's mark off and restores the TTL from m:expires.
_MOVE_UNDO = """
local key = KEYS[1]
local meta = redis.call('HMGET', key, 'm:moved', 'm:expires')
local stored = tonumber(meta[2])
if meta[1] ~= ARGV[1] or stored == nil then return 0 end
redis.call('HDEL', key, 'm:moved')
local ttl = math.ceil((stored - tonumber(ARGV[2])) * 1000)
if ttl > 0 then redis.call('PEXPIRE', key, string.format('%d', ttl)) end
return 1
"""
# KEYS[1]: a user's set; ARGV: member, ttl_ms. Never shortened (other sessions may need longer; PEXPIRE GT is Redis 7).
_INDEX_ADD = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
# ARGV: now. Deletes the record only if still expired: a save or touch landing after the scan keeps it alive.
_PRUNE = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local stored = tonumber(redis.call('HGET', KEYS[1], 'm:expires'))
if stored == nil or stored > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


class RedisStore(BatchPruneBase):
    """Sessions in Redis: one hash per session, expired by Redis itself.

    Each session is a hash at ``<prefix><key>``: a field per top-level session
    key (``d:<name>``, the value as JSON text), ``m:created``, ``m:expires`` and,
    once bound to a user, ``m:user``; the user's set ``<prefix>u:<sha256 of the
    user ID>`` holds the keys of their sessions. A load is one HGETALL; a save,
    touch or destroy one Lua script on that key, so it is atomic and works on Redis Cluster.

    URLs, each taking ``prefix``, ``socket_timeout``, ``socket_connect_timeout``
    and ``client_name`` as query parameters:

    * ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS),
      ``unix:///path/to/redis.sock?db=0``; redis-py's other URL options apply too;
    * ``redis+cluster://[user:password@]host:port[,host:port...][/]``: a Redis
      Cluster, found from any of the nodes named;
    * ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``:
      the primary the Sentinels name for *service* (the credentials are the
      primary's; the Sentinels are asked without any).

    :meth:`count`, :meth:`prune` and :meth:`index_size` SCAN every primary of a cluster;
    through a ``redis://`` URL naming one node of a cluster they refuse, as does any command
    Redis redirects. Redis expires sessions itself, so a prune finds only records whose TTL
    outlives their recorded expiry (a clock moved forward, a TTL changed by hand) and the user
    index's entries for sessions that are gone: run it rarely.

    :param client_or_url: one of the URLs above (default ``redis://127.0.0.1:6379/0``) or a
        redis-py client you made (``Redis``, ``RedisCluster``, ``Sentinel.master_for(...)``),
        which :meth:`close` leaves open; ``decode_responses`` may be either. A client without
        timeouts gets the store's, for the connections its pool opens from then on; where that
        cannot be done (a ``RedisCluster``, a single-connection client) a ``RuntimeWarning``
        names the missing timeout.
    :param prefix: prepended to every Redis key; the URL's ``prefix`` takes precedence.
    :param socket_timeout: seconds to wait for an answer before
        :class:`~wsgisession.errors.StoreTimeoutError`; the URL's takes precedence.
    :param connect_timeout: seconds to wait for a connection before
        :class:`~wsgisession.errors.StoreUnavailableError`.
    :param clock: see :class:`~wsgisession.stores.base.StoreBase`.

    A client made from a ``redis://`` or Sentinel URL retries a command once, on a fresh
    connection, when its connection turns out dead (Redis restarted): every operation here is
    idempotent.
    """

    failures = (rex.RedisError, rex.RedisClusterException, rex.ChildDeadlockedError)
    _ready = BatchPruneBase._refuse_closed

    def __init__(
        self,
        client_or_url: str | RedisClient | None = None,
        *,
        prefix: str = "wsgisession:",
        socket_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(prefix, str):
            raise ConfigurationError("RedisStore: prefix must be a str")
        for name, value in (("socket_timeout", socket_timeout), ("connect_timeout", connect_timeout)):
            if value is not None:
                positive_seconds(value, f"RedisStore: {name}")
        self._owned: list[Any] = []  # the clients this store made: what close() closes
        client: Any = client_or_url
        if isinstance(client, (redis.Redis, RedisCluster)):
            _give_timeouts(client, socket_timeout, connect_timeout)
        elif client is None or isinstance(client, str):
            client, url_prefix, self._owned = _connect(client or _DEFAULT_URL, socket_timeout, connect_timeout)
            prefix = prefix if url_prefix is None else url_prefix
        else:
            raise ConfigurationError(f"RedisStore needs a Redis URL or a redis-py client, not {type(client).__name__}")
        self._client: Any = client
        self.prefix = prefix
        self._match = re.sub(r"([*?\[\]\\])", r"\\\1", prefix)  # the prefix, literal in a SCAN pattern
        self._cluster = self._whole_keyspace = isinstance(client, RedisCluster)
        self._decoding = bool(client.get_encoder().decode_responses)
        self._timeout: float | None = client.get_connection_kwargs().get("socket_timeout")
        self._where = _describe(client)
        # A pool checkout (a lock, a socket poll, observability hooks) costs 12-14 us, a fifth of a
        # loopback command: so commands run on single-connection clients of the pool, in a free list
        # (pop and append are atomic) that thread-per-request servers reuse. Only on the store's own
        # pool: one an application shares is never held.
        self._lanes: list[Any] | None = [] if isinstance(client, redis.Redis) and self._owned else None
        self._pid = os.getpid()
        script = client.register_script
        self._save_script, self._touch_script = script(_SAVE), script(_TOUCH)
        self._destroy_script, self._destroy_bound_script = script(_DESTROY), script(_DESTROY_BOUND)
        self._move_out_script, self._move_done_script = script(_MOVE_OUT), script(_MOVE_DONE)
        self._move_undo_script, self._index_add_script = script(_MOVE_UNDO), script(_INDEX_ADD)
        self._prune_script = script(_PRUNE)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> RedisStore:
        """Open a store from one of the URLs in the class docstring (*create* changes nothing: Redis needs no setup)."""
        if not isinstance(url, str):
            raise ConfigurationError(f"a Redis URL must be a str, not {type(url).__name__}")
        return cls(url)

    def __repr__(self) -> str:
        return f"<RedisStore {self._where} prefix={self.prefix!r}>"

    def _read(self, key: str, now: float) -> tuple[object, float, float, str | None] | None:
        try:
            fields = self._on_lane(lambda client: client.hgetall(self.prefix + key))
        except UnicodeDecodeError:  # a decode_responses=True client, and bytes that are not UTF-8
            return CORRUPT
        return self._parts(self._named(fields)) if fields else None

    def _write(self, key: str, update: Update, now: float) -> bool:
        if update.replaces is not None and update.replaces != key:
            return self._rename(key, update, now)
        created_at = None if update.replaces is not None else update.created_at
        expires_at = float(update.expires_at)
        ttl_ms, user = _ttl_ms(expires_at, now), update.user_id
        args: list[Any] = [now, expires_at, "" if created_at is None else float(created_at), ttl_ms]
        args += ["0", ""] if user is None else ["1", user]
        args += [_index_expiry(expires_at, now), len(update.delete), *("d:" + name for name in update.delete)]
        for name, value in update.set.items():
            args += ("d:" + name, _json.encode(value))
        args += (_EXPIRES, expires_at)
        indexed = user if user is not None and ttl_ms > 0 else None
        if indexed is not None:
            # Index first: a crash in between leaves a stale member, never a hidden session.
            self._index_add(indexed, key, 2 * ttl_ms)
        result = self._on_lane(lambda client: self._save_script([self.prefix + key], args, client))
        if result == 0:
            if indexed is not None:
                self._unindex(_digest(indexed), [key])
            return False
        if type(result) is list:
            if result[0] is not None:
                self._unindex(_digest(result[0]), [key])
            if result[1] is not None:
                self._index_add(result[1], key, 2 * ttl_ms)
        return True

    def _rename(self, key: str, update: Update, now: float) -> bool:
        """Move the record at ``update.replaces`` to *key*: the three steps above _MOVE_OUT."""
        replaces = str(update.replaces)
        old = self.prefix + replaces
        for value in update.set.values():  # what cannot be stored is refused before anything is marked
            _json.encode(value)
        try:
            fields = self._move_out_script([old], [now, key, _MOVE_GRACE_MS])
        except UnicodeDecodeError:  # a decoding client, and bytes that are not UTF-8: marked all the same
            fields = []
        if not isinstance(fields, list):
            return False
        pairs = self._named(dict(zip(fields[::2], fields[1::2], strict=True)))
        pairs.pop(_MOVED, None)
        parts = self._parts(pairs) if pairs else None
        record = self.decode(*(parts or CORRUPT))  # one it cannot read is logged as corrupt
        if record is None:
            self._undo_rename(key, old, now)
            return False
        data, user = update.apply(record.data), record.user_id if update.user_id is None else update.user_id
        moved = Update(data, expires_at=update.expires_at, created_at=record.created_at, user_id=user)
        try:
            # A create: True, unless NEW were itself being renamed, which it cannot be.
            done = self._write(key, moved, now) and self._move_done_script([old], [key, _MOVE_GRACE_MS])
        except BaseException:
            with suppress(StoreError, *self.failures):
                self._undo_rename(key, old, now)
            raise
        if not isinstance(done, list):
            # OLD was deleted after step 1: destroy wins. An error here must reach the caller: NEW would outlive it.
            self._undo_rename(key, old, now)
            return False
        if done[1] is not None:
            try:  # no re-check: a tombstone is never bound again
                self._unindex(_digest(done[1]), [replaces], recheck=False)
            except self.failures as exc:  # the rename has landed; the stale member goes later
                log.warning("RedisStore: a renamed session stays in its user's set for now: %s", _scrub(exc))
        return True

    def _undo_rename(self, key: str, old: str, now: float) -> None:
        self._delete(key)
        self._move_undo_script([old], [key, now])

    def _touch(self, key: str, expires_at: float, now: float) -> bool:
        ttl_ms = _ttl_ms(expires_at, now)
        args = [now, expires_at, ttl_ms, _index_expiry(expires_at, now)]
        result = self._on_lane(lambda client: self._touch_script([self.prefix + key], args, client))
        if result == 0:
            return False
        if result != 1:
            self._index_add(result, key, 2 * ttl_ms)
        return True

    def _delete(self, key: str) -> None:
        user = self._on_lane(lambda client: self._destroy_script([self.prefix + key], (), client))
        if user is not None:
            # No re-check: nothing binds a deleted record again (a save that is not a create finds it gone).
            self._unindex(_digest(user), [key], recheck=False)

    def _on_lane(self, command: Callable[[Any], Any]) -> Any:
        """``command(client)`` on a single-connection client of the store's own (see __init__), else on its client."""
        lanes = self._lanes
        if lanes is None:
            return command(self._client)
        if self._pid != os.getpid():  # forked: the parent's connections are the parent's
            lanes = self._lanes = []
            self._pid = os.getpid()
        try:
            lane = lanes.pop()
        except IndexError:
            lane = redis.Redis(connection_pool=self._client.connection_pool, single_connection_client=True)
        try:
            return command(lane)
        finally:
            lanes.append(lane)

    def _close(self) -> None:
        self._closed = True
        for client in self._owned:
            client.close()

    def _failure(self, action: str, exc: BaseException) -> StoreError:
        text, where = _scrub(exc), f"RedisStore: Redis at {self._where}"
        if isinstance(exc, rex.TimeoutError):
            within = f" within {self._timeout:g}s" if self._timeout else ""
            return StoreTimeoutError(f"{where} did not answer {action}{within}: {text}")
        if isinstance(exc, (rex.ConnectionError, rex.ClusterError, rex.TryAgainError, rex.RedisClusterException)):
            # Also AuthenticationError, BusyLoadingError (Redis still loading), a cluster electing a primary.
            return StoreUnavailableError(f"RedisStore: cannot reach Redis at {self._where} ({action}): {text}")
        if isinstance(exc, rex.OutOfMemoryError) or "OOM" in text or "maxmemory" in text:
            return StoreFullError(f"{where} is out of memory ({action}): {text}")
        if isinstance(exc, rex.AskError):  # MOVED too: a plain client on one node of a cluster
            return StoreError(f"{where} is one node of a Redis Cluster ({action}): use a redis+cluster:// URL")
        if isinstance(exc, rex.ChildDeadlockedError):
            return StoreUnavailableError(f"{where}: the connection pool was locked when this process forked")
        return StoreError(f"{where} refused {action}: {text}")

    def _prune_batches(self, now: float, batch_size: int) -> Iterator[int]:
        self._refuse_one_node("prune")
        keys: list[str] = []
        sets: list[str] = []  # user sets, pruned in batches of their own
        for name in self._scan(""):
            rest = name[len(self.prefix) :]
            if valid_key(rest):
                keys.append(name)
            elif rest.startswith(_USER_SET) and valid_key(rest[len(_USER_SET) :]):
                sets.append(name)
            if len(keys) >= batch_size:
                yield self._prune_keys(keys, now)
                keys = []
            if len(sets) >= batch_size:
                self._prune_sets(sets)
                sets = []
        if keys:
            yield self._prune_keys(keys, now)
        self._prune_sets(sets)

    def _prune_keys(self, names: list[str], now: float) -> int:
        # One round trip reads every expiry; the script, checking again atomically, runs for those that look expired.
        metas = self._each("HMGET", names, _EXPIRES, _MOVED)
        dead = [n for n, m in zip(names, metas, strict=True) if m and m[1] is None and _number(m[0], math.inf) <= now]
        return sum(int(self._prune_script(keys=[name], args=[now])) for name in dead)

    def _prune_sets(self, names: list[str]) -> None:
        for name, members in zip(names, self._each("SMEMBERS", names), strict=True):
            if members is None:
                continue  # not a set: someone else's key that merely looks like ours
            if strays := [m for m in members if not valid_key(_text(m))]:
                self._client.srem(name, *strays)
            digest = name[len(self.prefix) + len(_USER_SET) :]
            keys = sorted(k for k in map(_text, members) if valid_key(k))
            stale = [k for k, s in zip(keys, self._bindings(keys), strict=True) if s is None or s[0] != digest]
            self._unindex(digest, stale)

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first; stale members leave the user's set."""
        user = user_bytes(user_id)
        found: list[tuple[str, Record]] = []
        with self._errors("sessions_of"):
            keys = self._members(user)
            names = [self.prefix + k for k in keys]
            try:
                replies = self._each("HGETALL", names)
            except UnicodeDecodeError:  # a decoding client: read one by one, so only that record is lost
                replies = []
                for name in names:
                    try:
                        replies.append(self._client.hgetall(name))
                    except UnicodeDecodeError:
                        replies.append(_UNREADABLE)
            stale = []
            now = self.now()
            for key, fields in zip(keys, replies, strict=True):
                if fields is _UNREADABLE:
                    self.decode(*CORRUPT)  # logged as a load would log it; left indexed for destroy_user
                    continue
                meta = self._named(fields or {})
                bound = meta.get(_USER)
                if bound is None or _bytes(bound) != user or _number(meta.get(_EXPIRES), 0) <= now:
                    stale.append(key)
                    continue
                parts = self._parts(meta)
                record = None if parts is None else self.decode(*parts)
                if record is not None:  # a corrupt record stays indexed, for destroy_user
                    found.append((key, record))
            self._unindex(_digest(user), stale)
        return sorted(found, key=lambda item: item[1].created_at)

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*; return how many live ones there were.

        A stale member of the user's set never ends someone else's session: the
        script checks the binding. A record a rename moved leads on to its new key.
        """
        user = user_bytes(user_id)
        now = self.now()
        with self._errors("destroy_user"):
            keys = self._members(user)
            ended: set[str] = set()  # deleted while live
            moving: list[str] = []  # where the live records a rename was moving were going
            followed: set[str] = set()
            for key in keys:  # grows as renames are followed
                result = self._destroy_bound_script(keys=[self.prefix + key], args=[user, now])
                if isinstance(result, list):
                    target = _text(result[1])
                    if int(result[0]) == 2:
                        moving.append(target)
                    # Even a key already tried: it may have been created since.
                    if valid_key(target) and target not in ended and target not in followed:
                        followed.add(target)
                        keys.append(target)
                elif int(result) == 2:
                    ended.add(key)
            self._unindex(_digest(user), sorted(set(keys)))
        # A session caught halfway through a rename counts once, under either key.
        return len(ended) + sum(1 for target in moving if target not in ended)

    def count(self) -> int:
        """How many live records the store holds: a SCAN of every key under the prefix, on every primary."""
        now = self.now()
        with self._errors("count"):
            self._refuse_one_node("count")
            names = (name for name in self._scan("") if valid_key(name[len(self.prefix) :]))
            metas = (m for batch in _batches(names) for m in self._each("HMGET", batch, _EXPIRES, _MOVED))
            return sum(1 for m in metas if m is not None and m[1] is None and _number(m[0], 0) > now)

    def index_size(self) -> int:
        """How many entries the user index holds, stale ones included (for tests and diagnostics)."""
        with self._errors("index_size"):
            self._refuse_one_node("index_size")
            names = (n for n in self._scan(_USER_SET) if valid_key(n[len(self.prefix) + len(_USER_SET) :]))
            return sum(n for batch in _batches(names) for n in self._each("SCARD", batch) if n is not None)

    def _parts(self, fields: dict[bytes, Any]) -> tuple[Any, Any, Any, str | None] | None:
        """A hash's fields (keyed by bytes) as StoreBase.decode takes them; ``None`` for a record a rename moved."""
        if _MOVED in fields:
            return None
        try:
            data = {name[2:].decode(): value for name, value in fields.items() if name.startswith(b"d:")}
            user = fields.get(_USER)
            user = user.decode() if type(user) is bytes else user
        except UnicodeDecodeError:
            return CORRUPT
        return data, fields.get(_CREATED), fields.get(_EXPIRES), user

    def _named(self, fields: dict[Any, Any]) -> dict[bytes, Any]:
        return {name.encode(): value for name, value in fields.items()} if self._decoding else fields

    def _user_set(self, user: bytes | str) -> str:
        return self.prefix + _USER_SET + _digest(user)

    def _members(self, user: bytes) -> list[str]:
        return sorted(k for k in map(_text, self._client.smembers(self._user_set(user))) if valid_key(k))

    def _scan(self, after_prefix: str) -> Iterator[str]:
        """The names under ``prefix + after_prefix``: on every primary of a cluster."""
        every_primary = {"target_nodes": RedisCluster.PRIMARIES} if self._cluster else {}
        names = self._client.scan_iter(match=self._match + after_prefix + "*", count=_SCAN_COUNT, **every_primary)
        return map(_text, names)

    def _refuse_one_node(self, action: str) -> None:
        """Refuse to SCAN one node of a cluster through a plain client: it would see that node's share only."""
        if self._whole_keyspace:
            return
        with suppress(rex.ResponseError):  # INFO disabled (some managed services): nothing to learn from it
            if self._client.info("cluster").get("cluster_enabled"):
                raise StoreError(
                    f"RedisStore: Redis at {self._where} is one node of a Redis Cluster: {action} would see only "
                    "its share of the sessions; use a redis+cluster://host:port,... URL"
                )
        self._whole_keyspace = True

    def _each(self, command: str, names: list[str], *args: Any) -> list[Any]:
        """*command* on each key, pipelined; ``None`` for a key of another type, any other error (a MOVED) raised."""
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.execute_command(command, name, *args)
        replies = pipe.execute(raise_on_error=False) if names else []
        for reply in replies:
            if isinstance(reply, Exception) and not (
                isinstance(reply, rex.ResponseError) and "WRONGTYPE" in str(reply)
            ):
                raise reply
        return [None if isinstance(reply, Exception) else reply for reply in replies]

    def _index_add(self, user: bytes | str, key: str, ttl_ms: int) -> None:
        self._index_add_script(keys=[self._user_set(user)], args=[key, max(ttl_ms, 1)])

    def _unindex(self, digest: str, keys: list[str], recheck: bool = True) -> None:
        # Put back any key (now) bound to that user: a save binding it meanwhile
        # is seen by this check, or its own SADD comes after this SREM.
        if not keys:
            return
        name = self.prefix + _USER_SET + digest
        self._client.srem(name, *keys)
        if recheck:
            for key, state in zip(keys, self._bindings(keys), strict=True):
                if state is not None and state[0] == digest:
                    self._index_add_script(keys=[name], args=[key, state[1]])

    def _bindings(self, keys: list[str]) -> list[tuple[str, int] | None]:
        """For each live bound record: the digest of its user and how long its user's set must live (ms)."""
        now = self.now()
        states: list[tuple[str, int] | None] = []
        for meta in self._each("HMGET", [self.prefix + k for k in keys], _USER, _EXPIRES, b"m:uexp"):
            live = meta is not None and meta[0] is not None and _number(meta[1], 0) > now
            until = max(_number(meta[1], now), _number(meta[2], now)) if live else now
            states.append((_digest(meta[0]), max(_ttl_ms(until, now), 1)) if live else None)
        return states


def _ttl_ms(expires_at: float, now: float) -> int:
    # Redis counts a TTL in real time; taken from the clock that decides liveness, the two agree (tests move it).
    return math.ceil((expires_at - now) * 1000)


def _index_expiry(expires_at: float, now: float) -> float:
    # A user's set lives twice as long as the session extending it: one saved every request extends it once per TTL.
    return float(expires_at) + max(float(expires_at) - now, 0.0)


def _batches(names: Iterator[str], size: int = _SCAN_COUNT) -> Iterator[list[str]]:
    while batch := list(islice(names, size)):
        yield batch


def _bytes(value: bytes | str) -> bytes:
    return value if type(value) is bytes else str(value).encode()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if type(value) is bytes else str(value)


def _digest(user: bytes | str) -> str:
    return hashlib.sha256(_bytes(user)).hexdigest()


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _scrub(exc: BaseException) -> str:
    # Store keys (and user digests) name a session.
    return scrub(str(exc) or type(exc).__name__)


def _connect(url: str, socket_timeout: float | None, connect_timeout: float | None) -> tuple[Any, Any, list[Any]]:
    """The client a URL names, the URL's ``prefix`` (or ``None``), and the clients to close with the store."""
    scheme = url.partition("://")[0].lower()
    kwargs: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
    kwargs["health_check_interval"] = _HEALTH_CHECK_INTERVAL
    if scheme in ("redis", "rediss", "unix"):
        return _plain(url, scheme, kwargs)
    if scheme not in ("redis+cluster", "redis+sentinel"):
        raise ConfigurationError(
            "RedisStore: the URL must start with redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://"
        )
    allowed: dict[str, Callable[[str], object]] = {"prefix": str, "client_name": str}
    options = query_options(
        url, {**allowed, "socket_timeout": positive_seconds, "socket_connect_timeout": positive_seconds}
    )
    prefix = options.pop("prefix", None)
    kwargs.update(options)  # and client_name, which CLIENT LIST shows
    username, password, hosts, path = _hosts(url, 6379 if scheme == "redis+cluster" else 26379)
    if scheme == "redis+cluster":
        if path.strip("/") not in ("", "0"):
            raise ConfigurationError("RedisStore: a Redis Cluster has one database, 0: redis+cluster://host:port/")
        node: Any = ClusterNode  # untyped in redis-py's own annotations
        try:  # RedisCluster connects at once, to learn which node holds which slots
            nodes = [node(host, port) for host, port in hosts]
            client = RedisCluster(startup_nodes=nodes, username=username, password=password, **kwargs)
        except RedisStore.failures as exc:
            names = ",".join(f"{host}:{port}" for host, port in hosts)
            text = _unpassword(str(exc), password)
            raise StoreUnavailableError(f"RedisStore: cannot reach the Redis Cluster at {names}: {text}") from None
        return client, prefix, [client]
    service, _, db = path.strip("/").partition("/")
    if not service or not re.fullmatch(r"[0-9]*", db):
        raise ConfigurationError("RedisStore: a Sentinel URL names its service: redis+sentinel://host:port/service/0")
    make: Any = Sentinel  # untyped in redis-py's own annotations
    sentinel = make(hosts, **kwargs)  # the Sentinels get the socket_* options only, and no credentials
    client = sentinel.master_for(service, db=int(db or 0), username=username, password=password, retry=_retry_once())
    return client, prefix, [client, *sentinel.sentinels]


def _plain(url: str, scheme: str, kwargs: dict[str, Any]) -> tuple[Any, str | None, list[Any]]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"RedisStore: invalid Redis URL: {exc}") from None
    # redis-py quietly ignores a database number it cannot parse; a typo
    # would then share database 0 with whatever else lives there.
    if scheme != "unix" and not re.fullmatch(r"/?[0-9]*", parts.path):
        raise ConfigurationError("RedisStore: the URL's path must be a database number, as in redis://host:6379/0")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    # Rebuilt by hand: urlunsplit would turn unix:///path into unix:/path.
    base = url.split("#", 1)[0].split("?", 1)[0] + (f"?{rest}" if rest else "")
    try:
        client = redis.Redis.from_url(base, **kwargs, retry=_retry_once())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"RedisStore: invalid Redis URL: {_unpassword(str(exc), parts.password)}") from None
    return client, (prefixes[-1] if prefixes else None), [client]


def _retry_once() -> Retry:
    # Once, quickly, and only for a dead connection: a timeout already spent the caller's whole budget.
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(rex.ConnectionError,))


def _hosts(url: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]], str]:
    """The credentials, ``(host, port)`` list and path of a URL that names several hosts."""
    netloc, _, path = url.partition("://")[2].split("#", 1)[0].split("?", 1)[0].partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    username, colon, password = userinfo.partition(":")
    hosts = []
    for item in hostlist.split(","):
        host, _, port = item[1:].partition("]") if item.startswith("[") else item.partition(":")  # [IPv6]:port
        port = port.removeprefix(":") or str(default_port)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"RedisStore: {item!r} in the URL is not host:port")
        hosts.append((host, int(port)))
    return unquote(username) or None, unquote(password) if colon else None, hosts, path


def _unpassword(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def _give_timeouts(client: Any, socket_timeout: float | None, connect_timeout: float | None) -> None:
    """Give a client passed in the store's timeouts where it has none, or warn that it has none."""
    kwargs = client.get_connection_kwargs()
    # redis-py connects within socket_timeout when it has no connect timeout of its own.
    has = {"socket_timeout": kwargs.get("socket_timeout")}
    has["socket_connect_timeout"] = kwargs.get("socket_connect_timeout") or has["socket_timeout"]
    wanted = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
    missing = {name: wanted[name] for name, value in has.items() if value is None and wanted[name] is not None}
    if missing and isinstance(client, redis.Redis) and client.connection is None:
        # Every connection its pool opens from now on gets them (a RedisCluster's nodes and a
        # single-connection client are connected already). redis-py 7 names the call.
        getattr(client.connection_pool, "update_connection_kwargs", kwargs.update)(**missing)
    elif missing:
        warnings.warn(
            f"RedisStore: the redis-py client passed in has no {' and no '.join(missing)}: a Redis that stops "
            "answering would hang requests forever. Give the client finite timeouts.",
            RuntimeWarning,
            stacklevel=3,
        )


def _describe(client: Any) -> str:
    """Where the client connects, for messages: host:port/db, never a password."""
    if isinstance(client, RedisCluster):
        nodes = [node.name for node in client.get_nodes()][:3]  # type: ignore[no-untyped-call, unused-ignore]
        return "cluster " + (",".join(nodes) or "(no nodes)")
    if service := getattr(client.connection_pool, "service_name", None):
        return f"sentinel service {service!r}"
    kw = client.get_connection_kwargs()
    host = f"unix:{kw['path']}" if kw.get("path") else f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
    return f"{host}/{kw.get('db', 0)}"
