"""The floor of each store and workload: what no session middleware on that store can avoid doing.

A floor is the store operations a workload needs, done directly with the
client library a store would use, plus one HMAC-SHA256 of a 43-byte value
(the check of a signed session ID). It runs as a peer of the comparison, in
the same rounds, so "x floor" (a middleware's added time over its floor) is a
ratio within one round, as the others are.

* read: one load -- a ``SELECT data FROM t WHERE key = ?`` (SQLite,
  PostgreSQL, MySQL), one ``HGETALL`` through redis-py's public client, one
  ``open`` + ``read`` + ``close`` of a file, one ``dict`` lookup;
* update: that load, then one write -- an ``UPDATE`` (autocommit), one
  ``EVALSHA`` of a script that sets one hash field, a temp file written,
  fsync'ed and renamed over the record, a ``dict`` store;
* login: one create -- an ``INSERT`` (autocommit), that ``EVALSHA`` on a new
  key, a temp file written, fsync'ed and renamed to a new name, a ``dict``
  store of a new key.

The SQLite floor uses the pragmas of SQLiteStore's default (WAL,
``synchronous=NORMAL``); the MySQL floor, PyMySQL with MySQLStore's connection
settings. The records are the session's JSON, 22 bytes.

The SQL floors write a whole record where the stores merge the changed keys
into it (``JSON_MERGE_PATCH`` in MySQL, a ``jsonb`` merge in PostgreSQL) and
create a new session with an upsert: the merge is what lets two requests of
one session that change different keys both land, and the upsert's
``ON DUPLICATE KEY``/``ON CONFLICT`` branch runs only for a key that exists,
which a fresh 256-bit ID never is. Both are the stores' cost, not the floor's.
"""

from __future__ import annotations

import hmac
import itertools
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _peer import MYSQL_URL, POSTGRES_URL, REDIS_URL, SECRET, Peer, Skipped, calibrate, mysql_params

DATA = '{"user":"alice","n":0}'
DATA_BYTES = DATA.encode()
#: A session ID as a cookie carries it: 32 random bytes in URL-safe base64.
SESSION_ID = secrets.token_urlsafe(32).encode()
assert len(SESSION_ID) == 43


def expiry(i: int) -> float:
    """A session's new expiry: every save moves it (server-side expiry), in a column indexed for pruning."""
    return time.time() + 86400 + i * 1e-3


def hmac_loop(n: int) -> float:
    """Seconds for *n* HMAC-SHA256 of a 43-byte value (the one-shot C path, the fastest the stdlib has)."""
    digest, key, msg = hmac.digest, SECRET.encode(), SESSION_ID
    started = time.perf_counter()
    for _ in range(n):
        digest(key, msg, "sha256")
    return time.perf_counter() - started


