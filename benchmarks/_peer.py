"""What compare.py's peers share: the application body, WSGI driving, and the Peer interface.

A peer is one contender of a comparison: something that serves *n* requests
of a workload and says how long that took. Most run in this process; the
Django peers run in a process of their own (Django is configured once per
process) and answer through a pipe, so this module imports neither
wsgisession nor any peer's library.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

WORKLOADS = ("login", "read", "update")
SECRET = "benchmark-secret-" + "0123456789abcdef" * 3
REDIS_URL = os.environ.get("WSGISESSION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
POSTGRES_URL = os.environ.get("WSGISESSION_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: MariaDB (or MySQL): MySQLStore's URL without ``?table=``; every peer's tables go in its database.
MYSQL_URL = os.environ.get("WSGISESSION_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
#: Every session lives this long, whoever stores it (Beaker has no server-side expiry; see compare.py).
MAX_AGE = 86400


class Skipped(Exception):
    """A peer that cannot run here (a library or server is missing); the message says why."""


def mysql_params(url: str = MYSQL_URL) -> dict[str, Any]:
    """PyMySQL's ``connect()`` arguments for the server, user and database of a ``mysql://`` URL."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else "",
        "database": unquote(parts.path.lstrip("/")),
    }


def mysql_sqlalchemy_url(url: str = MYSQL_URL) -> str:
    """*url* as SQLAlchemy spells it for PyMySQL, in utf8mb4 as MySQLStore talks."""
    p = mysql_params(url)
    user = quote(p["user"] or "", safe="") + (":" + quote(p["password"], safe="") if p["password"] else "")
    return f"mysql+pymysql://{user}@{p['host']}:{p['port']}/{quote(p['database'], safe='')}?charset=utf8mb4"


def redacted(url: str) -> str:
    """*url* with its password, if any, as ``***`` (for the results file and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# -- the application every peer runs --------------------------------------------------------


def handle(session: Any, path: str) -> bytes:
    """The body of every peer's app: login writes two keys, read reads one, update reads and writes one."""
    if path == "/login":
        session["user"] = "alice"
        session["n"] = 0
        return b"in"
    if path == "/read":
        return session["user"].encode()
    session["n"] = session["n"] + 1
    return str(session["n"]).encode()


def fresh_dict(path: str) -> dict[str, Any]:
    """What a bare app's "session" holds: nothing before a login, a logged-in user after."""
    return {} if path == "/login" else {"user": "alice", "n": 0}


BASE_ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "HTTP_USER_AGENT": "wsgisession-benchmark/1.0",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def _no_write(data: bytes) -> None:
    pass


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
    return _no_write


