"""wsgisession beside Beaker, Flask-Session, Django's session engines and the bare app, in process, store by store.

Every peer runs the same application body behind its own session machinery,
driven directly through WSGI with a prepared environ (no HTTP, no server):

* ``login``  -- no cookie in: a new session, two keys written, a cookie out;
* ``read``   -- a valid cookie in: one key read, nothing written;
* ``update`` -- a valid cookie in: one key read and written back.

Peers: ``bare`` (the body on a dict) and ``wsgisession`` (with durability
variants on file and SQLite), ``wsgisession-sealed`` (``encrypt=True``: every
value sealed with AES-256-GCM; needs ``cryptography``), ``beaker``; in a Flask
app, ``flask-bare``, ``wsgisession-flask`` and ``flask-session``
(peers_flask.py); in a Django project of its own process, ``django-bare`` and
``django`` (peers_django.py); and ``floor``, the store operations the workload
cannot avoid plus one HMAC (floors.py). A peer's added time is over its own
framework's bare app. The summary sets wsgisession-sealed's added time beside
plain wsgisession's (the difference is sealing's price per request) and beside
every other middleware's, and says where it is still ahead of all of them.

Stores: memory, file, sqlite, redis, postgres and mysql (MariaDB or MySQL
through PyMySQL: MySQLStore, Beaker's and Flask-Session's SQLAlchemy backends
on ``mysql+pymysql://``, Django's ``db`` engine on its MySQL backend with
PyMySQL standing in for mysqlclient). A store whose server does not answer is
skipped with the reason.

Each (store, workload) pair is measured in rounds: in every round each peer
serves N requests (N sized from a calibration run so that one batch takes
about ``--round-seconds``), the peers taking turns in a rotating order. The
reported figure for a peer is the median over rounds of its time per request;
each comparison (microseconds added over the bare app, multiples of the
floor, ratios between peers) is the median of the per-round differences or
ratios, so both sides of it come from the same rounds of the same run.

    python benchmarks/compare.py                              # all stores and peers, ~7 minutes
    python benchmarks/compare.py --stores memory,file         # some stores
    python benchmarks/compare.py --peers beaker,django        # some peers (bare, ours, ours sealed, floor always run)
    python benchmarks/compare.py --quick                      # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import secrets
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import _bench
import floors
import peers_django
import peers_flask
from _peer import (
    MYSQL_URL,
    POSTGRES_URL,
    REDIS_URL,
    SECRET,
    WORKLOADS,
    AppPeer,
    Peer,
    Resources,
    Skipped,
    fresh_dict,
    handle,
    mysql_params,
    mysql_sqlalchemy_url,
    redacted,
    redis_delete,
)

from wsgisession import SessionMiddleware, get_session, sealing
from wsgisession.ids import store_key
from wsgisession.stores.file import FileStore
from wsgisession.stores.memory import MemoryStore
from wsgisession.stores.sqlite import SQLiteStore

STORES = ("memory", "file", "sqlite", "redis", "postgres", "mysql")
PEERS = ("beaker", "flask-session", "django")
#: The stores on a database server, whose tables the run drops afterwards.
SQL = ("postgres", "mysql")
#: The peers a summary row sets wsgisession-sealed against: every other middleware, each over its own bare app.
RIVALS = ("beaker", "flask-session", "django")

#: Beaker as configured for every store: the settings that make it fastest while
#: still doing the same job (signed cookie, data on the server, explicit save).
#: ``save_accessed_time=False`` spares it a write on every read-only request;
#: its price is no server-side expiry (Beaker's ``timeout`` requires the
#: accessed-time write). ``data_serializer="json"`` stores what wsgisession
#: stores (JSON data); the backends still pickle the serialized envelope.
BEAKER_OPTIONS: dict[str, Any] = {
    "auto": False,
    "secret": SECRET,
    "data_serializer": "json",
    "save_accessed_time": False,
    "httponly": True,
    "samesite": "Lax",
    "key": "beaker.session.id",
}
WSGISESSION_OPTIONS: dict[str, Any] = {"max_age": 86400, "cookie_name": "session"}

# -- the WSGI apps --------------------------------------------------------------------------


def bare_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The body without any session middleware: a fresh dict stands in for the session."""
    body = handle(fresh_dict(environ["PATH_INFO"]), environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]


