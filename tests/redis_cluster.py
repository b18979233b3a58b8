"""A real Redis Cluster on loopback: six redis-server processes, three primaries with a replica each.

The ``redis_cluster`` fixture starts it once per test session and stops it,
by PID, at the end. Without ``redis-server`` or ``redis-cli`` the tests that
use it are skipped with the reason (failed under ``WSGISESSION_REQUIRE_ALL=1``,
see :func:`tests.servers.unavailable`).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import servers

HOST = "127.0.0.1"
#: Node ports come from here, so that each cluster bus port (node port + 10000)
#: stays below the kernel's ephemeral range, where other tests' sockets land.
_PORTS = range(20000, 22700)


@dataclass
class LoopbackCluster:
    """Six nodes on loopback, and how to reach and stop them."""

    workdir: Path
    ports: list[int]
    pids: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming two of the nodes (the client finds the rest)."""
        return f"redis+cluster://{HOST}:{self.ports[0]},{HOST}:{self.ports[1]}/"

    def client(self, **options: Any) -> Any:
        """A redis-py ``RedisCluster`` client with short timeouts (override with *options*)."""
        from redis.cluster import ClusterNode, RedisCluster

        options.setdefault("socket_timeout", 5.0)
        options.setdefault("socket_connect_timeout", 5.0)
        return RedisCluster(startup_nodes=[ClusterNode(HOST, p) for p in self.ports[:2]], **options)

    def node_url(self, port: int, prefix: str) -> str:
        """A plain ``redis://`` URL to one node: what a user who has not heard of redis+cluster:// types."""
        return f"redis://{HOST}:{port}/0?prefix={prefix}"

    def primary_ports(self) -> list[int]:
        client = self.client()
        try:
            return sorted(node.port for node in client.get_primaries())
        finally:
            client.close()

    def stop(self) -> None:
        """Stop every node by its PID: SIGTERM, then SIGKILL for one that lingers."""
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in self.pids.values():
            while _running(pid):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.02)
        self.pids.clear()


def _running(pid: int) -> bool:
    """Whether *pid* is alive; a daemon that exited may linger as a zombie nobody reaps."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """*count* node ports that, with their cluster bus ports, were free a moment ago."""
    candidates = list(_PORTS)
    random.shuffle(candidates)
    ports = [p for p in candidates if _bindable(p) and _bindable(p + 10000)][:count]
    if len(ports) < count:
        pytest.fail("no free loopback ports for a Redis Cluster")
    return ports


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"Redis Cluster: {what} within {timeout:g}s")
        time.sleep(0.05)


def _cli(cli: str, port: int, *args: str) -> str:
    done = subprocess.run(
        [cli, "-h", HOST, "-p", str(port), *args], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout if done.returncode == 0 else ""


def start_cluster(workdir: Path, *node_args: str) -> LoopbackCluster:
    """Start six nodes under *workdir*, join them into a cluster and wait for ``cluster_state:ok``.

    *node_args* go to every ``redis-server`` (``--cluster-node-timeout 1000`` for a quick failover, say).
    """
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        servers.unavailable("redis-server and redis-cli are needed to start a Redis Cluster")
    cluster = LoopbackCluster(workdir, _free_ports(6))
    try:
        for port in cluster.ports:
            pidfile = workdir / f"redis-{port}.pid"
            subprocess.run(
                [
                    *(server, "--port", str(port), "--bind", HOST),
                    *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
                    *("--save", "", "--appendonly", "no", "--dbfilename", f"dump-{port}.rdb"),
                    *("--daemonize", "yes", "--dir", str(workdir), "--pidfile", str(pidfile)),
                    *("--logfile", str(workdir / f"redis-{port}.log")),
                    *node_args,
                ],
                check=True,
                timeout=10,
            )
            _wait(f"node {port} wrote no PID", lambda f=pidfile: f.exists() and f.read_text().strip().isdigit(), 10)
            cluster.pids[port] = int(pidfile.read_text())
            _wait(f"node {port} did not answer PING", lambda p=port: _cli(cli, p, "ping").strip() == "PONG", 10)
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"{HOST}:{p}" for p in cluster.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {created.stdout[-2000:]} {created.stderr[-2000:]}")
        for port in cluster.ports:
            _wait(
                f"node {port} did not reach cluster_state:ok",
                lambda p=port: "cluster_state:ok" in _cli(cli, p, "cluster", "info"),
                30,
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session", name="redis_cluster")
def redis_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    """A running six-node Redis Cluster, started once for the whole test session."""
    servers.require_module("redis", "the Redis Cluster tests need redis-py")
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
