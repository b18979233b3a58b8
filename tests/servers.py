"""Find the real Redis, PostgreSQL and MySQL servers the store tests run against.

A test that needs a server it cannot reach is skipped with the reason, unless
``WSGISESSION_REQUIRE_ALL=1`` is set (CI): then it fails, so a server that
did not start can never pass for a green run.

``WSGISESSION_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) and
``WSGISESSION_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and ``WSGISESSION_TEST_MYSQL_URL``
(default ``mysql://root@127.0.0.1:3306/test``) say where the servers are.
Import the helpers explicitly; the ``redis_url`` and ``postgres_url`` fixtures
are here for modules that want them as they are.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import pytest

from wsgisession.stores import _redact as redact_url
from wsgisession.testing.contract import at_once as at_once

from .liveserver import free_port

REDIS_URL = os.environ.get("WSGISESSION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("WSGISESSION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("WSGISESSION_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def require_all() -> bool:
    """Whether an unreachable server must fail the test rather than skip it."""
    return os.environ.get("WSGISESSION_REQUIRE_ALL", "") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the current test for *reason*, or fail it under ``WSGISESSION_REQUIRE_ALL=1``."""
    if require_all():
        pytest.fail(f"{reason} (WSGISESSION_REQUIRE_ALL=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _probe_redis(url: str) -> str | None:
    """None if Redis answers PING at *url*, else why not."""
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install 'wsgisession[redis]')"
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis is not reachable at {redact_url(url)}: {exc}"
    finally:
        client.close()
    return None


@functools.cache
def _probe_postgres(url: str) -> str | None:
    """None if PostgreSQL accepts a connection at *url*, else why not."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg or psycopg_pool is not installed (pip install 'wsgisession[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"PostgreSQL is not reachable at {redact_url(url)}: {first}"
    return None


@functools.cache
def _probe_mysql(url: str) -> str | None:
    """None if MySQL or MariaDB accepts a connection at *url*, else why not."""
    try:
        import pymysql
    except ImportError:
        return "PyMySQL is not installed (pip install 'wsgisession[mysql]')"
    try:
        mysql_connect(url, connect_timeout=3, read_timeout=3).close()
    except pymysql.err.MySQLError as exc:
        return f"MySQL is not reachable at {redact_url(url)}: {exc}"
    return None


def mysql_connect(url: str = MYSQL_URL, **options: Any) -> Any:
    """A PyMySQL connection (autocommit) of the test's own to the server and database *url* names."""
    import pymysql

    parts = urlsplit(url)
    params: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")),
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    return pymysql.connect(**{**params, **options})


def require_redis() -> str:
    """The URL of a Redis that answers, or skip (fail under REQUIRE_ALL)."""
    problem = _probe_redis(REDIS_URL)
    if problem:
        unavailable(problem)
    return REDIS_URL


def require_postgres() -> str:
    """The URL of a PostgreSQL that accepts connections, or skip (fail under REQUIRE_ALL)."""
    problem = _probe_postgres(POSTGRES_URL)
    if problem:
        unavailable(problem)
    return POSTGRES_URL


def require_mysql() -> str:
    """The URL of a MySQL or MariaDB that accepts connections, or skip (fail under REQUIRE_ALL)."""
    problem = _probe_mysql(MYSQL_URL)
    if problem:
        unavailable(problem)
    return MYSQL_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis server's URL."""
    return require_redis()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL server's URL."""
    return require_postgres()


def unique_name(stem: str) -> str:
    """*stem* plus a random suffix, for a table, key prefix or application_name no other test run uses."""
    return f"{stem}_{secrets.token_hex(4)}"


def require_module(name: str, why: str = "") -> ModuleType:
    """Import module *name*, or skip the test (fail it under ``WSGISESSION_REQUIRE_ALL=1``)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} is not installed{': ' + why if why else ''} ({exc})")


class ThrowawayRedis:
    """A redis-server of the test's own on a free loopback port, to kill and restart at will.

    No persistence: a restart starts empty, like a crashed cache.
    """

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(binary, os.X_OK):
            unavailable("redis-server is not installed: cannot start a throwaway Redis")
        self.binary = binary
        self.workdir = workdir
        self.extra_args = extra_args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        import redis

        self.proc = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--daemonize", "no", "--dir", str(self.workdir), "--logfile", ""),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"throwaway redis-server on port {self.port} exited with {self.proc.returncode}")
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"throwaway redis-server on port {self.port} did not answer within {timeout}s")
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> ThrowawayRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()  # SIGKILL ends a paused server too


def _child(queue: Any, index: int, func: Callable[..., Any], args: Sequence[Any]) -> None:
    try:
        queue.put((index, True, func(*args)))
    except BaseException:
        queue.put((index, False, traceback.format_exc()))


def run_in_processes(func: Callable[..., Any], arglists: Sequence[Sequence[Any]], timeout: float = 60.0) -> list[Any]:
    """Run ``func(*args)`` for each of *arglists* in its own forked process; return the results in order.

    Forking (not spawning) is the point: the children inherit the stores the
    test made, as gunicorn workers inherit a ``--preload`` app. A child that
    raises fails the test with its traceback.
    """
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads (the
        # connection pool's); the stores under test are built to survive it.
        warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
        procs = [ctx.Process(target=_child, args=(queue, i, func, args)) for i, args in enumerate(arglists)]
        for proc in procs:
            proc.start()
    results: dict[int, Any] = {}
    failures: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for _ in procs:
            index, ok, value = queue.get(timeout=max(0.1, deadline - time.monotonic()))
            if ok:
                results[index] = value
            else:
                failures.append(f"child {index}:\n{value}")
    finally:
        for proc in procs:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        queue.close()
        queue.join_thread()
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
    return [results[i] for i in range(len(procs))]


@contextlib.contextmanager
def tmpfs(target: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with *options* (``size=64k``...) at *target* for a ``with`` block; skip if not allowed."""
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
