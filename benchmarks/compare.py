"""wsgisession against Beaker's SessionMiddleware and the bare app, in process, store by store.

Every peer runs the same application body behind its own session middleware,
driven directly through WSGI with a prepared environ (no HTTP, no server):

* ``login``  -- no cookie in: a new session, two keys written, a cookie out;
* ``read``   -- a valid cookie in: one key read, nothing written;
* ``update`` -- a valid cookie in: one key read and written back.

Each (store, workload) pair is measured in rounds: in every round each peer
serves N requests (N sized from a calibration run so that one batch takes
about ``--round-seconds``), the peers taking turns in a rotating order. The
reported figure for a peer is the median over rounds of its time per request;
each comparison (speed-up over Beaker, microseconds added over the bare app)
is the median of the per-round ratios or differences, so both sides of it
come from the same rounds of the same run.

    python benchmarks/compare.py                       # all stores, ~2 minutes
    python benchmarks/compare.py --stores memory,file  # some stores
    python benchmarks/compare.py --quick               # a smoke run (seconds)
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
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import _bench

from wsgisession import SessionMiddleware, get_session
from wsgisession.stores.file import FileStore
from wsgisession.stores.memory import MemoryStore
from wsgisession.stores.sqlite import SQLiteStore

STORES = ("memory", "file", "sqlite", "redis")
WORKLOADS = ("login", "read", "update")
REDIS_URL = os.environ.get("WSGISESSION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "benchmark-secret-" + "0123456789abcdef" * 3

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

# -- the application every peer runs --------------------------------------------------------


def _handle(session: Any, path: str) -> bytes:
    if path == "/login":
        session["user"] = "alice"
        session["n"] = 0
        return b"in"
    if path == "/read":
        return session["user"].encode()
    session["n"] = session["n"] + 1
    return str(session["n"]).encode()


def bare_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The body without any session middleware: a fresh dict stands in for the session."""
    session: dict[str, Any] = {} if environ["PATH_INFO"] == "/login" else {"user": "alice", "n": 0}
    body = _handle(session, environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]


def ours_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = _handle(get_session(environ), environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]


def beaker_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    session = environ["beaker.session"]
    path = environ["PATH_INFO"]
    body = _handle(session, path)
    if path != "/read":
        session.save()  # Beaker (auto=False) writes only what the app asks it to
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]


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


# -- peers ----------------------------------------------------------------------------------


@dataclass
class Peer:
    """One contender: an app to drive and what makes it differ from the others."""

    name: str
    kind: str  # "bare", "wsgisession" or "beaker"
    app: Callable[..., Any]
    note: str = ""
    patch: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for action in reversed(self.cleanup):
            action()


@contextlib.contextmanager
def _no_fsync() -> Iterator[None]:
    """Turn os.fsync and os.fdatasync into no-ops, to price FileStore's durability (Beaker never syncs)."""
    real = os.fsync, os.fdatasync
    os.fsync = os.fdatasync = lambda fd: None
    try:
        yield
    finally:
        os.fsync, os.fdatasync = real