def ours_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = handle(get_session(environ), environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]


def beaker_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = environ["beaker.session"]
    path = environ["PATH_INFO"]
    body = handle(session, path)
    if path != "/read":
        session.save()  # Beaker (auto=False) writes only what the app asks it to
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]


@contextlib.contextmanager
def _no_fsync() -> Iterator[None]:
    """Turn os.fsync and os.fdatasync into no-ops, to price FileStore's durability (the peers never sync)."""
    real = os.fsync, os.fdatasync
    os.fsync = os.fdatasync = lambda fd: None
    try:
        yield
    finally:
        os.fsync, os.fdatasync = real


def _sqlalchemy_url(url: str) -> str:
    """*url* (``postgresql://``) as SQLAlchemy spells it for psycopg 3."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


# -- the peers of one store ---------------------------------------------------------------------


class Setup:
    """Builds the peers for one store and workload, each on its own fresh storage."""

    def __init__(self, store: str, tmp: str, families: Iterable[str], tag: str) -> None:
        self.store = store
        self.tmp = tmp
        self.families = list(families)
        self.tag = tag

    def peers(self, workload: str) -> tuple[list[Peer], dict[str, str], Resources]:
        """The peers (bare first, floor last), the families skipped with the reason, what to release after."""
        res = Resources(self.tmp, f"{self.tag}_{workload}")
        peers: list[Peer] = [AppPeer("bare", "bare", "the app body alone, a dict as its session", app=bare_app)]
        peers += self._ours(res)
        skipped: dict[str, str] = {}
        if sealing.available():
            peers.append(self._sealed_peer(res))
            if self.store == "file":
                peers.append(self._sealed_peer(res, "wsgisession-sealed-nofsync", patch=_no_fsync))
        else:
            skipped["wsgisession-sealed"] = "cryptography is not installed (pip install -e '.[encryption]')"
        builders: dict[str, Callable[[], list[Peer]]] = {
            "beaker": lambda: self._beaker(res),
            "flask-session": lambda: peers_flask.peers(
                self.store, res, lambda label: self.ours_store(res, label)[0], WSGISESSION_OPTIONS
            ),
            "django": lambda: peers_django.peers(self.store, res),
        }
        for family in self.families:
            try:
                peers += builders[family]()
            except Skipped as exc:
                skipped[family] = str(exc)
            except Exception as exc:  # a peer that cannot start must not cost the others their run
                traceback.print_exc()
                skipped[family] = f"{type(exc).__name__}: {exc}"
        try:
            table = {"postgres": res.table, "mysql": res.mysql_table}[self.store]("floor") if self.store in SQL else ""
            prefix = res.prefix("floor") if self.store == "redis" else ""
            peers.append(floors.floor_for(self.store, tmp=self.tmp, table=table, prefix=prefix))
        except Skipped as exc:
            skipped["floor"] = str(exc)
        return peers, skipped, res

    # wsgisession

    def ours_store(self, res: Resources, label: str, **options: Any) -> tuple[Any, str]:
        """A fresh store of this kind for wsgisession, and what it is."""
        if self.store == "memory":
            return MemoryStore(), "MemoryStore"
        if self.store == "file":
            return (
                FileStore(res.dir(f"ours-{label}")),
                "FileStore: every write a temp file, fsync'ed, renamed over the record, then the directory fsync'ed",
            )
        if self.store == "sqlite":
            synchronous = options.get("synchronous", "NORMAL")
            store = SQLiteStore(os.path.join(res.dir(f"ours-{label}"), "s.db"), **options)
            return store, f"SQLiteStore: WAL, synchronous={synchronous}"
        if self.store == "redis":
            from wsgisession.stores.redis import RedisStore

            prefix = res.prefix(f"ours-{label}")
            return RedisStore(REDIS_URL, prefix=prefix), f"RedisStore at {REDIS_URL}, prefix {prefix!r}"
        if self.store == "postgres":
            from wsgisession.stores.postgres import PostgresStore

            table = res.table(f"ours_{label}")
            return PostgresStore(POSTGRES_URL, table=table), f"PostgresStore, table {table}"
        if self.store == "mysql":
            from wsgisession.stores.mysql import MySQLStore

            table = res.mysql_table(f"ours_{label}")
            url = f"{MYSQL_URL}{'&' if '?' in MYSQL_URL else '?'}table={table}"
            return MySQLStore.from_url(url), f"MySQLStore (PyMySQL), table {table}"
        raise ValueError(self.store)

    def _ours_peer(self, res: Resources, name: str, note: str = "", *, encrypt: bool = False, **kw: Any) -> AppPeer:
        options = {"synchronous": "FULL"} if name == "wsgisession-full" else {}
        store, what = self.ours_store(res, name.replace("wsgisession", "wsgi"), **options)
        app = SessionMiddleware(ours_app, secret=SECRET, store=store, encrypt=encrypt, **WSGISESSION_OPTIONS)
        if encrypt:
            kw["verify"] = sealed_in(store, name)
        return AppPeer(name, "wsgisession", note or what, cleanup=[store.close], app=app, **kw)

    def _sealed_peer(self, res: Resources, name: str = "wsgisession-sealed", **kw: Any) -> AppPeer:
        """wsgisession with ``encrypt=True`` on this store's default kind, checked to store nothing readable."""
        versus = "wsgisession-nofsync" if "patch" in kw else "wsgisession"
        peer = self._ours_peer(res, name, encrypt=True, versus=versus, **kw)
        syncs = ", os.fsync and os.fdatasync patched to no-ops" if "patch" in kw else ""
        peer.note = f"encrypt=True (AES-256-GCM per value, key derived from the session ID){syncs}, {peer.note}"
        return peer

    def _ours(self, res: Resources) -> list[Peer]:
        peers: list[Peer] = [self._ours_peer(res, "wsgisession")]
        if self.store == "file":
            note = "FileStore with os.fsync and os.fdatasync patched to no-ops: the price of durability, not a mode"
            peers.append(self._ours_peer(res, "wsgisession-nofsync", note, patch=_no_fsync))
        if self.store == "sqlite":
            note = "SQLiteStore: WAL, synchronous=FULL (fsync per commit, like the peers' SQLite)"
            peers.append(self._ours_peer(res, "wsgisession-full", note))
        return peers

    # Beaker

    def _beaker(self, res: Resources) -> list[Peer]:
        try:
            from beaker.middleware import SessionMiddleware as BeakerMiddleware
        except ImportError as exc:
            raise Skipped("Beaker is not installed (pip install -e '.[bench]')") from exc
        cleanup: list[Callable[[], None]] = []
        if self.store == "memory":
            from beaker.container import MemoryNamespaceManager

            note, options = "type=memory", {"type": "memory"}
            cleanup.append(MemoryNamespaceManager.namespaces.clear)
        elif self.store == "file":
            base = res.dir("beaker-file")
            note = "type=file, data_dir and lock_dir in a temp dir (writes without fsync)"
            options = {"type": "file", "data_dir": os.path.join(base, "data"), "lock_dir": os.path.join(base, "lock")}
        elif self.store in ("sqlite", "postgres", "mysql"):
            try:
                import sqlalchemy  # noqa: F401
            except ImportError as exc:
                raise Skipped("SQLAlchemy is not installed (Beaker's ext:database needs it)") from exc
            if self.store == "sqlite":
                url = "sqlite:///" + os.path.join(res.dir("beaker-sqlite"), "b.db")
                note = "type=ext:database (SQLAlchemy, pysqlite: journal_mode=DELETE, synchronous=FULL); no lock_dir"
                options = {"type": "ext:database", "url": url}
            elif self.store == "mysql":
                url = mysql_sqlalchemy_url()
                table = res.mysql_table("beaker")
                note = f"type=ext:database (SQLAlchemy, PyMySQL), InnoDB table {table}; no lock_dir"
                options = {"type": "ext:database", "url": url, "table_name": table}
            else:
                url = _sqlalchemy_url(POSTGRES_URL)
                table = res.table("beaker")
                note = f"type=ext:database (SQLAlchemy, psycopg), table {table}; no lock_dir"
                options = {"type": "ext:database", "url": url, "table_name": table}
            cleanup.append(lambda: _dispose_beaker_engine(url))
        else:
            note = f"type=ext:redis, url={REDIS_URL} (one GET or SET of a pickled value)"
            options = {"type": "ext:redis", "url": REDIS_URL}
            cleanup.append(lambda: redis_delete("beaker_cache:*"))
        app = BeakerMiddleware(beaker_app, **BEAKER_OPTIONS, **options)
        return [AppPeer("beaker", "beaker", note, versus="wsgisession", cleanup=cleanup, app=app)]


