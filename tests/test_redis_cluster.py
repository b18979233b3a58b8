"""RedisStore on a real six-node Redis Cluster: the contract, the lifecycle, the command line, scale-out defects.

The cluster (tests/redis_cluster.py) is started once for the test session.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests import servers
from tests.redis_cluster import LoopbackCluster, redis_cluster_fixture  # noqa: F401 (the redis_cluster fixture)
from wsgisession.errors import StoreError, StoreUnavailableError
from wsgisession.ids import new_id, store_key
from wsgisession.session import _handle
from wsgisession.stores import from_url
from wsgisession.stores.base import Store, Update
from wsgisession.stores.redis import RedisStore
from wsgisession.testing import SessionLifecycle, StoreContract

ROOT = Path(__file__).resolve().parent.parent
CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m wsgisession ARGS``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "wsgisession", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _delete_prefix(cluster: LoopbackCluster, prefix: str) -> None:
    client = cluster.client()
    try:
        for name in list(client.scan_iter(match=prefix + "*", count=1000)):  # every primary
            client.delete(name)
    finally:
        client.close()


@pytest.fixture
def prefix(redis_cluster: LoopbackCluster) -> Iterator[str]:
    """A key prefix of this test's own; every key under it, on every primary, is deleted afterwards."""
    p = servers.unique_name("wsgisession-cluster") + ":"
    yield p
    _delete_prefix(redis_cluster, p)


@pytest.fixture
def client(redis_cluster: LoopbackCluster) -> Iterator[Any]:
    """A redis-py RedisCluster client of the test's own, to look at what the store wrote."""
    c = redis_cluster.client()
    yield c
    c.close()


@pytest.fixture
def store(redis_cluster: LoopbackCluster, prefix: str) -> Iterator[RedisStore]:
    s = RedisStore.from_url(f"{redis_cluster.url}?prefix={prefix}")
    yield s
    s.close()


def _key() -> str:
    return store_key(new_id())


def _bind(store: RedisStore, user: str, ttl: float = 600, **data: Any) -> str:
    key = _key()
    now = time.time()
    assert store.save(key, Update(set={"u": user, **data}, expires_at=now + ttl, created_at=now, user_id=user))
    return key


def _user_set(prefix: str, user: str) -> str:
    return f"{prefix}u:{hashlib.sha256(user.encode()).hexdigest()}"


def _primary_of(client: Any, name: str) -> int:
    port: int = client.get_node_from_key(name).port
    return port


# -- the contract and the lifecycle, on the cluster --------------------------------------------------


class TestRedisClusterContract(StoreContract):
    #: Fewer than on one server: every login is two commands on different nodes.
    user_churn = 2_000

    @pytest.fixture
    def store(self, redis_cluster: LoopbackCluster, prefix: str) -> Iterator[RedisStore]:
        s = RedisStore.from_url(f"{redis_cluster.url}?prefix={prefix}")
        yield s
        s.close()


def test_the_lifecycle_holds_on_the_cluster(redis_cluster: LoopbackCluster) -> None:
    class Lifecycle(SessionLifecycle):
        def make_store(self) -> Store:
            self.prefix = servers.unique_name("wsgisession-lifecycle") + ":"
            return RedisStore.from_url(f"{redis_cluster.url}?prefix={self.prefix}")

        def release_store(self, store: Store) -> None:
            store.close()
            _delete_prefix(redis_cluster, self.prefix)

    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=100 if CI else 15,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# -- every primary -----------------------------------------------------------------------------------


def test_sessions_land_on_every_primary_and_are_all_seen(
    redis_cluster: LoopbackCluster, store: RedisStore, client: Any, prefix: str
) -> None:
    now = time.time()
    keys = [_key() for _ in range(30)]
    for i, key in enumerate(keys):
        ttl = 10 if i % 3 == 0 else 600
        assert store.save(key, Update(set={"i": i}, expires_at=now + ttl, created_at=now, user_id="carol"))
    homes = {_primary_of(client, prefix + key) for key in keys}
    assert homes == set(redis_cluster.primary_ports()), "the test's sessions live on all three primaries"
    assert store.count() == 30 and store.index_size() == 30
    assert len(store.sessions_of("carol")) == 30
    later = RedisStore.from_url(f"{redis_cluster.url}?prefix={prefix}", create=False)
    later._clock = lambda: now + 11  # the ten short ones have expired by this store's clock
    try:
        assert later.count() == 20
        assert later.prune() == 10
        assert later.index_size() == 20
        assert later.destroy_user("carol") == 20
        assert later.count() == 0 and store.index_size() == 0
    finally:
        later.close()


def test_close_closes_the_connections_to_every_node(redis_cluster: LoopbackCluster, client: Any, prefix: str) -> None:
    from redis.cluster import RedisCluster

    name = servers.unique_name("wsgisession-close")

    def connections() -> int:
        per_node = client.client_list(target_nodes=RedisCluster.ALL_NODES)
        return sum(1 for clients in per_node.values() for c in clients if c.get("name") == name)

    store = RedisStore.from_url(f"{redis_cluster.url}?prefix={prefix}&client_name={name}")
    assert store.count() == 0 and store.load(_key()) is None
    assert connections() >= 3, "one to each primary, at least"
    store.close()
    deadline = time.monotonic() + 5  # each node drops a closed connection when it gets to it
    while connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert connections() == 0