class Setup:
    """Builds the peers for one store, each on its own fresh storage, and cleans up after."""

    def __init__(self, store: str, tmp: str) -> None:
        self.store = store
        self.tmp = tmp
        self.redis_prefix = f"wsgisession-bench-{secrets.token_hex(4)}:"
        self.notes: dict[str, Any] = {}

    def _dir(self, name: str) -> str:
        return tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp)

    def peers(self) -> list[Peer]:
        peers = [Peer("bare", "bare", bare_app, "the app body alone, a dict as its session")]
        peers += getattr(self, f"_ours_{self.store}")()
        peers.append(getattr(self, f"_beaker_{self.store}")())
        return peers

    def _ours(self, name: str, store: Any, note: str, **kw: Any) -> Peer:
        app = SessionMiddleware(ours_app, secret=SECRET, store=store, **WSGISESSION_OPTIONS)
        return Peer(name, "wsgisession", app, note, cleanup=[store.close], **kw)

    def _beaker(self, note: str, **options: Any) -> Peer:
        from beaker.middleware import SessionMiddleware as BeakerMiddleware

        return Peer("beaker", "beaker", BeakerMiddleware(beaker_app, **BEAKER_OPTIONS, **options), note)

    # memory

    def _ours_memory(self) -> list[Peer]:
        return [self._ours("wsgisession", MemoryStore(), "MemoryStore")]

    def _beaker_memory(self) -> Peer:
        from beaker.container import MemoryNamespaceManager

        peer = self._beaker("type=memory", type="memory")
        peer.cleanup.append(MemoryNamespaceManager.namespaces.clear)
        return peer

    # file

    def _ours_file(self) -> list[Peer]:
        return [
            self._ours(
                "wsgisession",
                FileStore(self._dir("ours-file")),
                "FileStore: an update overwrites a slot in place, then fdatasync; a new file is fsync'ed and renamed",
            ),
            self._ours(
                "wsgisession-nofsync",
                FileStore(self._dir("ours-file-nofsync")),
                "FileStore with os.fsync and os.fdatasync patched to no-ops: the price of durability, not a supported"
                " mode",
                patch=_no_fsync,
            ),
        ]

    def _beaker_file(self) -> Peer:
        base = self._dir("beaker-file")
        return self._beaker(
            "type=file, data_dir and lock_dir in a temp dir (writes without fsync)",
            type="file",
            data_dir=os.path.join(base, "data"),
            lock_dir=os.path.join(base, "lock"),
        )

    # sqlite

    def _ours_sqlite(self) -> list[Peer]:
        return [
            self._ours(
                "wsgisession",
                SQLiteStore(os.path.join(self._dir("ours-sqlite"), "s.db")),
                "SQLiteStore: WAL, synchronous=NORMAL (the default)",
            ),
            self._ours(
                "wsgisession-full",
                SQLiteStore(os.path.join(self._dir("ours-sqlite-full"), "s.db"), synchronous="FULL"),
                "SQLiteStore: WAL, synchronous=FULL (fsync per commit, like Beaker's SQLite below)",
            ),
        ]

    def _beaker_sqlite(self) -> Peer:
        url = "sqlite:///" + os.path.join(self._dir("beaker-sqlite"), "b.db")
        peer = self._beaker(
            "type=ext:database (SQLAlchemy, pysqlite: journal_mode=DELETE, synchronous=FULL); no lock_dir",
            type="ext:database",
            url=url,
        )
        peer.cleanup.append(lambda: _dispose_beaker_engine(url))
        return peer

    # redis

    def _ours_redis(self) -> list[Peer]:
        from wsgisession.stores.redis import RedisStore

        store = RedisStore(REDIS_URL, prefix=self.redis_prefix)
        peer = self._ours("wsgisession", store, f"RedisStore at {REDIS_URL}, prefix {self.redis_prefix!r}")
        peer.cleanup.insert(0, lambda: _redis_delete(self.redis_prefix + "*"))
        return [peer]

    def _beaker_redis(self) -> Peer:
        peer = self._beaker(
            f"type=ext:redis, url={REDIS_URL} (one GET or SET of a pickled value)", type="ext:redis", url=REDIS_URL
        )
        peer.cleanup.append(lambda: _redis_delete("beaker_cache:*"))
        return peer


def _dispose_beaker_engine(url: str) -> None:
    from beaker.ext.database import DatabaseNamespaceManager

    # Beaker keeps engines and tables in class-level SyncDicts, keyed by URL.
    engine = DatabaseNamespaceManager.binds.dict.pop(url, None)
    if engine is not None:
        engine.dispose()
    for key in [k for k in DatabaseNamespaceManager.tables.dict if k.startswith(url)]:
        del DatabaseNamespaceManager.tables.dict[key]


def _redis_delete(pattern: str) -> None:
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


