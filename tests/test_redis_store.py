"""RedisStore against a real Redis: layout, native TTL, merging across processes, failures."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import servers
from wsgisession import _clock
from wsgisession.errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from wsgisession.ids import new_id, store_key
from wsgisession.stores.base import Update
from wsgisession.stores.redis import RedisStore
from wsgisession.testing import Clock, StoreContract

# A redis-py client. Not spelled redis.Redis: redis-py's own types and the
# older types-redis stubs disagree on whether it takes a type argument.
RawRedis = Any


@pytest.fixture(scope="module")
def redis_url() -> str:
    return servers.require_redis()


@pytest.fixture
def raw(redis_url: str) -> Iterator[RawRedis]:
    """A plain client on the same server, to look at and tamper with what the store wrote."""
    client: RawRedis = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(raw: RawRedis) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    p = servers.unique_name("wsgisession-test") + ":"
    yield p
    keys = list(raw.scan_iter(match=p.replace("[", "\\[") + "*"))
    if keys:
        raw.delete(*keys)


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, prefix=prefix)
    yield s
    s.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(_clock, "now", c)
    return c


class TestRedisStoreContract(StoreContract):
    race_rounds = 30

    @pytest.fixture
    def store(self, redis_url: str, prefix: str) -> Iterator[RedisStore]:
        s = RedisStore(redis_url, prefix=prefix)
        s.load(_key())  # connect before the test starts
        yield s
        s.close()

    @pytest.fixture
    def twin(self, store: RedisStore, redis_url: str, prefix: str) -> Iterator[RedisStore]:
        other = RedisStore(redis_url, prefix=prefix)  # a client of its own: the races cross connections
        other.load(_key())
        yield other
        other.close()


class TestRedisStorePassedClientContract(StoreContract):
    """The same contract on a client the application made: a blocking pool, replies decoded to str."""

    @pytest.fixture
    def store(self, redis_url: str, prefix: str) -> Iterator[RedisStore]:
        pool = redis.BlockingConnectionPool.from_url(redis_url, decode_responses=True)
        client: RawRedis = redis.Redis(connection_pool=pool)
        s = RedisStore(client, prefix=prefix)
        yield s
        s.close()
        client.close()


class TestRedisStoreResp2Contract(StoreContract):
    """RESP2 (redis-py 5's default; 8 speaks RESP3), where a hash comes as a flat list the client pairs up."""

    @pytest.fixture
    def store(self, redis_url: str, prefix: str) -> Iterator[RedisStore]:
        s = RedisStore(f"{redis_url}?protocol=2", prefix=prefix)
        yield s
        s.close()


def _key() -> str:
    return store_key(new_id())


def _create(store: RedisStore, data: dict[str, Any], ttl: float = 600) -> str:
    key = _key()
    now = _clock.now()
    assert store.save(key, Update(set=data, expires_at=now + ttl, created_at=now))
    return key


# -- layout and native expiry -------------------------------------------------------


def test_one_hash_per_session_with_json_fields(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _create(store, {"user": "zoë", "cart": [1, 2]})
    fields = raw.hgetall(f"{prefix}{key}".encode())
    assert fields[b"d:user"].decode() == '"zoë"'
    assert fields[b"d:cart"] == b"[1,2]"
    assert set(fields) == {b"d:user", b"d:cart", b"m:created", b"m:expires"}
    assert raw.type(f"{prefix}{key}") == b"hash"


def test_ttl_is_native_and_follows_expires_at(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _create(store, {"a": 1}, ttl=100)
    assert 98_000 < raw.pttl(f"{prefix}{key}") <= 100_000
    assert store.save(key, Update(set={"a": 2}, expires_at=_clock.now() + 300))
    assert 298_000 < raw.pttl(f"{prefix}{key}") <= 300_000
    assert store.touch(key, _clock.now() + 50)
    assert 48_000 < raw.pttl(f"{prefix}{key}") <= 50_000


def test_ttl_counts_from_the_sessions_clock(store: RedisStore, raw: RawRedis, prefix: str, clock: Clock) -> None:
    clock.advance(10_000)  # a patched clock far ahead of the server's
    key = _create(store, {"a": 1}, ttl=100)
    assert 98_000 < raw.pttl(f"{prefix}{key}") <= 100_000


def test_redis_expires_the_record_by_itself(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _create(store, {"a": 1}, ttl=0.2)
    time.sleep(0.4)
    assert raw.exists(f"{prefix}{key}") == 0
    assert store.load(key) is None


def test_save_with_past_expiry_leaves_nothing(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _key()
    now = _clock.now()
    assert store.save(key, Update(set={"a": 1}, expires_at=now - 1, created_at=now))
    assert raw.exists(f"{prefix}{key}") == 0


def test_touch_does_not_rewrite_data(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _create(store, {"a": 1})
    # Valid but non-canonical JSON: a rewrite by the store would normalise it.
    raw.hset(f"{prefix}{key}", b"d:a", b" 1 ")
    raw.hset(f"{prefix}{key}", b"d:other", b'"written meanwhile"')
    assert store.touch(key, _clock.now() + 900)
    assert raw.hget(f"{prefix}{key}", b"d:a") == b" 1 "
    record = store.load(key)
    assert record is not None and record.data == {"a": 1, "other": "written meanwhile"}


# -- destroy wins ---------------------------------------------------------------------


def test_update_after_destroy_writes_nothing(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _create(store, {"user": "alice"})
    store.destroy(key)
    late = Update(set={"late": True}, delete=frozenset({"user"}), expires_at=_clock.now() + 60)
    assert store.save(key, late) is False
    assert store.touch(key, _clock.now() + 60) is False
    assert raw.exists(f"{prefix}{key}") == 0


def test_update_of_clock_expired_record_writes_nothing(
    store: RedisStore, raw: RawRedis, prefix: str, clock: Clock
) -> None:
    key = _create(store, {"a": 1}, ttl=10)
    before = raw.hgetall(f"{prefix}{key}")
    clock.advance(11)  # dead by the clock, still held by Redis (its TTL is real time)
    assert store.save(key, Update(set={"b": 2}, expires_at=clock() + 60)) is False
    assert store.touch(key, clock() + 60) is False
    assert raw.hgetall(f"{prefix}{key}") == before
    assert store.load(key) is None


# -- merging across processes -------------------------------------------------------------


def _save_many(store: RedisStore, key: str, worker: int, count: int, expires_at: float) -> int:
    for i in range(count):
        assert store.save(key, Update(set={f"w{worker}-{i}": i}, expires_at=expires_at))
    return count


def test_saves_from_many_processes_all_land(store: RedisStore) -> None:
    key = _create(store, {"base": True})  # the parent's connection pool exists before the fork
    expires_at = _clock.now() + 600
    done = servers.run_in_processes(_save_many, [(store, key, w, 25, expires_at) for w in range(8)])
    assert done == [25] * 8
    record = store.load(key)  # the parent's own connections still work
    assert record is not None
    assert len(record.data) == 8 * 25 + 1
    assert all(record.data[f"w{w}-{i}"] == i for w in range(8) for i in range(25))


# -- corrupt records --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(b"d:a", b"{not json", id="bad-json"),
        pytest.param(b"d:a", b"\xff\xfe", id="not-utf8"),
        pytest.param(b"m:expires", b"soon", id="bad-expiry"),
        pytest.param(b"m:created", b"", id="empty-created"),
    ],
)
def test_corrupt_record_is_absent_and_logged(
    store: RedisStore,
    raw: RawRedis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    field: bytes,
    value: bytes,
) -> None:
    key = _create(store, {"a": 1})
    raw.hset(f"{prefix}{key}", field, value)
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        assert store.load(key) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "wsgisession.security"]
    assert messages and all(key not in m for m in messages)


def test_record_without_metadata_is_absent(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _create(store, {"a": 1})
    raw.hdel(f"{prefix}{key}", b"m:created")
    assert store.load(key) is None


def test_nan_is_refused_before_anything_is_written(store: RedisStore) -> None:
    key = _create(store, {"a": 1})
    with pytest.raises(ValueError, match="not JSON compliant"):
        store.save(key, Update(set={"a": 2, "b": float("nan")}, expires_at=_clock.now() + 60))
    record = store.load(key)
    assert record is not None and record.data == {"a": 1}


# -- prune --------------------------------------------------------------------------------------


def test_prune_removes_clock_expired_and_leaves_other_keys(
    store: RedisStore, raw: RawRedis, prefix: str, clock: Clock
) -> None:
    dead = [_create(store, {"i": i}, ttl=10) for i in range(3)]
    live = [_create(store, {"i": i}, ttl=1000) for i in range(2)]
    raw.set(f"{prefix}not-a-session", b"x")
    raw.hset(f"{prefix}{_key()}", b"m:expires", b"junk")
    clock.advance(11)
    assert store.prune() == 3
    assert all(raw.exists(f"{prefix}{k}") == 0 for k in dead)
    assert all(store.load(k) is not None for k in live)
    assert raw.get(f"{prefix}not-a-session") == b"x"


def test_prune_treats_the_prefix_literally(redis_url: str, raw: RawRedis, clock: Clock) -> None:
    stem = servers.unique_name("glob")
    # Unescaped, the first prefix's SCAN pattern would match the second prefix's keys.
    globby = RedisStore(redis_url, prefix=f"{stem}[x]*:")
    plain = RedisStore(redis_url, prefix=f"{stem}x:")
    try:
        key = _create(plain, {"a": 1}, ttl=10)
        clock.advance(11)
        assert globby.prune() == 0
        assert raw.exists(f"{stem}x:{key}") == 1
        assert plain.prune() == 1
    finally:
        globby.close()
        plain.close()


def test_prune_handles_many_keys(store: RedisStore, clock: Clock) -> None:
    keys = [_create(store, {"i": i}, ttl=10 if i % 2 else 1000) for i in range(2500)]
    clock.advance(11)
    assert store.prune() == 1250
    assert store.load(keys[0]) is not None


# -- construction and URLs --------------------------------------------------------------------


def _kwargs(store: RedisStore) -> dict[str, Any]:
    client: Any = store._client
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    return kwargs


def test_from_url_takes_prefix_and_db() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:6390/3?prefix=app%3Asess%3A")
    try:
        kwargs = _kwargs(store)
        assert store.prefix == "app:sess:"
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 3)
        assert "prefix" not in kwargs
        assert kwargs["socket_timeout"] == 5.0 and kwargs["socket_connect_timeout"] == 5.0
        assert kwargs["health_check_interval"] > 0
        assert "127.0.0.1:6390/3" in repr(store)
    finally:
        store.close()


def test_url_timeouts_override_the_defaults() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:6390/0?socket_timeout=0.25")
    try:
        assert _kwargs(store)["socket_timeout"] == 0.25
    finally:
        store.close()


def test_rediss_and_unix_urls() -> None:
    tls = RedisStore.from_url("rediss://user:pw@redis.example:6380/1")
    sock = RedisStore.from_url("unix:///run/redis.sock?db=2&prefix=u:")
    try:
        client: Any = tls._client
        assert client.connection_pool.connection_class is redis.SSLConnection
        assert "pw" not in repr(tls)
        assert _kwargs(sock)["path"] == "/run/redis.sock" and _kwargs(sock)["db"] == 2
        assert sock.prefix == "u:"
        assert "unix:/run/redis.sock/2" in repr(sock)
    finally:
        tls.close()
        sock.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:6379/0", id="scheme"),
        pytest.param("redis://user:s3cret@127.0.0.1:notaport/0", id="port"),
        pytest.param("redis://user:s3cret@127.0.0.1:6379/notadb", id="db"),
        pytest.param("redis://127.0.0.1:6379/0?socket_timeout=soon", id="option"),
        pytest.param("not a url", id="garbage"),
        pytest.param("redis+cluster://user:s3cret@127.0.0.1:7000/3", id="cluster-db"),
        pytest.param("redis+cluster://user:s3cret@127.0.0.1:port/", id="cluster-port"),
        pytest.param("redis+cluster://127.0.0.1:7000,/", id="cluster-empty-host"),
        pytest.param("redis+cluster://127.0.0.1:7000/?bogus=1", id="cluster-option"),
        pytest.param("redis+cluster://user:s3cret@127.0.0.1:7000/?socket_timeout=soon", id="cluster-timeout"),
        pytest.param("redis+sentinel://user:s3cret@127.0.0.1:26379/", id="sentinel-service"),
        pytest.param("redis+sentinel://127.0.0.1:26379/mymaster/zero", id="sentinel-db"),
    ],
)
def test_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStore.from_url(url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"socket_timeout": 0}, id="zero-timeout"),
        pytest.param({"connect_timeout": float("inf")}, id="inf-timeout"),
        pytest.param({"prefix": b"bytes:"}, id="bytes-prefix"),
    ],
)
def test_bad_options_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisStore("redis://127.0.0.1:6379/0", **kwargs)


