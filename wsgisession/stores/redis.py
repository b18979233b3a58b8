"""RedisStore: sessions in Redis hashes with native expiry, merged by Lua scripts."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Union
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.exceptions as rex
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .. import _clock, _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import Record, Update, log, security_log, valid_key

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
# A connection that sat idle this long is PINGed before use, so one silently
# dropped by a firewall or a failover is replaced instead of failing a request.
_HEALTH_CHECK_INTERVAL = 30
_PRUNE_SCAN_COUNT = 1000
# redis-py 4.4+ raises OutOfMemoryError for "OOM ..." replies; older ones a plain ResponseError.
_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(rex, "OutOfMemoryError", None),) if isinstance(cls, type)
)

# Every script touches exactly one key, KEYS[1], so it runs on Redis Cluster
# (all keys of a script must live in one slot) without any hash tag.
#
# A record is live when its m:expires is later than the caller's clock (ARGV[1]).
# Redis's own TTL removes it eventually; comparing m:expires as well makes the
# record dead at the same instant for every store and for a test's patched clock.
#
# ARGV: now, expires_at, created_at ('' for an update), ttl_ms, n_delete,
#       n_delete field names, then name/value pairs to set.
_SAVE = """
local key = KEYS[1]
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
local live = stored ~= nil and stored > tonumber(ARGV[1])
local ndel = tonumber(ARGV[5])
if live then
  for i = 6, 5 + ndel do
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
for i = 6 + ndel, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', key, 'm:expires', ARGV[2])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('PEXPIRE', key, ttl)
else
  redis.call('DEL', key)
end
return 1
"""

# ARGV: now, expires_at, ttl_ms. Data fields are left alone.
_TOUCH = """
local key = KEYS[1]
local stored = tonumber(redis.call('HGET', key, 'm:expires'))
if stored == nil or stored <= tonumber(ARGV[1]) then
  return 0
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('HSET', key, 'm:expires', ARGV[2])
  redis.call('PEXPIRE', key, ttl)