# -- one workload -----------------------------------------------------------------------------


def environ_for(peer: Peer, workload: str) -> dict[str, Any]:
    """The environ every request of *workload* gets; for read and update, with a live session's cookie."""
    environ = dict(BASE_ENVIRON, PATH_INFO=f"/{workload}")
    if workload == "login" or peer.kind == "bare":
        return environ
    status, headers, _ = call(peer.app, dict(BASE_ENVIRON, PATH_INFO="/login"))
    cookie = set_cookie(headers)
    if not status.startswith("200") or cookie is None:
        raise RuntimeError(f"{peer.name}: a login request set no cookie ({status}, {headers})")
    environ["HTTP_COOKIE"] = cookie
    return environ


def check(peer: Peer, workload: str, environ: dict[str, Any]) -> None:
    """Make sure the peer really does the workload before timing it."""
    status, headers, body = call(peer.app, environ)
    cookie = set_cookie(headers)
    problem = None
    if not status.startswith("200"):
        problem = f"status {status}"
    elif workload == "login" and peer.kind != "bare" and cookie is None:
        problem = "no cookie set by a login"
    elif workload == "read" and body != b"alice":
        problem = f"read {body!r}, not the session's user"
    elif workload == "read" and peer.kind == "wsgisession" and cookie is not None:
        problem = "a read-only request set a cookie"
    elif workload == "update" and peer.kind != "bare":
        _, _, again = call(peer.app, environ)
        if int(again) != int(body) + 1:
            problem = f"update did not persist ({body!r} then {again!r})"
    if problem:
        raise RuntimeError(f"{peer.name}/{workload}: {problem}")


def calibrate(peer: Peer, environ: dict[str, Any], target: float, min_n: int, max_n: int) -> int:
    """How many requests make one batch of about *target* seconds."""
    n, elapsed = 4, 0.0
    while True:
        elapsed = drive(peer.app, environ, n)
        if elapsed >= min(0.05, target / 2) or n >= max_n:
            break
        n *= 4
    per_request = elapsed / n
    return max(min_n, min(max_n, round(target / per_request)))


def run_workload(
    peers: list[Peer], workload: str, rounds: int, target: float, min_n: int, max_n: int
) -> dict[str, Any]:
    environs = {}
    sizes = {}
    for peer in peers:
        with peer.patch():
            environs[peer.name] = environ_for(peer, workload)
            check(peer, workload, environs[peer.name])
            sizes[peer.name] = calibrate(peer, environs[peer.name], target, min_n, max_n)
    per_round: dict[str, list[float]] = {peer.name: [] for peer in peers}
    for r in range(rounds):
        order = peers[r % len(peers) :] + peers[: r % len(peers)]
        for peer in order:
            gc.collect()
            with peer.patch():
                seconds = drive(peer.app, environs[peer.name], sizes[peer.name])
            per_round[peer.name].append(seconds / sizes[peer.name] * 1e6)

    bare = per_round["bare"]
    beaker = per_round.get("beaker")
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
        }
        if peer.kind != "bare":
            entry["added_us_vs_bare"] = round(_bench.median([p - b for p, b in zip(us, bare, strict=True)]), 3)
        if beaker is not None and peer.kind == "wsgisession":
            entry["speedup_vs_beaker"] = round(_bench.median([b / p for p, b in zip(us, beaker, strict=True)]), 3)
        result["peers"][peer.name] = entry
    return result