def sealed_in(store: Any, name: str) -> Callable[[str], None]:
    """A check that the session a login cookie names holds only sealed values in *store*."""

    def verify(cookie: str) -> None:
        session_id = cookie.partition("=")[2].partition(".")[0]
        record = store.load(store_key(session_id))
        if record is None or set(record.data) != {"user", "n"}:
            raise RuntimeError(f"{name}: the login's session is not in the store as written ({record!r})")
        readable = sorted(k for k, v in record.data.items() if not sealing.is_sealed(v))
        if readable:
            raise RuntimeError(f"{name}: values stored unsealed: {readable}")

    return verify


def _dispose_beaker_engine(url: str) -> None:
    from beaker.ext.database import DatabaseNamespaceManager

    # Beaker keeps engines and tables in class-level SyncDicts, keyed by URL.
    engine = DatabaseNamespaceManager.binds.dict.pop(url, None)
    if engine is not None:
        engine.dispose()
    for key in [k for k in DatabaseNamespaceManager.tables.dict if k.startswith(url)]:
        del DatabaseNamespaceManager.tables.dict[key]


def redis_problem() -> str | None:
    """Why the Redis benchmarks cannot run, or None if they can."""
    try:
        import redis
    except ImportError:
        return "redis-py is not installed"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    finally:
        client.close()
    return None