def test_a_rename_across_nodes(store: RedisStore, client: Any, prefix: str) -> None:
    old = _bind(store, "dave", cart=[1])
    new = next(k for k in iter(_key, None) if _primary_of(client, prefix + k) != _primary_of(client, prefix + old))
    assert store.save(new, Update(set={"x": 1}, expires_at=time.time() + 60, replaces=old))
    record = store.load(new)
    assert record is not None and record.data == {"u": "dave", "cart": [1], "x": 1} and record.user_id == "dave"
    assert store.load(old) is None
    assert [k for k, _ in store.sessions_of("dave")] == [new]
    assert store.destroy_user("dave") == 1


# -- the command line against the cluster ----------------------------------------------------------


def test_the_command_line_on_a_cluster_url(redis_cluster: LoopbackCluster, store: RedisStore, prefix: str) -> None:
    url = f"{redis_cluster.url}?prefix={prefix}"
    alice = [_bind(store, "alice", _user_agent=f"Browser {i}") for i in range(3)]
    bob = _bind(store, "bob")
    now = time.time()
    for _ in range(4):  # expired by their recorded time, not yet by Redis's TTL
        key = _key()
        store.save(key, Update(set={}, expires_at=now + 600, created_at=now))
        store._client.hset(prefix + key, "m:expires", repr(now - 1))

    counted = cli("count", url)
    assert (counted.returncode, counted.stdout.strip()) == (0, "4"), counted.stderr
    listing = cli("list", url, "--user", "alice")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert lines[0].startswith("handle") and len(lines) == 4
    assert {line.split()[0] for line in lines[1:]} == {_handle(k) for k in alice}
    assert "Browser 2" in listing.stdout and not any(k in listing.stdout for k in alice)
    pruned = cli("prune", url, "--batch-size", "2")
    assert (pruned.returncode, pruned.stdout.strip()) == (0, "removed 4 expired sessions"), pruned.stderr
    ended = cli("end", url, "--user", "alice")
    assert (ended.returncode, ended.stdout.strip()) == (0, "ended 3 sessions of user 'alice'"), ended.stderr
    assert store.sessions_of("alice") == [] and store.load(bob) is not None
    assert cli("count", url).stdout.strip() == "1"


def test_an_unreachable_cluster_is_one_line_and_exit_2() -> None:
    port = servers.free_port()
    result = cli("count", f"redis+cluster://127.0.0.1:{port}/")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    with pytest.raises(StoreUnavailableError):
        from_url(f"redis+cluster://127.0.0.1:{port}/")


# -- scale-out defects, each reproduced first ----------------------------------------------------


def test_prune_through_one_node_never_unindexes_live_sessions(
    redis_cluster: LoopbackCluster, store: RedisStore, client: Any, prefix: str
) -> None:
    keys = [_bind(store, "alice") for _ in range(24)]
    # The node that holds alice's set: its SCAN finds the set, and most of its
    # members live on the other nodes, whose replies to it are MOVED errors.
    # Those once read as "not bound": prune said it was done and had stripped
    # them from her index, so a later destroy_user() left them logged in.
    port = _primary_of(client, _user_set(prefix, "alice"))
    result = cli("prune", redis_cluster.node_url(port, prefix))
    assert result.returncode == 1 and "redis+cluster://" in result.stderr, result.stderr
    assert store.destroy_user("alice") == len(keys), "every session of alice's was still in her index"
    assert all(store.load(k) is None for k in keys)


def test_count_through_one_node_is_refused_not_that_nodes_share(
    redis_cluster: LoopbackCluster, store: RedisStore, prefix: str
) -> None:
    for _ in range(30):
        _bind(store, "bob")
    for port in redis_cluster.primary_ports():
        result = cli("count", redis_cluster.node_url(port, prefix))
        assert result.returncode == 1 and result.stdout == "", f"a node's share passed for the total: {result.stdout}"
        assert "one node of a Redis Cluster" in result.stderr and "redis+cluster://" in result.stderr
    assert cli("count", f"{redis_cluster.url}?prefix={prefix}").stdout.strip() == "30"


def test_a_command_redirected_to_another_node_is_an_error_that_says_why(
    redis_cluster: LoopbackCluster, store: RedisStore, client: Any, prefix: str
) -> None:
    key = _bind(store, "erin")
    home = _primary_of(client, prefix + key)
    elsewhere = next(p for p in redis_cluster.primary_ports() if p != home)
    one_node = RedisStore(redis_cluster.node_url(elsewhere, prefix))
    try:
        with pytest.raises(StoreError, match=r"one node of a Redis Cluster.*redis\+cluster://") as info:
            one_node.load(key)
        assert key not in str(info.value)
        with pytest.raises(StoreError, match="one node of a Redis Cluster"):
            one_node.sessions_of("erin")
        with pytest.raises(StoreError, match="one node of a Redis Cluster"):
            one_node.destroy_user("erin")
    finally:
        one_node.close()
    assert [k for k, _ in store.sessions_of("erin")] == [key], "nothing was unindexed on the way"


def test_a_cluster_client_without_timeouts_is_warned_about(redis_cluster: LoopbackCluster) -> None:
    # Its nodes are connected as it is made: the store cannot give their connections timeouts.
    bare = redis_cluster.client(socket_timeout=None, socket_connect_timeout=None)
    timed = redis_cluster.client(socket_timeout=2.0)
    try:
        with pytest.warns(RuntimeWarning, match="no socket_timeout and no socket_connect_timeout"):
            RedisStore(bare).close()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            RedisStore(timed).close()
            with contextlib.closing(RedisStore.from_url(redis_cluster.url)) as made:
                assert made._client.get_connection_kwargs()["socket_timeout"] == 5.0
    finally:
        bare.close()
        timed.close()