else
  redis.call('DEL', key)
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
    """

    single_process = False

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
        # Script objects send EVALSHA and load the script on NOSCRIPT (a restarted
        # or failed-over server), on Redis, Sentinel and Cluster clients alike.
        scripted: Any = self._client
        self._save_script = scripted.register_script(_SAVE)
        self._touch_script = scripted.register_script(_TOUCH)
        self._prune_script = scripted.register_script(_PRUNE)
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
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
        with self._errors("load", key):
            try:
                fields: dict[Any, Any] = self._client.hgetall(self._redis_key(key))
            except UnicodeDecodeError:
                # Only a client with decode_responses=True gets here: the hash
                # holds bytes that are not UTF-8, so it was not written by us.
                security_log.warning("corrupt session record in RedisStore at %s treated as absent", self._where)
                return None
        if not fields:
            return None
        try:
            return self._decode(fields)
        except (ValueError, TypeError, UnicodeDecodeError):
            security_log.warning("corrupt session record in RedisStore at %s treated as absent", self._where)
            return None

    def _decode(self, fields: dict[Any, Any]) -> Record | None:
        raw = {_as_bytes(k): v for k, v in fields.items()}
        expires_at = float(raw[_EXPIRES]) if _EXPIRES in raw else None
        created_at = float(raw[_CREATED]) if _CREATED in raw else None
        if expires_at is None or created_at is None:
            raise ValueError("metadata missing")
        if not (math.isfinite(expires_at) and math.isfinite(created_at)):
            raise ValueError("metadata not finite")
        if expires_at <= _clock.now():
            return None
        data: dict[str, Any] = {}
        for name, value in raw.items():
            if name.startswith(_DATA):
                data[name[len(_DATA) :].decode("utf-8")] = _json.decode(_as_bytes(value).decode("utf-8"))
        return Record(data, created_at, expires_at)

    def save(self, key: str, update: Update) -> bool:
        if not valid_key(key):
            raise ValueError("not a store key")
        now = _clock.now()
        deletes = [_DATA + name.encode("utf-8") for name in update.delete]
        args: list[bytes | str | int] = [
            repr(float(now)),
            repr(float(update.expires_at)),
            "" if update.created_at is None else repr(float(update.created_at)),
            _ttl_ms(update.expires_at, now),
            len(deletes),
            *deletes,
        ]
        for name, value in update.set.items():
            args.append(_DATA + name.encode("utf-8"))
            args.append(_json.encode(value).encode("utf-8"))
        with self._errors("save", key):
            written = self._save_script(keys=[self._redis_key(key)], args=args)
        if not int(written):
            log.info("save dropped: the session was destroyed or expired meanwhile")
            return False
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        if not valid_key(key):
            return False
        now = _clock.now()
        args = [repr(float(now)), repr(float(expires_at)), _ttl_ms(expires_at, now)]
        with self._errors("touch", key):
            touched = self._touch_script(keys=[self._redis_key(key)], args=args)
        return bool(int(touched))

    def destroy(self, key: str) -> None:
        if not valid_key(key):
            return
        with self._errors("destroy", key):
            self._client.delete(self._redis_key(key))

    def prune(self) -> int:
        """Delete records whose ``m:expires`` has passed; return how many.

        Redis expires sessions by itself, so this usually returns 0: it only
        finds records whose TTL outlives their recorded expiry (a clock moved
        forward, a TTL changed by hand). It SCANs every key under the prefix,
        which is O(number of keys), so run it rarely, if at all.
        """
        now = repr(float(_clock.now()))
        removed = 0
        with self._errors("prune", None):
            keys: list[bytes] = []
            for found in self._client.scan_iter(match=_glob_escape(self._prefix_bytes) + b"*", count=_PRUNE_SCAN_COUNT):
                name = _as_bytes(found)
                # Other keys may share the prefix: only touch ones shaped like ours.
                if valid_key(name[len(self._prefix_bytes) :].decode("ascii", "replace")):
                    keys.append(name)
                if len(keys) >= _PRUNE_SCAN_COUNT:
                    removed += self._prune_batch(keys, now)
                    keys = []
            removed += self._prune_batch(keys, now)
        return removed

    def _prune_batch(self, keys: list[bytes], now: str) -> int:
        if not keys:
            return 0
        # One round trip reads every expiry; the script, which re-checks
        # atomically, runs only for the few that look expired.
        pipe = self._client.pipeline(transaction=False)
        for k in keys:
            pipe.hget(k, _EXPIRES)
        removed = 0
        cutoff = float(now)
        for k, stored in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            try:
                expired = stored is not None and float(stored) <= cutoff
            except (TypeError, ValueError):
                expired = False  # not our hash, or no usable expiry: leave it to its TTL
            if expired:
                removed += int(self._prune_script(keys=[k], args=[now]))
        return removed

    def close(self) -> None:
        """Release this store's connections; a client you passed in stays open."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self._client.close()

    # -- helpers --------------------------------------------------------------------

    def _redis_key(self, key: str) -> bytes:
        return self._prefix_bytes + key.encode("ascii")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError(f"RedisStore at {self._where} is closed")

    @contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        """Turn redis-py's exceptions into StoreErrors that name the server, not the session."""
        self._check_open()
        try:
            yield
        except rex.TimeoutError as exc:
            limit = f" within {self._socket_timeout:g}s" if self._socket_timeout else ""
            raise StoreTimeoutError(
                f"RedisStore: Redis at {self._where} did not answer {action}{limit}: {_scrub(exc, key)}"
            ) from exc
        except rex.ConnectionError as exc:
            # Includes AuthenticationError and BusyLoadingError (Redis still loading its data).
            raise StoreUnavailableError(
                f"RedisStore: cannot reach Redis at {self._where} ({action}): {_scrub(exc, key)}"
            ) from exc
        except rex.ResponseError as exc:
            text = _scrub(exc, key)
            if isinstance(exc, _OOM_ERRORS) or "OOM" in text or "maxmemory" in text:
                raise StoreFullError(f"RedisStore: Redis at {self._where} is out of memory ({action}): {text}") from exc
            raise StoreError(f"RedisStore: Redis at {self._where} refused {action}: {text}") from exc
        except rex.RedisError as exc:
            raise StoreError(f"RedisStore: Redis at {self._where} failed {action}: {_scrub(exc, key)}") from exc
        except rex.ChildDeadlockedError as exc:
            raise StoreUnavailableError(
                f"RedisStore: the connection pool for {self._where} was locked when this process forked"
            ) from exc


def _ttl_ms(expires_at: float, now: float) -> int:
    # Redis counts the TTL in real time; deriving it from the same clock that
    # decides liveness keeps the two consistent (and lets tests move the clock).
    return math.ceil((expires_at - now) * 1000)


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