def run_store(store: str, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    setup = Setup(store, tmp)
    workloads = []
    for workload in args.workloads:
        peers = setup.peers()
        try:
            workloads.append(run_workload(peers, workload, args.rounds, args.round_seconds, args.min_n, args.max_n))
        finally:
            for peer in peers:
                peer.close()
        print_rows(store, [workloads[-1]])
    return {"store": store, "workloads": workloads}


# -- output ---------------------------------------------------------------------------------

HEADERS = ("store", "workload", "peer", "µs/req", "req/s", "+µs vs bare", "x Beaker")


def rows_of(store: str, workloads: Iterable[dict[str, Any]]) -> Iterator[list[object]]:
    for w in workloads:
        for name, entry in w["peers"].items():
            speedup = entry.get("speedup_vs_beaker")
            yield [
                store,
                w["workload"],
                name,
                entry["us_per_request"],
                entry["requests_per_second"],
                entry.get("added_us_vs_bare"),
                None if speedup is None else f"{speedup:.2f}x",
            ]


def print_rows(store: str, workloads: list[dict[str, Any]]) -> None:
    # One small table per workload as it finishes, so a long run shows progress.
    print(_bench.table(HEADERS, rows_of(store, workloads)), end="\n\n", flush=True)


def summary(results: list[dict[str, Any]]) -> str:
    rows = []
    for store in results:
        if "workloads" not in store:
            continue
        for w in store["workloads"]:
            ours = w["peers"].get("wsgisession", {})
            beaker = w["peers"].get("beaker", {})
            rows.append(
                [
                    store["store"],
                    w["workload"],
                    w["peers"]["bare"]["us_per_request"],
                    ours.get("us_per_request"),
                    beaker.get("us_per_request"),
                    ours.get("added_us_vs_bare"),
                    beaker.get("added_us_vs_bare"),
                    None if "speedup_vs_beaker" not in ours else f"{ours['speedup_vs_beaker']:.2f}x",
                ]
            )
    headers = ("store", "workload", "bare µs", "ours µs", "Beaker µs", "ours +µs", "Beaker +µs", "ours vs Beaker")
    return _bench.table(headers, rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, from {','.join(STORES)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, from {','.join(WORKLOADS)}")
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
        metavar="STORE:WORKLOAD",
        default=None,
        help="instead of comparing, run wsgisession's peer under cProfile (e.g. memory:update) and print the top calls",
    )
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for value, known, what in ((args.stores, STORES, "store"), (args.workloads, WORKLOADS, "workload")):
        unknown = sorted(set(value) - set(known))
        if unknown or not value:
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
    if store not in STORES or workload not in WORKLOADS:
        print(f"--profile wants STORE:WORKLOAD, e.g. memory:update (not {spec!r})", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="wsgisession-bench-", dir=args.tmpdir)
    peers = [p for p in Setup(store, tmp).peers() if p.kind != "beaker"]
    try:
        ours = next(p for p in peers if p.name == "wsgisession")
        environ = environ_for(ours, workload)
        n = 50 if args.quick else calibrate(ours, environ, 2.0, 20, 200_000)
        profiler = cProfile.Profile()
        profiler.enable()
        drive(ours.app, environ, n)
        profiler.disable()
        print(f"wsgisession, {store}, {workload}: {n:,} requests under cProfile (times inflated by the profiler)")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    finally:
        for peer in peers:
            peer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _bench.exit_cleanly_on_sigterm()
    if args.profile:
        return profile(args.profile, args)
    try:
        import beaker  # noqa: F401
    except ImportError:
        print("Beaker is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    document = _bench.new_document(
        "compare",
        {
            "quick": args.quick,
            "rounds": args.rounds,
            "round_seconds": args.round_seconds,
            "stores": args.stores,
            "workloads": args.workloads,
            "statistic": "median over rounds; ratios and differences are per round, then the median",
            "beaker_options": {k: ("***" if k == "secret" else v) for k, v in BEAKER_OPTIONS.items()},
            "wsgisession_options": WSGISESSION_OPTIONS,
            "redis_url": REDIS_URL,
        },
    )
    tmp = tempfile.mkdtemp(prefix="wsgisession-bench-", dir=args.tmpdir)
    try:
        for store in args.stores:
            if store == "redis" and (problem := redis_problem()) is not None:
                _bench.skip(document, store, problem)
                continue
            try:
                document["results"].append(run_store(store, args, tmp))
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