def postgres_problem() -> str | None:
    """Why the PostgreSQL benchmarks cannot run, or None if they can."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg or psycopg_pool is not installed (pip install -e '.[bench]')"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} does not answer: {exc}"
    return None


def mysql_problem() -> str | None:
    """Why the MySQL benchmarks cannot run, or None if they can."""
    try:
        import pymysql
    except ImportError:
        return "PyMySQL is not installed (pip install -e '.[mysql]')"
    try:
        pymysql.connect(**mysql_params(), connect_timeout=3, read_timeout=3).close()
    except pymysql.err.MySQLError as exc:
        return f"MySQL at {redacted(MYSQL_URL)} does not answer: {exc}"
    return None


# -- one workload -----------------------------------------------------------------------------


def _median_difference(minuends: list[float], subtrahends: list[float]) -> float:
    return round(_bench.median([a - b for a, b in zip(minuends, subtrahends, strict=True)]), 3)


def _median_ratio(numerators: list[float], denominators: list[float]) -> float | None:
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]
    return round(_bench.median(ratios), 3) if ratios else None


def run_workload(
    peers: list[Peer], workload: str, rounds: int, target: float, min_n: int, max_n: int
) -> dict[str, Any]:
    sizes = {peer.name: peer.prepare(workload, target, min_n, max_n) for peer in peers}
    per_round: dict[str, list[float]] = {peer.name: [] for peer in peers}
    for r in range(rounds):
        order = peers[r % len(peers) :] + peers[: r % len(peers)]
        for peer in order:
            gc.collect()
            seconds = peer.run(sizes[peer.name])
            per_round[peer.name].append(seconds / sizes[peer.name] * 1e6)
    return summarize(peers, workload, sizes, per_round)


def summarize(
    peers: list[Peer], workload: str, sizes: dict[str, int], per_round: dict[str, list[float]]
) -> dict[str, Any]:
    """Each peer's entry: its timings, and its comparisons, round by round then the median."""
    by_name = {peer.name: peer for peer in peers}
    added = {
        p.name: [t - b for t, b in zip(per_round[p.name], per_round[p.baseline], strict=True)]
        for p in peers
        if p.kind not in ("bare", "floor") and p.baseline in per_round
    }
    floor = by_name.get("floor")
    floor_ops = [ops for ops, _ in floor.parts] if isinstance(floor, floors.Floor) else None  # without the HMAC
    result: dict[str, Any] = {"workload": workload, "peers": {}}
    for peer in peers:
        us = per_round[peer.name]
        entry: dict[str, Any] = {
            "kind": peer.kind,
            "note": peer.note,
            "requests_per_round": sizes[peer.name],
            "us_per_request_rounds": [round(v, 3) for v in us],
            "us_per_request": round(_bench.median(us), 3),
            "requests_per_second": round(1e6 / _bench.median(us), 1),
            **peer.extra(),
        }
        if peer.name in added:
            entry["baseline"] = peer.baseline
            entry["added_us_vs_bare"] = round(_bench.median(added[peer.name]), 3)
            if floor_ops is not None:
                entry["x_floor"] = _median_ratio(added[peer.name], per_round["floor"])
                entry["x_store_ops"] = _median_ratio(added[peer.name], floor_ops)
            if peer.versus in added:
                entry["overhead_vs_wsgisession"] = _median_ratio(added[peer.name], added[peer.versus])
            if peer.kind == "wsgisession" and peer.baseline == "bare":
                # By how much each other middleware's added time exceeds this one's (each over its own
                # framework's bare app), round by round: positive, this one is ahead.
                entry["lead_over_peers_us"] = {
                    rival: _median_difference(added[rival], added[peer.name]) for rival in RIVALS if rival in added
                }
        if peer.name == "wsgisession-sealed" and "wsgisession" in per_round:
            # Both over the same bare app in the same rounds: the difference of their times is sealing's price.
            entry["sealing_added_us"] = _median_difference(us, per_round["wsgisession"])
        # Time ratios only where both sides run in the same framework.
        if "beaker" in by_name and peer.kind == "wsgisession" and peer.baseline == "bare":
            entry["speedup_vs_beaker"] = _median_ratio(per_round["beaker"], us)
        if "flask-session" in by_name and peer.name == "wsgisession-flask":
            entry["speedup_vs_flask_session"] = _median_ratio(per_round["flask-session"], us)
        result["peers"][peer.name] = entry
    return result