def drive(app: Callable[..., Any], environ: dict[str, Any], n: int) -> float:
    """Serve *n* requests the way a server would (copy environ, iterate, close); return the seconds."""
    copy = environ.copy
    start_response = _start_response
    started = time.perf_counter()
    for _ in range(n):
        result = app(copy(), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return time.perf_counter() - started


def call(app: Callable[..., Any], environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """One request, returning status, headers and body (for set-up and checks)."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        seen["status"], seen["headers"] = status, list(headers)
        return _no_write

    result = app(dict(environ), start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return seen["status"], seen["headers"], body


def set_cookie(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "set-cookie":
            return value.strip().split(";", 1)[0]
    return None


def environ_for(
    name: str, kind: str, app: Callable[..., Any], workload: str, base: dict[str, Any] = BASE_ENVIRON
) -> dict[str, Any]:
    """The environ every request of *workload* gets; for read and update, with a live session's cookie."""
    environ = dict(base, PATH_INFO=f"/{workload}")
    if workload == "login" or kind == "bare":
        return environ
    status, headers, _ = call(app, dict(base, PATH_INFO="/login"))
    cookie = set_cookie(headers)
    if not status.startswith("200") or cookie is None:
        raise RuntimeError(f"{name}: a login request set no cookie ({status}, {headers})")
    environ["HTTP_COOKIE"] = cookie
    return environ


def check(name: str, kind: str, app: Callable[..., Any], workload: str, environ: dict[str, Any]) -> None:
    """Make sure the peer really does the workload before timing it."""
    status, headers, body = call(app, environ)
    cookie = set_cookie(headers)
    problem = None
    if not status.startswith("200"):
        problem = f"status {status}"
    elif workload == "login" and kind != "bare" and cookie is None:
        problem = "no cookie set by a login"
    elif workload == "read" and body != b"alice":
        problem = f"read {body!r}, not the session's user"
    # A read that sends the cookie again has rewritten the session, or refreshed it: not the workload.
    elif workload == "read" and kind != "bare" and cookie is not None:
        problem = "a read-only request set a cookie"
    elif workload == "update" and kind != "bare":
        _, _, again = call(app, environ)
        if int(again) != int(body) + 1:
            problem = f"update did not persist ({body!r} then {again!r})"
    if problem:
        raise RuntimeError(f"{name}/{workload}: {problem}")


def calibrate(run: Callable[[int], float], target: float, min_n: int, max_n: int) -> int:
    """How many requests make one batch of about *target* seconds, *run(n)* timing n of them."""
    n, elapsed = 4, 0.0
    while True:
        elapsed = run(n)
        if elapsed >= min(0.05, target / 2) or n >= max_n:
            break
        n *= 4
    per_request = elapsed / n
    return max(min_n, min(max_n, round(target / per_request)))


# -- peers ----------------------------------------------------------------------------------


@dataclass
class Peer:
    """One contender: it prepares for a workload, then serves batches of it and times them.

    *baseline* is the peer whose time is the same app without sessions (its
    framework's bare app); *versus* the wsgisession peer in the same framework,
    whose added time this one's is set against.
    """

    name: str
    kind: str  # "bare", "wsgisession", "beaker", "flask-session", "django" or "floor"
    note: str = ""
    baseline: str = "bare"
    versus: str | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def prepare(self, workload: str, target: float, min_n: int, max_n: int) -> int:
        """Get ready to serve *workload* (checked), and return the batch size that takes about *target* s."""
        raise NotImplementedError

    def run(self, n: int) -> float:
        """Serve *n* requests of the prepared workload; return the seconds."""
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        """What this peer adds to its entry in the results, beyond the timings."""
        return {}

    def close(self) -> None:
        for action in reversed(self.cleanup):
            action()


@dataclass
class AppPeer(Peer):
    """A peer that is a WSGI app in this process."""

    app: Callable[..., Any] | None = None
    patch: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    environ: dict[str, Any] = field(default_factory=dict)
    #: A check of what the peer stores, given the cookie a login set; raises if it is not what the peer claims.
    verify: Callable[[str], None] | None = None

    def prepare(self, workload: str, target: float, min_n: int, max_n: int) -> int:
        assert self.app is not None
        with self.patch():
            self.environ = environ_for(self.name, self.kind, self.app, workload)
            check(self.name, self.kind, self.app, workload, self.environ)
            if self.verify is not None:
                _, headers, _ = call(self.app, dict(BASE_ENVIRON, PATH_INFO="/login"))
                cookie = set_cookie(headers)
                if cookie is None:
                    raise RuntimeError(f"{self.name}: a login request set no cookie")
                self.verify(cookie)
            return calibrate(self.run, target, min_n, max_n)

    def run(self, n: int) -> float:
        assert self.app is not None
        with self.patch():
            return drive(self.app, self.environ, n)


# -- what a workload's peers make, and remove afterwards -------------------------------------


class Resources:
    """What one workload's peers make: directories, PostgreSQL and MySQL tables, schemas, databases, Redis prefixes.

    Names carry *tag* (random per run), so two runs on one server never meet;
    :meth:`release` removes everything, after the peers are closed.
    """

    def __init__(self, tmp: str, tag: str) -> None:
        self.tmp = tmp
        self.tag = tag
        self.tables: list[str] = []
        self.schemas: list[str] = []
        self.mysql_tables: list[str] = []
        self.mysql_databases: list[str] = []
        self.prefixes: list[str] = []

    def dir(self, name: str) -> str:
        return tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp)

    def _name(self, label: str) -> str:
        return f"{self.tag}_{label}".replace("-", "_")

    def table(self, label: str) -> str:
        """The name of a PostgreSQL table, dropped on release."""
        name = self._name(label)
        self.tables.append(name)
        return name

    def schema(self, label: str) -> str:
        """A new, empty PostgreSQL schema."""
        import psycopg
        from psycopg import sql

        name = self._name(label)
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {s}").format(s=sql.Identifier(name)))
        self.schemas.append(name)
        return name

    def mysql_table(self, label: str) -> str:
        """The name of a table in MYSQL_URL's database, dropped on release."""
        name = self._name(label)
        self.mysql_tables.append(name)
        return name

    def mysql_database(self, label: str) -> str:
        """A new, empty MySQL database (for a peer that wants one of its own), dropped on release."""
        name = self._name(label)
        with _mysql_connection() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        self.mysql_databases.append(name)
        return name

    def prefix(self, label: str) -> str:
        name = f"{self.tag}-{label}:"
        self.prefixes.append(name)
        return name

    def release(self) -> None:
        if self.tables or self.schemas:
            import psycopg
            from psycopg import sql

            with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
                for table in self.tables:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {t} CASCADE").format(t=sql.Identifier(table)))
                for schema in self.schemas:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {s} CASCADE").format(s=sql.Identifier(schema)))
        if self.mysql_tables or self.mysql_databases:
            with _mysql_connection() as cur:
                for table in self.mysql_tables:
                    cur.execute(f"DROP TABLE IF EXISTS `{table}`")
                for database in self.mysql_databases:
                    cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        for prefix in self.prefixes:
            redis_delete(prefix + "*")
        self.tables.clear()
        self.schemas.clear()
        self.mysql_tables.clear()
        self.mysql_databases.clear()
        self.prefixes.clear()


@contextlib.contextmanager
def _mysql_connection() -> Iterator[Any]:
    """A cursor on a PyMySQL connection of its own to MYSQL_URL's database (autocommit), closed afterwards."""
    import pymysql

    conn = pymysql.connect(**mysql_params(), charset="utf8mb4", autocommit=True, connect_timeout=5, read_timeout=60)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def redis_delete(pattern: str) -> None:
    """Delete every key matching *pattern* in the benchmarks' Redis database."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        batch = []
        for name in client.scan_iter(match=pattern, count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()