def fsync_us(directory: str, count: int = 30) -> float:
    """The median time of one os.fsync of a small file just written (what a durable write pays per sync)."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for i in range(count):
            os.pwrite(fd, DATA_BYTES + str(i).encode(), 0)
            started = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    return round(statistics.median(times) * 1e6, 1)


@dataclass
class Floor(Peer):
    """The floor as a peer: each batch times the store operations, then as many HMACs."""

    ops: dict[str, str] = field(default_factory=dict)
    tmp: str = ""  # where a file or SQLite floor makes its directory
    table: str = ""  # PostgreSQL, MySQL: the caller drops it
    prefix: str = ""  # Redis: the caller deletes the keys under it
    workload: str = ""
    parts: list[tuple[float, float]] = field(default_factory=list)
    _counter: Any = field(default_factory=itertools.count)

    def prepare(self, workload: str, target: float, min_n: int, max_n: int) -> int:
        self.workload = workload
        self.setup(workload)
        n = calibrate(self.run, target, min_n, max_n)
        self.parts.clear()
        return n

    def run(self, n: int) -> float:
        timed: Callable[[int], float] = getattr(self, self.workload)
        store_s = timed(n)
        hmac_s = hmac_loop(n)
        self.parts.append((store_s / n * 1e6, hmac_s / n * 1e6))
        return store_s + hmac_s

    def new_keys(self, n: int) -> list[str]:
        """Keys no batch has used (made before the timing starts)."""
        return [f"floor-{i}" for i in itertools.islice(self._counter, n)]

    def extra(self) -> dict[str, Any]:
        return {
            "ops": self.ops[self.workload],
            "store_ops_us_rounds": [round(s, 3) for s, _ in self.parts],
            "store_ops_us": round(statistics.median(s for s, _ in self.parts), 3),
            "hmac_us": round(statistics.median(h for _, h in self.parts), 3),
        }

    # Each store's floor: setup(workload), then login(n), read(n), update(n), each returning seconds.
    def setup(self, workload: str) -> None:
        raise NotImplementedError


def _floor(cls: type[Floor], note: str, ops: dict[str, str], **kw: Any) -> Floor:
    return cls(name="floor", kind="floor", note=note, ops=ops, **kw)


class MemoryFloor(Floor):
    def setup(self, workload: str) -> None:
        self.d: dict[str, str] = {"k": DATA}

    def login(self, n: int) -> float:
        d, keys = self.d, self.new_keys(n)
        started = time.perf_counter()
        for key in keys:
            d[key] = DATA
        return time.perf_counter() - started

    def read(self, n: int) -> float:
        get = self.d.get
        started = time.perf_counter()
        for _ in range(n):
            get("k")
        return time.perf_counter() - started

    def update(self, n: int) -> float:
        d = self.d
        get = d.get
        started = time.perf_counter()
        for _ in range(n):
            get("k")
            d["k"] = DATA
        return time.perf_counter() - started


class FileFloor(Floor):
    def setup(self, workload: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="floor-file-", dir=self.tmp)
        self.path = os.path.join(self.dir, "record")
        self.tmp_path = os.path.join(self.dir, "record.tmp")
        self._write(self.path)

    def _write(self, path: str) -> None:
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, DATA_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self.tmp_path, path)

    def login(self, n: int) -> float:
        write, paths = self._write, [os.path.join(self.dir, key) for key in self.new_keys(n)]
        started = time.perf_counter()
        for path in paths:
            write(path)
        return time.perf_counter() - started

    def read(self, n: int) -> float:
        path, flags = self.path, os.O_RDONLY
        started = time.perf_counter()
        for _ in range(n):
            fd = os.open(path, flags)
            os.read(fd, 65536)
            os.close(fd)
        return time.perf_counter() - started

    def update(self, n: int) -> float:
        path, flags, write = self.path, os.O_RDONLY, self._write
        started = time.perf_counter()
        for _ in range(n):
            fd = os.open(path, flags)
            os.read(fd, 65536)
            os.close(fd)
            write(path)
        return time.perf_counter() - started


class SQLiteFloor(Floor):
    def setup(self, workload: str) -> None:
        path = os.path.join(tempfile.mkdtemp(prefix="floor-sqlite-", dir=self.tmp), "f.db")
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL NOT NULL)")
        self.conn.execute("CREATE INDEX t_expires_at ON t (expires_at)")
        self.conn.execute("INSERT INTO t (key, data, expires_at) VALUES ('k', ?, ?)", (DATA, expiry(0)))
        self.cleanup.append(self.conn.close)

    def login(self, n: int) -> float:
        execute, keys = self.conn.execute, self.new_keys(n)
        started = time.perf_counter()
        for i, key in enumerate(keys):
            execute("INSERT INTO t (key, data, expires_at) VALUES (?, ?, ?)", (key, DATA, expiry(i)))
        return time.perf_counter() - started

    def read(self, n: int) -> float:
        execute = self.conn.execute
        started = time.perf_counter()
        for _ in range(n):
            execute("SELECT data, expires_at FROM t WHERE key = ?", ("k",)).fetchone()
        return time.perf_counter() - started

    def update(self, n: int) -> float:
        execute = self.conn.execute
        started = time.perf_counter()
        for i in range(n):
            execute("SELECT data, expires_at FROM t WHERE key = ?", ("k",)).fetchone()
            execute("UPDATE t SET data = ?, expires_at = ? WHERE key = ?", (DATA, expiry(i), "k"))
        return time.perf_counter() - started


class PostgresFloor(Floor):
    def setup(self, workload: str) -> None:
        import psycopg
        from psycopg import sql

        self.conn = psycopg.connect(POSTGRES_URL, autocommit=True)
        self.cleanup.append(self.conn.close)
        table = sql.Identifier(self.table)
        create = "CREATE TABLE {t} (key text PRIMARY KEY, data text NOT NULL, expires_at double precision NOT NULL)"
        self.conn.execute(sql.SQL(create).format(t=table))
        self.conn.execute(sql.SQL("CREATE INDEX ON {t} (expires_at)").format(t=table))
        insert = sql.SQL("INSERT INTO {t} (key, data, expires_at) VALUES (%s, %s, %s)").format(t=table)
        self.conn.execute(insert, ("k", DATA, expiry(0)))
        self.q_insert = insert.as_string(self.conn)
        self.q_select = sql.SQL("SELECT data, expires_at FROM {t} WHERE key = %s").format(t=table).as_string(self.conn)
        update = sql.SQL("UPDATE {t} SET data = %s, expires_at = %s WHERE key = %s").format(t=table)
        self.q_update = update.as_string(self.conn)

    def login(self, n: int) -> float:
        execute, query, keys = self.conn.execute, self.q_insert, self.new_keys(n)
        started = time.perf_counter()
        for i, key in enumerate(keys):
            execute(query, (key, DATA, expiry(i)))
        return time.perf_counter() - started

    def read(self, n: int) -> float:
        execute, query = self.conn.execute, self.q_select
        started = time.perf_counter()
        for _ in range(n):
            execute(query, ("k",)).fetchone()
        return time.perf_counter() - started

    def update(self, n: int) -> float:
        execute, select, update = self.conn.execute, self.q_select, self.q_update
        started = time.perf_counter()
        for i in range(n):
            execute(select, ("k",)).fetchone()
            execute(update, (DATA, expiry(i), "k"))
        return time.perf_counter() - started


class MySQLFloor(Floor):
    def setup(self, workload: str) -> None:
        import pymysql
        from pymysql.constants import CLIENT

        # MySQLStore's connection, as its constructor sets it up with the default timeouts.
        self.conn = pymysql.connect(
            **mysql_params(MYSQL_URL),
            charset="utf8mb4",
            autocommit=True,
            client_flag=CLIENT.FOUND_ROWS,
            connect_timeout=5.0,
            read_timeout=15.0,
            write_timeout=15.0,
            init_command="SET SESSION innodb_lock_wait_timeout = 5",
        )
        self.cleanup.append(self.conn.close)
        self.cur = self.conn.cursor()
        self.cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        t = f"`{self.table}`"
        self.cur.execute(
            f"CREATE TABLE {t} (`key` VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, "
            "data TEXT NOT NULL, expires_at DOUBLE NOT NULL, KEY (expires_at)) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )
        self.q_insert = f"INSERT INTO {t} (`key`, data, expires_at) VALUES (%s, %s, %s)"
        self.cur.execute(self.q_insert, ("k", DATA, expiry(0)))
        self.q_select = f"SELECT data, expires_at FROM {t} WHERE `key` = %s"
        self.q_update = f"UPDATE {t} SET data = %s, expires_at = %s WHERE `key` = %s"

    def login(self, n: int) -> float:
        execute, query, keys = self.cur.execute, self.q_insert, self.new_keys(n)
        started = time.perf_counter()
        for i, key in enumerate(keys):
            execute(query, (key, DATA, expiry(i)))
        return time.perf_counter() - started

    def read(self, n: int) -> float:
        execute, fetchone, query = self.cur.execute, self.cur.fetchone, self.q_select
        started = time.perf_counter()
        for _ in range(n):
            execute(query, ("k",))
            fetchone()
        return time.perf_counter() - started

    def update(self, n: int) -> float:
        execute, fetchone, select, update = self.cur.execute, self.cur.fetchone, self.q_select, self.q_update
        started = time.perf_counter()
        for i in range(n):
            execute(select, ("k",))
            fetchone()
            execute(update, (DATA, expiry(i), "k"))
        return time.perf_counter() - started


#: The write every Redis floor makes: one field of one hash, through EVALSHA as RedisStore writes.
REDIS_SCRIPT = "return redis.call('HSET', KEYS[1], 'd', ARGV[1])"


class RedisFloor(Floor):
    def setup(self, workload: str) -> None:
        import redis

        self.client = redis.Redis.from_url(REDIS_URL)
        self.cleanup.append(self.client.close)
        self.sha = self.client.script_load(REDIS_SCRIPT)
        self.key = self.prefix + "k"
        self.client.hset(self.key, "d", DATA)

    def login(self, n: int) -> float:
        evalsha, sha = self.client.evalsha, self.sha
        keys = [self.prefix + key for key in self.new_keys(n)]
        started = time.perf_counter()
        for key in keys:
            evalsha(sha, 1, key, DATA)
        return time.perf_counter() - started

    def read(self, n: int) -> float:
        hgetall, key = self.client.hgetall, self.key
        started = time.perf_counter()
        for _ in range(n):
            hgetall(key)
        return time.perf_counter() - started

    def update(self, n: int) -> float:
        hgetall, evalsha, sha, key = self.client.hgetall, self.client.evalsha, self.sha, self.key
        started = time.perf_counter()
        for _ in range(n):
            hgetall(key)
            evalsha(sha, 1, key, DATA)
        return time.perf_counter() - started


def floor_for(store: str, *, tmp: str, table: str = "", prefix: str = "") -> Floor:
    """The floor peer of *store*; *table* (PostgreSQL, MySQL) and *prefix* (Redis) are the caller's to clean up."""
    if store == "memory":
        ops = {"login": "one dict store of a new key", "read": "one dict lookup", "update": "a lookup and a store"}
        return _floor(MemoryFloor, "a Python dict", ops)
    if store == "file":
        write = "a temp file written, fsync'ed and renamed"
        ops = {
            "login": f"{write} to a new name",
            "read": "one open+read+close",
            "update": f"a read, then {write} over it",
        }
        return _floor(FileFloor, "os.open/os.read/os.write/os.fsync/os.rename of a 22-byte record", ops, tmp=tmp)
    if store in ("sqlite", "postgres", "mysql"):
        select = "SELECT data, expires_at FROM t WHERE key = ?"
        ops = {
            "login": "one INSERT of key, data, expiry (autocommit; expires_at indexed, as pruning needs)",
            "read": f"one {select}",
            "update": f"one {select}, one UPDATE of data and a new expiry (which moves its index entry)",
        }
        if store == "sqlite":
            return _floor(SQLiteFloor, "sqlite3, WAL, synchronous=NORMAL (SQLiteStore's default)", ops, tmp=tmp)
        if store == "mysql":
            try:
                import pymysql  # noqa: F401
            except ImportError as exc:
                raise Skipped("PyMySQL is not installed") from exc
            note = f"PyMySQL, one connection in autocommit with MySQLStore's settings, InnoDB table {table}"
            return _floor(MySQLFloor, note, ops, table=table)
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise Skipped("psycopg is not installed") from exc
        return _floor(PostgresFloor, f"psycopg, one connection in autocommit, table {table}", ops, table=table)
    if store == "redis":
        ops = {
            "login": "one EVALSHA (HSET) on a new key",
            "read": "one HGETALL",
            "update": "one HGETALL, one EVALSHA (HSET)",
        }
        return _floor(RedisFloor, "redis-py's public client (hiredis parser when installed)", ops, prefix=prefix)
    raise ValueError(f"no floor for store {store!r}")