def run_store(store: str, args: argparse.Namespace, tmp: str, tag: str) -> dict[str, Any]:
    setup = Setup(store, tmp, args.peers, tag)
    result: dict[str, Any] = {"store": store}
    if store == "file":
        # What a durable write pays per sync here, beside peers that never sync.
        result["fsync_us"] = floors.fsync_us(tmp)
        print(f"file: one os.fsync of a small file just written takes {result['fsync_us']} µs here", flush=True)
    workloads = []
    skipped_all: dict[str, str] = {}
    for workload in args.workloads:
        peers, skipped, res = setup.peers(workload)
        for family, reason in skipped.items():
            if family not in skipped_all:
                print(f"{store}: {family} skipped ({reason})", file=sys.stderr, flush=True)
            skipped_all.setdefault(family, reason)
        try:
            workloads.append(run_workload(peers, workload, args.rounds, args.round_seconds, args.min_n, args.max_n))
        finally:
            for peer in peers:
                try:
                    peer.close()
                except Exception:  # what the others made must still be removed
                    traceback.print_exc()
            res.release()
        print_rows(store, [workloads[-1]])
    if skipped_all:
        result["skipped_peers"] = skipped_all
    result["workloads"] = workloads
    return result


# -- output ---------------------------------------------------------------------------------

HEADERS = ("store", "workload", "peer", "µs/req", "req/s", "over", "+µs", "x floor", "x ours")


def _x(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}x"


def rows_of(store: str, workloads: Iterable[dict[str, Any]]) -> Iterator[list[object]]:
    for w in workloads:
        for name, entry in w["peers"].items():
            yield [
                store,
                w["workload"],
                name,
                entry["us_per_request"],
                entry["requests_per_second"],
                entry.get("baseline"),
                entry.get("added_us_vs_bare"),
                _x(entry.get("x_floor")),
                _x(entry.get("overhead_vs_wsgisession")),
            ]


def print_rows(store: str, workloads: list[dict[str, Any]]) -> None:
    # One small table per workload as it finishes, so a long run shows progress.
    print(_bench.table(HEADERS, rows_of(store, workloads)), end="\n\n", flush=True)