def test_bad_client_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        RedisStore(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RedisStore.from_url(None)  # type: ignore[arg-type]


def test_a_client_you_pass_is_used_and_left_open(redis_url: str, prefix: str) -> None:
    client: RawRedis = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client, prefix=prefix)
    try:
        key = _create(store, {"a": "é", "n": [1]})
        record = store.load(key)
        assert record is not None and record.data == {"a": "é", "n": [1]}
        assert store.touch(key, _clock.now() + 60)
        store.close()
        assert client.ping()
    finally:
        client.close()


def test_a_sentinel_url_is_read_without_connecting() -> None:
    from wsgisession.stores import from_url

    store: Any = from_url(
        "redis+sentinel://app:pw%40x@127.0.0.1:26390,[::1]/mymaster/2?prefix=s:&socket_timeout=0.5", create=False
    )
    try:
        assert isinstance(store, RedisStore) and store.prefix == "s:"
        kwargs = _kwargs(store)
        assert (kwargs["db"], kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == (
            2,
            "app",
            "pw@x",
            0.5,
        )
        assert "sentinel service 'mymaster'" in repr(store) and "pw" not in repr(store)
        sentinels = [c.get_connection_kwargs() for c in store._owned[1:]]
        assert [(k["host"], k["port"]) for k in sentinels] == [("127.0.0.1", 26390), ("::1", 26379)]
        assert all(k.get("password") is None for k in sentinels), "the primary's password is not sent to Sentinels"
    finally:
        store.close()


def test_sentinel_client_is_described_by_service() -> None:
    from redis.sentinel import Sentinel

    make: Any = Sentinel  # untyped in redis-py's own annotations
    client = make([("127.0.0.1", 26399)], socket_timeout=0.1).master_for("sessions")
    store = RedisStore(client)  # nothing connects until the first command
    assert "sentinel service 'sessions'" in repr(store)
    store.close()


def test_closed_store_refuses_use(store: RedisStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.load(_key())


# -- failures ----------------------------------------------------------------------------------


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[servers.ThrowawayRedis]:
    with servers.ThrowawayRedis(tmp_path) as server:
        yield server


def test_server_killed_then_restarted(throwaway: servers.ThrowawayRedis) -> None:
    store = RedisStore(throwaway.url, socket_timeout=5.0, connect_timeout=5.0)
    try:
        key = _create(store, {"a": 1})
        assert store.load(key) is not None

        throwaway.kill()
        for call in (lambda: store.load(key), lambda: store.save(key, Update(set={"b": 2}, expires_at=1e10))):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as info:
                call()
            assert time.monotonic() - started < 6
            assert f"127.0.0.1:{throwaway.port}" in str(info.value)
            assert key not in str(info.value)

        throwaway.start()  # same port, empty (no persistence), scripts not loaded
        key = _create(store, {"after": "restart"})
        record = store.load(key)
        assert record is not None and record.data == {"after": "restart"}
        assert store.touch(key, _clock.now() + 60)
    finally:
        store.close()


def test_restart_between_calls_costs_no_error(throwaway: servers.ThrowawayRedis) -> None:
    store = RedisStore(throwaway.url)
    try:
        _create(store, {"a": 1})  # leaves a pooled connection to the old server
        throwaway.kill()
        throwaway.start()
        # The pooled connection is dead: redis-py notices when it hands it out,
        # and a command that fails on it mid-way is retried once on a new one.
        key = _create(store, {"b": 2})
        assert store.load(key) is not None
    finally:
        store.close()


def test_unreachable_server_is_unavailable_fast() -> None:
    port = servers.free_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
            store.save(_key(), Update(set={"a": 1}, expires_at=1e10, created_at=1.0))
        with pytest.raises(StoreUnavailableError):
            store.prune()
        assert time.monotonic() - started < 6
    finally:
        store.close()


def test_server_that_stops_answering_times_out(throwaway: servers.ThrowawayRedis) -> None:
    store = RedisStore(throwaway.url, socket_timeout=0.5)
    try:
        key = _create(store, {"a": 1})
        throwaway.pause()
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError, match=r"within 0\.5s") as info:
            store.load(key)
        assert time.monotonic() - started < 3
        assert key not in str(info.value)
        throwaway.resume()
        record = store.load(key)  # the timed-out connection was dropped, not reused mid-reply
        assert record is not None and record.data == {"a": 1}
    finally:
        store.close()


def test_out_of_memory_is_store_full_and_leaves_the_record(tmp_path: Path) -> None:
    with servers.ThrowawayRedis(tmp_path, "--maxmemory-policy", "noeviction") as server:
        store = RedisStore(server.url)
        raw: RawRedis = redis.Redis.from_url(server.url)
        try:
            key = _create(store, {"a": 1, "b": 2})
            raw.config_set("maxmemory", 1)  # below what the server already uses: every write is refused
            with pytest.raises(StoreFullError, match="out of memory") as info:
                store.save(key, Update(set={"a": "x" * 1000}, expires_at=_clock.now() + 60))
            assert key not in str(info.value)
            record = store.load(key)
            assert record is not None and record.data == {"a": 1, "b": 2}
        finally:
            raw.close()
            store.close()


def test_a_sentinel_url_finds_the_primary(throwaway: servers.ThrowawayRedis, tmp_path: Path) -> None:
    port = servers.free_port()
    config = tmp_path / "sentinel.conf"  # a Sentinel rewrites its configuration: its own file
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor sessions 127.0.0.1 {throwaway.port} 1\n"
    )
    sentinel = subprocess.Popen(
        [throwaway.binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    probe: RawRedis = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "sessions"):
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "the Sentinel did not answer"
            time.sleep(0.05)
        store = RedisStore.from_url(f"redis+sentinel://127.0.0.1:{port}/sessions/3?prefix=s:")
        try:
            key = _bind(store, "alice")
            record = store.load(key)
            assert record is not None and record.user_id == "alice"
            assert [k for k, _ in store.sessions_of("alice")] == [key] and store.count() == 1
        finally:
            store.close()
        raw: RawRedis = redis.Redis(port=throwaway.port, db=3)
        assert raw.exists(f"s:{key}") == 1, "written to the primary the Sentinel named, in database 3"
        raw.close()
    finally:
        probe.close()
        sentinel.kill()
        sentinel.wait(timeout=10)


def test_wrong_type_under_our_key_is_a_store_error(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _key()
    raw.set(f"{prefix}{key}", b"a string, not a hash")
    with pytest.raises(StoreError) as info:
        store.save(key, Update(set={"a": 1}, expires_at=_clock.now() + 60, created_at=_clock.now()))
    assert key not in str(info.value)
    assert raw.get(f"{prefix}{key}") == b"a string, not a hash"


# -- the user index ----------------------------------------------------------------------------


def _bind(store: RedisStore, user: str, ttl: float = 600, key: str | None = None) -> str:
    key = key or _key()
    now = _clock.now()
    assert store.save(key, Update(set={"u": user}, expires_at=now + ttl, created_at=now, user_id=user))
    return key


def _user_set(prefix: str, user: str) -> str:
    return f"{prefix}u:{hashlib.sha256(user.encode()).hexdigest()}"


def test_binding_is_a_hash_field_and_a_set_member(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _bind(store, "zoë ☃")
    assert raw.hget(f"{prefix}{key}", b"m:user") == "zoë ☃".encode()
    assert raw.smembers(_user_set(prefix, "zoë ☃")) == {key.encode()}
    record = store.load(key)
    assert record is not None and record.user_id == "zoë ☃" and record.data == {"u": "zoë ☃"}
    anonymous = _create(store, {"a": 1})
    assert raw.hget(f"{prefix}{anonymous}", b"m:user") is None
    assert store.index_size() == 1


def test_user_set_outlives_its_sessions(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _bind(store, "alice", ttl=100)
    user_set = _user_set(prefix, "alice")
    assert raw.pttl(user_set) >= raw.pttl(f"{prefix}{key}") > 98_000
    # A later save or touch that outlives the set extends it; a shorter one never shortens it.
    assert store.save(key, Update(set={"x": 1}, expires_at=_clock.now() + 5_000))
    assert raw.pttl(user_set) >= raw.pttl(f"{prefix}{key}") > 4_998_000
    assert store.touch(key, _clock.now() + 20_000)
    assert raw.pttl(user_set) >= raw.pttl(f"{prefix}{key}") > 19_998_000
    longest = raw.pttl(user_set)
    _bind(store, "alice", ttl=10)
    assert raw.pttl(user_set) > longest - 1_000


def test_index_set_ttl_is_extended_once_per_ttl_not_per_request(
    store: RedisStore, raw: RawRedis, prefix: str, clock: Clock
) -> None:
    key = _bind(store, "alice", ttl=100)  # the set is made to live 200 s
    user_set = _user_set(prefix, "alice")
    raw.pexpire(user_set, 150_000)  # lower it, to see whether a touch sets it again
    clock.advance(50)
    assert store.touch(key, clock() + 100)  # within the 200 s the set was given: left alone
    assert raw.pttl(user_set) <= 150_000
    clock.advance(90)
    assert store.touch(key, clock() + 100)  # beyond them: extended, to twice the TTL again
    assert 150_000 < raw.pttl(user_set) <= 200_000


def test_rebinding_leaves_nothing_in_the_old_set(store: RedisStore, raw: RawRedis, prefix: str, clock: Clock) -> None:
    key = _bind(store, "alice")
    assert store.save(key, Update(expires_at=clock() + 600, user_id="bob"))
    assert raw.exists(_user_set(prefix, "alice")) == 0
    assert raw.smembers(_user_set(prefix, "bob")) == {key.encode()}
    store.prune()
    assert store.index_size() == 1
    # Re-creating an expired record drops its old binding too.
    clock.advance(700)
    assert store.save(key, Update(set={"a": 1}, expires_at=clock() + 60, created_at=clock()))
    record = store.load(key)
    assert record is not None and record.user_id is None and record.data == {"a": 1}
    assert raw.exists(_user_set(prefix, "bob")) == 0


def test_destroy_removes_the_member(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    key = _bind(store, "alice")
    other = _bind(store, "alice")
    store.destroy(key)
    assert raw.smembers(_user_set(prefix, "alice")) == {other.encode()}
    store.destroy(other)
    assert raw.exists(_user_set(prefix, "alice")) == 0


def test_dropped_or_dead_on_arrival_binding_leaves_no_member(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    gone = _key()
    assert store.save(gone, Update(set={"a": 1}, expires_at=_clock.now() + 60, user_id="alice")) is False
    now = _clock.now()
    assert store.save(_key(), Update(set={"a": 1}, expires_at=now - 1, created_at=now, user_id="alice"))
    assert raw.exists(_user_set(prefix, "alice")) == 0
    assert store.sessions_of("alice") == []


def test_stale_members_are_cleaned_and_never_destroy_another_users_session(
    store: RedisStore, raw: RawRedis, prefix: str, clock: Clock
) -> None:
    alice = _bind(store, "alice")
    bobs = _bind(store, "bob")
    expired = _bind(store, "alice", ttl=10)
    # What a crash between two commands could leave behind: members whose
    # session is missing or bound to someone else, and a member that is no key at all.
    raw.sadd(_user_set(prefix, "alice"), bobs, _key(), "not-a-key")
    clock.advance(11)
    assert [k for k, _ in store.sessions_of("alice")] == [alice]
    assert raw.smembers(_user_set(prefix, "alice")) == {alice.encode(), b"not-a-key"}
    raw.sadd(_user_set(prefix, "alice"), bobs, expired)
    assert store.destroy_user("alice") == 1
    assert store.load(bobs) is not None, "a stale member must not end someone else's session"
    assert raw.exists(_user_set(prefix, "alice")) in (0, 1)
    raw.sadd(_user_set(prefix, "bob"), _key(), "junk")
    assert store.prune() == 0  # index entries are not sessions
    assert raw.smembers(_user_set(prefix, "bob")) == {bobs.encode()}
    assert store.index_size() == 1


def test_cleaning_a_member_puts_back_one_bound_meanwhile(store: RedisStore, raw: RawRedis, prefix: str) -> None:
    # A cleaner that judged a member stale just before a save bound it must not lose it:
    # it removes first, then re-reads, and puts back what is bound by then.
    key = _bind(store, "alice")
    store._unindex(hashlib.sha256(b"alice").hexdigest(), [key])
    assert raw.smembers(_user_set(prefix, "alice")) == {key.encode()}
    assert raw.pttl(_user_set(prefix, "alice")) >= raw.pttl(f"{prefix}{key}")


def test_prune_and_count_tell_user_sets_from_sessions(
    store: RedisStore, raw: RawRedis, prefix: str, clock: Clock
) -> None:
    for i in range(3):
        _bind(store, f"user{i}", ttl=10)
    _bind(store, "user0", ttl=1000)
    _create(store, {"a": 1}, ttl=1000)
    raw.set(f"{prefix}u:{'0' * 64}", b"not a set")  # shaped like a user set, but someone else's key
    assert store.count() == 5
    assert store.index_size() == 4
    clock.advance(11)
    assert store.count() == 2
    assert store.prune() == 3
    assert store.index_size() == 1
    assert raw.get(f"{prefix}u:{'0' * 64}") == b"not a set"
    assert {k.decode() for k in raw.scan_iter(match=f"{prefix}u:*")} == {
        _user_set(prefix, "user0"),
        f"{prefix}u:{'0' * 64}",
    }


def test_user_index_with_a_decoding_client(redis_url: str, raw: RawRedis, prefix: str) -> None:
    client: RawRedis = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client, prefix=prefix)
    try:
        key = _bind(store, "zoë")
        other = _bind(store, "zoë")
        raw.hset(f"{prefix}{other}", b"d:bad", b"\xff")  # not UTF-8: this client cannot even read the reply
        found = store.sessions_of("zoë")
        assert [k for k, _ in found] == [key] and found[0][1].user_id == "zoë"
        assert store.count() == 2 and store.index_size() == 2
        assert store.destroy_user("zoë") == 2
        assert store.prune() == 0
    finally:
        store.close()
        client.close()


def test_user_ids_that_are_not_text_are_refused(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        _bind(store, "\ud800")
    with pytest.raises(TypeError):
        store.sessions_of(42)  # type: ignore[arg-type]


# -- connections, commands, timeouts ------------------------------------------------------------


def _client_ids(raw: RawRedis, name: str) -> set[int]:
    return {int(c["id"]) for c in raw.client_list() if c.get("name") == name}


def _within(seconds: float, check: Callable[[], bool]) -> bool:
    """Whether *check* comes true within *seconds*, polled: Redis drops a closed connection when it gets to it."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _calls(raw: RawRedis) -> dict[str, int]:
    """Commands the server ran since its stats were reset, by name; a script's own calls count too."""
    stats = raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
    return {name: n for name, n in calls.items() if name not in ("config|resetstat", "info")}


def test_each_request_is_one_command(throwaway: servers.ThrowawayRedis) -> None:
    store = RedisStore(throwaway.url)
    raw: RawRedis = redis.Redis.from_url(throwaway.url)
    try:
        key = _create(store, {"a": 1})  # connects, and loads the scripts it uses
        assert store.touch(key, _clock.now() + 60)
        bound = _bind(store, "alice")
        raw.config_resetstat()
        for _ in range(10):
            assert store.load(key) is not None
        assert _calls(raw) == {"hgetall": 10}, "a load is one HGETALL"
        raw.config_resetstat()
        for i in range(10):
            assert store.save(key, Update(set={"i": i}, delete=frozenset({"a"}), expires_at=_clock.now() + 60))
            assert store.touch(key, _clock.now() + 60)
        # One EVALSHA each, whose script reads the metadata once and writes every field at once.
        assert _calls(raw) == {"evalsha": 20, "hmget": 20, "hdel": 10, "hset": 20, "pexpire": 20}
        raw.config_resetstat()
        store.save(_key(), Update(set={"new": 1}, expires_at=_clock.now() + 60, created_at=_clock.now()))
        assert _calls(raw) == {"evalsha": 1, "hmget": 1, "del": 1, "hset": 2, "pexpire": 1}
        raw.config_resetstat()
        for i in range(10):
            assert store.save(bound, Update(set={"i": i}, expires_at=_clock.now() + 600))
        assert _calls(raw) == {"evalsha": 10, "hmget": 10, "hset": 10, "pexpire": 10}, "no index command"
        raw.config_resetstat()
        _bind(store, "alice")
        calls = _calls(raw)
        assert calls["evalsha"] == 2 and calls["sadd"] == 1, "a login: its user's set first, then the save"
    finally:
        raw.close()
        store.close()


def test_threads_share_the_store(redis_url: str, raw: RawRedis, prefix: str) -> None:
    name = servers.unique_name("wsgisession-threads")
    store = RedisStore(f"{redis_url}?client_name={name}", prefix=prefix)
    failures: list[BaseException] = []
    start = threading.Barrier(12)

    def worker(n: int) -> None:
        try:
            start.wait()
            key = _create(store, {"worker": n})
            for i in range(100):
                assert store.save(key, Update(set={"i": i, "blob": f"{n}-{i}" * 50}, expires_at=_clock.now() + 60))
                record = store.load(key)
                assert record is not None and record.data == {"worker": n, "i": i, "blob": f"{n}-{i}" * 50}
        except BaseException as exc:  # reported below, with the thread's own traceback
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]
    assert 1 < len(_client_ids(raw, name)) <= 12, "a connection for each thread at once, at most"
    store.close()


def test_a_pool_you_share_is_never_held(redis_url: str, prefix: str) -> None:
    # The store's single-connection clients are for pools of its own: on a
    # pool of one connection, one of them would leave nothing for the rest.
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=1, timeout=1)
    client: RawRedis = redis.Redis(connection_pool=pool)
    store = RedisStore(client, prefix=prefix)
    try:
        key = _bind(store, "alice")
        assert store.load(key) is not None and client.ping()
        assert [k for k, _ in store.sessions_of("alice")] == [key] and store.count() == 1
    finally:
        store.close()
        client.close()


def test_connection_killed_between_calls_is_replaced(redis_url: str, raw: RawRedis, prefix: str) -> None:
    name = servers.unique_name("wsgisession-conn")
    store = RedisStore(f"{redis_url}?client_name={name}", prefix=prefix)
    try:
        key = _create(store, {"a": 1})
        before = _client_ids(raw, name)
        assert len(before) == 1
        for client_id in before:
            raw.client_kill_filter(_id=client_id)
        record = store.load(key)  # on a dead socket: retried once, on a new connection
        assert record is not None and record.data == {"a": 1}

        def replaced() -> bool:
            after = _client_ids(raw, name)
            return len(after) == 1 and not after & before

        assert _within(5, replaced), _client_ids(raw, name)
        store.close()
        assert _within(5, lambda: _client_ids(raw, name) == set()), _client_ids(raw, name)
    finally:
        store.close()


def test_script_flushed_between_calls_is_loaded_again(store: RedisStore, raw: RawRedis) -> None:
    key = _create(store, {"a": 1})
    raw.script_flush()
    assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 60))
    record = store.load(key)
    assert record is not None and record.data == {"a": 1, "b": 2}


def _load_in_child(store: RedisStore, key: str) -> Any:
    record = store.load(key)
    return None if record is None else record.data


def test_forked_children_make_their_own_connections(redis_url: str, raw: RawRedis, prefix: str) -> None:
    name = servers.unique_name("wsgisession-fork")
    store = RedisStore(f"{redis_url}?client_name={name}", prefix=prefix)
    try:
        key = _create(store, {"a": 1})
        parent = _client_ids(raw, name)
        assert servers.run_in_processes(_load_in_child, [(store, key)] * 3) == [{"a": 1}] * 3
        record = store.load(key)
        assert record is not None and record.data == {"a": 1}
        # The children's connections close as they exit; the parent's stays as it was.
        assert _within(5, lambda: _client_ids(raw, name) == parent), (_client_ids(raw, name), parent)
    finally:
        store.close()


def test_a_client_without_timeouts_gets_the_stores(throwaway: servers.ThrowawayRedis) -> None:
    # As redis-py 5 makes a client by default: no timeout, no retry. A Redis
    # that stops answering would hang every request.
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client: RawRedis = redis.Redis(
        port=throwaway.port, socket_timeout=None, socket_connect_timeout=None, retry=Retry(NoBackoff(), 0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = RedisStore(client, socket_timeout=0.5, connect_timeout=0.5)
    try:
        key = _create(store, {"a": 1})
        throwaway.pause()
        resume = threading.Timer(8, throwaway.resume)  # an unbounded wait ends here, and the test fails
        resume.start()
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError, match=r"within 0\.5s"):
            store.load(key)
        assert time.monotonic() - started < 2
        resume.cancel()
        throwaway.resume()
        assert store.load(key) is not None
    finally:
        store.close()
        client.close()


def test_a_client_with_timeouts_keeps_them(redis_url: str) -> None:
    client: RawRedis = redis.Redis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.75)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RedisStore(client, socket_timeout=9, connect_timeout=9).close()
    kwargs = client.get_connection_kwargs()
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.75)
    client.close()


def test_a_client_whose_timeouts_cannot_be_given_is_warned_about(redis_url: str) -> None:
    client: RawRedis = redis.Redis.from_url(redis_url, socket_timeout=None, single_connection_client=True)
    try:
        with pytest.warns(RuntimeWarning, match="no socket_timeout and no socket_connect_timeout"):
            RedisStore(client)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            RedisStore(client, socket_timeout=None, connect_timeout=None)  # asked for no timeouts: no warning
    finally:
        client.close()


def test_the_clock_parameter_is_the_stores_time(redis_url: str, raw: RawRedis, prefix: str) -> None:
    now = [_clock.now() + 10_000]
    store = RedisStore(redis_url, prefix=prefix, clock=lambda: now[0])
    try:
        key = _key()
        assert store.save(key, Update(set={"a": 1}, expires_at=now[0] + 100, created_at=now[0]))
        assert 98_000 < raw.pttl(f"{prefix}{key}") <= 100_000, "the TTL counts from the store's clock"
        now[0] += 101
        assert store.load(key) is None and store.count() == 0
        assert store.prune() == 1
    finally:
        store.close()


def test_timed_out_reply_is_never_read_as_the_next_one(throwaway: servers.ThrowawayRedis) -> None:
    store = RedisStore(throwaway.url, socket_timeout=0.5)
    raw: RawRedis = redis.Redis.from_url(throwaway.url)
    try:
        first = _create(store, {"first": 1})
        second = _create(store, {"second": 2})
        raw.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        with pytest.raises(StoreTimeoutError):
            store.load(first)  # its reply comes once the pause ends, on a socket that is gone
        time.sleep(0.7)
        record = store.load(second)
        assert record is not None and record.data == {"second": 2}
        raw.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        with pytest.raises(StoreTimeoutError):
            store.save(first, Update(set={"late": True}, expires_at=_clock.now() + 60))
        time.sleep(0.7)
        assert store.touch(second, _clock.now() + 60)
        record = store.load(first)
        assert record is not None and record.data in ({"first": 1}, {"first": 1, "late": True})
    finally:
        raw.close()
        store.close()


# -- rename (regenerate): three scripts of one key each -------------------------------------------


@pytest.fixture
def other(redis_url: str, prefix: str) -> Iterator[RedisStore]:
    """A second store on the same keys: another process's requests."""
    s = RedisStore(redis_url, prefix=prefix)
    yield s
    s.close()


def _rename(store: RedisStore, old: str, new: str, **changes: Any) -> bool:
    return store.save(new, Update(set={"x": 1}, expires_at=_clock.now() + 60, replaces=old, **changes))


def _at(monkeypatch: pytest.MonkeyPatch, store: RedisStore, step: str, action: Callable[[], None]) -> None:
    """Run *action* once in the store's next rename: after step 1 ("marked") or after step 2 ("created")."""
    name = "_move_out_script" if step == "marked" else "_move_done_script"
    script = getattr(store, name)
    fired: list[bool] = []

    def hooked(keys: list[str], args: list[Any]) -> Any:
        if step == "created" and not fired:
            fired.append(True)
            action()
        result = script(keys, args)
        if step == "marked" and not fired:
            fired.append(True)
            action()
        return result

    monkeypatch.setattr(store, name, hooked)


def _members(raw: RawRedis, prefix: str, user: str) -> set[str]:
    return {m.decode() for m in raw.smembers(_user_set(prefix, user))}


def test_a_marked_record_is_gone_to_all_but_its_rename(
    store: RedisStore,
    other: RedisStore,
    raw: RawRedis,
    prefix: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client_path = RedisStore(
        redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(redis_url)), prefix=prefix
    )
    old, new = _bind(store, "alice"), _key()
    name = f"{prefix}{old}"

    def look() -> None:
        assert raw.hget(name, "m:moved") == new.encode()
        assert 0 < raw.pttl(name) <= 60_000, "a rename that dies here leaves the record for a minute at most"
        assert other.load(old) is None and client_path.load(old) is None
        assert other.save(old, Update(set={"late": 1}, expires_at=_clock.now() + 60)) is False
        assert other.touch(old, _clock.now() + 60) is False
        assert other.sessions_of("alice") == [] and other.count() == 0
        assert other.prune() == 0 and raw.exists(name) == 1
        assert _members(raw, prefix, "alice") == {old}, "still indexed, for destroy_user() to find"

    _at(monkeypatch, store, "marked", look)
    assert _rename(store, old, new) is True
    record = store.load(new)
    assert record is not None and record.data == {"u": "alice", "x": 1} and record.user_id == "alice"
    # What is left of the old record only says where it went, and goes soon.
    assert raw.hgetall(name) == {b"m:moved": new.encode(), b"m:user": b"alice"}
    assert 0 < raw.pttl(name) <= 60_000
    assert _members(raw, prefix, "alice") == {new}
    assert other.load(old) is None and other.count() == 1
    assert other.save(old, Update(set={"late": 1}, expires_at=_clock.now() + 60, created_at=_clock.now())) is False
    other.destroy(old)  # after the rename: only the tombstone goes
    assert store.load(new) is not None
    client_path.close()


@pytest.mark.parametrize("rival", ["destroy", "destroy_user", "rename"])
@pytest.mark.parametrize("step", ["marked", "created"])
def test_a_rival_between_the_steps_of_a_rename(
    store: RedisStore,
    other: RedisStore,
    raw: RawRedis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    rival: str,
) -> None:
    old, new, rival_new = _bind(store, "alice"), _key(), _key()
    results: dict[str, Any] = {}

    def act() -> None:
        if rival == "destroy":
            other.destroy(old)
        elif rival == "destroy_user":
            results["rival"] = other.destroy_user("alice")
        else:
            results["rival"] = _rename(other, old, rival_new)

    _at(monkeypatch, store, step, act)
    renamed = _rename(store, old, new)
    assert other.load(old) is None and other.load(rival_new) is None
    if rival == "rename":
        assert renamed is True and results["rival"] is False, "exactly one of two renames wins"
        assert other.load(new) is not None
        assert _members(raw, prefix, "alice") == {new}
    else:
        assert renamed is False, "destroy wins"
        assert raw.exists(f"{prefix}{new}") == 0 and raw.exists(f"{prefix}{old}") == 0
        assert _members(raw, prefix, "alice") == set()
        if rival == "destroy_user":
            assert results["rival"] == 1, "one session, counted once"


@pytest.mark.parametrize("rebind", [None, "bob"])
def test_destroy_user_that_read_the_set_before_the_rename_follows_it(
    store: RedisStore,
    other: RedisStore,
    raw: RawRedis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    rebind: str | None,
) -> None:
    # destroy_user() reads {OLD}, then the whole rename runs, then it reaches
    # OLD: the tombstone leads it to NEW, which it ends if NEW is still alice's.
    old, new = _bind(store, "alice"), _key()
    smembers = other._client.smembers
    renamed: list[bool] = []

    def read_then_rename(name: Any) -> Any:
        members = smembers(name)
        renamed.append(_rename(store, old, new, user_id=rebind))
        return members

    monkeypatch.setattr(other._client, "smembers", read_then_rename)
    ended = other.destroy_user("alice")
    monkeypatch.undo()
    assert renamed == [True]
    assert store.load(old) is None
    if rebind is None:
        assert ended == 1 and store.load(new) is None
    else:
        record = store.load(new)
        assert ended == 0 and record is not None and record.user_id == "bob"
        assert [k for k, _ in store.sessions_of("bob")] == [new]
    assert _members(raw, prefix, "alice") == set()


@pytest.mark.parametrize("whom", ["alice", "bob"])
def test_destroy_user_while_a_rename_rebinds(
    store: RedisStore, other: RedisStore, raw: RawRedis, prefix: str, monkeypatch: pytest.MonkeyPatch, whom: str
) -> None:
    old, new = _bind(store, "alice"), _key()
    ended: list[int] = []
    _at(monkeypatch, store, "created", lambda: ended.append(other.destroy_user(whom)))
    renamed = _rename(store, old, new, user_id="bob")
    assert ended == [1]
    assert store.load(old) is None and store.load(new) is None
    # alice's logout ended the old record: the rename loses. bob's ended the
    # new one: the rename had landed first, and True is what it returns.
    assert renamed is (whom == "bob")
    assert _members(raw, prefix, "alice") == set() and _members(raw, prefix, "bob") == set()


def test_each_step_of_a_rename_is_safe_to_retry(
    store: RedisStore, raw: RawRedis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _bind(store, "alice"), _key()

    def twice(script: Any) -> Callable[[list[str], list[Any]], Any]:
        # What a retry on a fresh connection does when the first reply was lost.
        return lambda keys, args: (script(keys, args), script(keys, args))[1]

    for name in ("_move_out_script", "_move_done_script", "_move_undo_script"):
        monkeypatch.setattr(store, name, twice(getattr(store, name)))
    assert _rename(store, old, new) is True
    monkeypatch.undo()
    record = store.load(new)
    assert record is not None and record.data == {"u": "alice", "x": 1}
    assert store.load(old) is None
    assert _members(raw, prefix, "alice") == {new}


def test_a_rename_that_fails_before_its_last_step_restores_the_old_record(
    store: RedisStore, raw: RawRedis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _bind(store, "alice"), _key()

    def lose_redis() -> None:
        raise StoreUnavailableError("Redis went away")

    _at(monkeypatch, store, "created", lose_redis)
    with pytest.raises(StoreUnavailableError):
        _rename(store, old, new)
    monkeypatch.undo()
    assert raw.exists(f"{prefix}{new}") == 0
    record = store.load(old)
    assert record is not None and record.data == {"u": "alice"}
    assert raw.pttl(f"{prefix}{old}") > 590_000, "its own TTL is back"
    assert _members(raw, prefix, "alice") == {old}
    assert store.save(old, Update(set={"b": 2}, expires_at=_clock.now() + 60))


def test_a_rename_redis_has_no_memory_for_leaves_the_old_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with servers.ThrowawayRedis(tmp_path, "--maxmemory-policy", "noeviction") as server:
        store = RedisStore(server.url)
        raw: RawRedis = redis.Redis.from_url(server.url)
        try:
            old, new = _bind(store, "alice"), _key()
            # Step 1 lands; then every write that allocates is refused.
            _at(monkeypatch, store, "marked", lambda: raw.config_set("maxmemory", 1))
            with pytest.raises(StoreFullError, match="out of memory"):
                _rename(store, old, new)
            raw.config_set("maxmemory", 0)
            assert raw.exists(new) == 0
            record = store.load(old)
            assert record is not None and record.data == {"u": "alice"}
        finally:
            raw.close()
            store.close()


def test_a_value_that_cannot_be_stored_is_refused_before_the_old_record_is_marked(
    store: RedisStore, raw: RawRedis, prefix: str
) -> None:
    old = _bind(store, "alice")
    with pytest.raises(ValueError, match="not JSON compliant"):
        store.save(_key(), Update(set={"bad": float("nan")}, expires_at=_clock.now() + 60, replaces=old))
    assert raw.hexists(f"{prefix}{old}", "m:moved") == 0
    assert store.load(old) is not None