SUMMARY_HEADERS = (
    "store",
    "workload",
    "bare µs",
    "floor µs",
    "ours +µs",
    "x floor",
    "sealed +µs",
    "sealing +µs",
    "Beaker +µs",
    "ours in Flask +µs",
    "Flask-Session +µs",
    "Django +µs",
    "sealed ahead",
)
RIVAL_NAMES = {"beaker": "Beaker", "flask-session": "Flask-Session", "django": "Django"}


def _ahead(entry: dict[str, Any]) -> str | None:
    """Whether a wsgisession peer adds less than every other middleware beside it ("no: ..." names the others)."""
    leads: dict[str, float] | None = entry.get("lead_over_peers_us")
    if not leads:
        return None
    behind = [RIVAL_NAMES[rival] for rival, lead in leads.items() if lead <= 0]
    return "no: " + ", ".join(behind) if behind else "yes"


def summary(results: list[dict[str, Any]]) -> str:
    rows = []
    notes = []
    verdicts: list[tuple[str, str]] = []
    for store in results:
        for w in store.get("workloads", []):
            peers = w["peers"]

            def added(name: str, peers: dict[str, Any] = peers) -> float | None:
                return peers.get(name, {}).get("added_us_vs_bare")

            ours = peers.get("wsgisession", {})
            sealed = peers.get("wsgisession-sealed", {})
            # On files the peers never sync: ahead is judged at equal durability, ours unsynced too.
            ahead = _ahead(peers.get("wsgisession-sealed-nofsync") or sealed)
            rows.append(
                [
                    store["store"],
                    w["workload"],
                    peers["bare"]["us_per_request"],
                    peers.get("floor", {}).get("us_per_request"),
                    ours.get("added_us_vs_bare"),
                    _x(ours.get("x_floor")),
                    sealed.get("added_us_vs_bare"),
                    sealed.get("sealing_added_us"),
                    added("beaker"),
                    added("wsgisession-flask"),
                    added("flask-session"),
                    added("django"),
                    ahead,
                ]
            )
            if ahead is not None:
                verdicts.append((f"{store['store']} {w['workload']}", ahead))
            if store["store"] == "redis" and w["workload"] == "read" and "x_store_ops" in ours:
                hgetall = peers["floor"]["store_ops_us"]
                notes.append(
                    f"redis read: wsgisession adds {ours['added_us_vs_bare']:.1f} µs, {ours['x_store_ops']:.2f}x one "
                    f"HGETALL through redis-py ({hgetall:.1f} µs)"
                )
        if "fsync_us" in store:
            notes.append(f"file: one os.fsync of a small file just written: {store['fsync_us']} µs")
            notes.append(
                "file: 'sealed ahead' compares wsgisession-sealed-nofsync (syncs patched out: the peers never sync)"
            )
        if "wsgisession-sealed" in store.get("skipped_peers", {}):
            notes.append(
                f"{store['store']}: wsgisession-sealed skipped ({store['skipped_peers']['wsgisession-sealed']})"
            )
    if verdicts:
        behind = [f"{where} ({verdict})" for where, verdict in verdicts if verdict != "yes"]
        notes.append(
            f"wsgisession-sealed adds less than every other middleware on {len(verdicts) - len(behind)} of "
            f"{len(verdicts)} store/workloads measured beside one"
            + (f"; not on: {'; '.join(behind)}" if behind else "")
            + " (sealed +µs against each peer's own +µs, round by round)"
        )
    return "\n".join([_bench.table(SUMMARY_HEADERS, rows), *notes])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, from {','.join(STORES)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, from {','.join(WORKLOADS)}")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated, from {','.join(PEERS)} "
        "(bare, wsgisession, wsgisession-sealed and the floor always run)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds per workload (default 7)")
    parser.add_argument(
        "--round-seconds", type=float, default=0.3, help="target length of one peer's batch in a round (default 0.3)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny batches and 3 rounds: a smoke test, not a measure")
    parser.add_argument(
        "--json", default=str(_bench.RESULTS / "compare-latest.json"), help="where to write the results (JSON)"
    )
    parser.add_argument("--tmpdir", default=None, help="where the file and SQLite stores live (default: system temp)")
    parser.add_argument(
        "--profile",
        metavar="STORE:WORKLOAD[:sealed]",
        default=None,
        help="instead of comparing, run wsgisession's peer (or, with :sealed, wsgisession-sealed) under cProfile "
        "(e.g. memory:update) and print the top calls",
    )
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for value, known, what in (
        (args.stores, STORES, "store"),
        (args.workloads, WORKLOADS, "workload"),
        (args.peers, PEERS, "peer"),
    ):
        unknown = sorted(set(value) - set(known))
        if unknown or (not value and what != "peer"):
            parser.error(f"unknown {what}(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    if args.quick:
        args.rounds, args.round_seconds, args.min_n, args.max_n = 3, 0.002, 2, 20
    else:
        args.min_n, args.max_n = 20, 1_000_000
    if args.rounds < 1 or args.round_seconds <= 0:
        parser.error("--rounds must be >= 1 and --round-seconds > 0")
    return args


def profile(spec: str, args: argparse.Namespace) -> int:
    """Profile wsgisession's peer on one store and workload; print where the time goes."""
    import cProfile
    import pstats

    store, _, workload = spec.partition(":")
    workload, _, variant = workload.partition(":")
    if store not in STORES or workload not in WORKLOADS or variant not in ("", "sealed"):
        print(f"--profile wants STORE:WORKLOAD[:sealed], e.g. memory:update (not {spec!r})", file=sys.stderr)
        return 2
    if variant and not sealing.available():
        print("--profile ...:sealed needs the cryptography package (pip install -e '.[encryption]')", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="wsgisession-bench-", dir=args.tmpdir)
    res = Resources(tmp, f"bench_{secrets.token_hex(4)}_profile")
    setup = Setup(store, tmp, (), res.tag)
    ours = setup._sealed_peer(res) if variant else setup._ours_peer(res, "wsgisession")
    try:
        n = ours.prepare(workload, 0.01 if args.quick else 2.0, 20, 50 if args.quick else 200_000)
        profiler = cProfile.Profile()
        profiler.enable()
        ours.run(n)
        profiler.disable()
        print(f"{ours.name}, {store}, {workload}: {n:,} requests under cProfile (times inflated by the profiler)")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    finally:
        ours.close()
        res.release()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _bench.exit_cleanly_on_sigterm()
    if args.profile:
        return profile(args.profile, args)
    document = _bench.new_document(
        "compare",
        {
            "quick": args.quick,
            "rounds": args.rounds,
            "round_seconds": args.round_seconds,
            "stores": args.stores,
            "workloads": args.workloads,
            "peers": args.peers,
            "statistic": "median over rounds; ratios and differences are per round, then the median",
            "beaker_options": {k: ("***" if k == "secret" else v) for k, v in BEAKER_OPTIONS.items()},
            "flask_session_config": {
                k: (v.total_seconds() if hasattr(v, "total_seconds") else v)
                for k, v in peers_flask.FLASK_SESSION_CONFIG.items()
            },
            "wsgisession_options": WSGISESSION_OPTIONS,
            "floor": "the workload's store operations with the store's client library, plus one HMAC-SHA256 of "
            "43 bytes; see benchmarks/floors.py",
            "wsgisession_sealed": "encrypt=True" if sealing.available() else "skipped: cryptography is not installed",
            "redis_url": redacted(REDIS_URL),
            "postgres_url": redacted(POSTGRES_URL),
            "mysql_url": redacted(MYSQL_URL),
        },
    )
    tmp = tempfile.mkdtemp(prefix="wsgisession-bench-", dir=args.tmpdir)
    tag = f"bench_{secrets.token_hex(4)}"
    problems = {"redis": redis_problem, "postgres": postgres_problem, "mysql": mysql_problem}
    try:
        for store in args.stores:
            if store in problems and (problem := problems[store]()) is not None:
                _bench.skip(document, store, problem)
                continue
            try:
                document["results"].append(run_store(store, args, tmp, tag))
            except Exception as exc:  # one broken store must not lose the others' results
                traceback.print_exc()
                document["results"].append({"store": store, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(summary(document["results"]))
    path = _bench.write_json(args.json, document)
    print(f"\nwrote {path}")
    return 1 if any("error" in r for r in document["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
