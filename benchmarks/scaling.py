"""Does a store slow down as it fills up? And does a large prune stall the readers?

For each store (SQLite, File, PostgreSQL):

1. **Per-request cost by store size.** Two stores are filled, one with
   ``--small`` live sessions (default 1,000) and one with ``--large``
   (default 1,000,000; the File store is capped by ``--max-sessions``). A
   "request" is what the middleware asks of a store for a request that updates
   its session: ``load(key)`` then ``save(key, update of one key)``, on a
   session picked at random from the live ones. The two stores take turns,
   round after round; the figure is the median time per request, and the
   ratio large/small is the median of the per-round ratios.

2. **Prune under load.** ``--prune`` expired sessions (default: as many as
   the large store holds live ones) are added to the large store, then
   ``prune()`` runs while a reader thread, with its own store object (its own
   connection, as another worker would have), loads live sessions in a loop.
   Reported: how long the prune took, how many it removed, and the reader's
   latencies meanwhile (p50, p99, worst), beside the same reader's latencies
   with no prune running.

Stores are filled by writing rows (or files) directly in the store's own
format, which is far faster than a million ``save()`` calls; every timed
operation goes through the store's public methods.

    python benchmarks/scaling.py                     # everything: several minutes, a few GB of disk
    python benchmarks/scaling.py --stores sqlite     # one store
    python benchmarks/scaling.py --quick             # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import multiprocessing
import os
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import _bench

from wsgisession import _clock
from wsgisession.stores.base import Record, Update
from wsgisession.stores.file import FileStore, encode_record_file
from wsgisession.stores.sqlite import SQLiteStore

STORES = ("sqlite", "file", "postgres")
POSTGRES_URL = os.environ.get("WSGISESSION_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TTL = 86400.0


def session_key(label: str, index: int) -> str:
    """The store key of session *index* of a population: 64 hex digits, like the real ones."""
    return hashlib.sha256(f"{label}:{index}".encode()).hexdigest()


def session_data(index: int) -> dict[str, Any]:
    return {"user": f"user{index}", "n": 0, "_csrf_token": "x" * 43}


# -- backends: how to make, fill and drop each kind of store -----------------------------------


def flush_to_disk() -> None:
    """Write back what a bulk fill left dirty, so its writeback does not land on the timed fsyncs.

    On ext4 (data=ordered) an fsync commits the journal, which first writes out
    every dirty data block: without this, the first timed saves after filling a
    million files would pay for writing them all.
    """
    os.sync()


class Backend:
    """One kind of store: opens empty stores and fills them in bulk."""

    name = ""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir

    def open(self, label: str) -> Any:
        raise NotImplementedError

    def reopen(self, store: Any) -> Any:
        """A second store object on the same data, as another worker process would have."""
        raise NotImplementedError

    def fill(self, store: Any, label: str, count: int, *, expired: bool) -> None:
        raise NotImplementedError

    def times(self, index: int, now: float, *, expired: bool) -> tuple[float, float]:
        created = now - 3600 - index % 3600
        return created, (now - 1 - index % 3600 if expired else now + TTL)

    def drop(self, store: Any) -> None:
        store.close()


class SQLiteBackend(Backend):
    name = "sqlite"

    def open(self, label: str) -> SQLiteStore:
        store = SQLiteStore(os.path.join(self.workdir, f"{label}.db"))
        store.count()  # creates the table and its indexes
        return store

    def reopen(self, store: SQLiteStore) -> SQLiteStore:
        return SQLiteStore(store.path, table=store.table)

    def fill(self, store: SQLiteStore, label: str, count: int, *, expired: bool) -> None:
        now = _clock.now()
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = OFF")
            insert = f"INSERT INTO {store.table} (key, data, created_at, expires_at, user_id) VALUES (?, ?, ?, ?, NULL)"
            for start in range(0, count, 50_000):
                rows = []
                for i in range(start, min(count, start + 50_000)):
                    created, expires = self.times(i, now, expired=expired)
                    rows.append((session_key(label, i), json.dumps(session_data(i)), created, expires))
                conn.execute("BEGIN")
                conn.executemany(insert, rows)
                conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("ANALYZE")
        finally:
            conn.close()
        flush_to_disk()


class FileBackend(Backend):
    name = "file"

    def open(self, label: str) -> FileStore:
        return FileStore(os.path.join(self.workdir, label))

    def reopen(self, store: FileStore) -> FileStore:
        return FileStore(store._dir)

    def fill(self, store: FileStore, label: str, count: int, *, expired: bool) -> None:
        # The record file FileStore writes for a new session (two slots, see
        # wsgisession.stores.file): the expiry doubles as the file's mtime.
        # No fsync: a benchmark's data need not survive a power cut, and one
        # fsync per file would take an hour.
        now = _clock.now()
        directory = store._dir
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for i in range(count):
            created, expires = self.times(i, now, expired=expired)
            content = encode_record_file(Record(session_data(i), created, expires))
            fd = os.open(os.path.join(directory, session_key(label, i)), flags, 0o600)
            try:
                os.write(fd, content)
                os.utime(fd, (expires, expires))
            finally:
                os.close(fd)
        flush_to_disk()

    def drop(self, store: FileStore) -> None:
        store.close()
        shutil.rmtree(store._dir, ignore_errors=True)


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        self.prefix = f"bench_{secrets.token_hex(4)}"

    def open(self, label: str) -> Any:
        from wsgisession.stores.postgres import PostgresStore

        store = PostgresStore(POSTGRES_URL, table=f"{self.prefix}_{label}")
        store.count()  # creates the table and its indexes
        return store

    def reopen(self, store: Any) -> Any:
        from wsgisession.stores.postgres import PostgresStore

        return PostgresStore(POSTGRES_URL, table=store.table)

    def fill(self, store: Any, label: str, count: int, *, expired: bool) -> None:
        import psycopg
        from psycopg import sql

        # The row format PostgresStore writes: data is a jsonb object mapping
        # each session key to its value as JSON text.
        now = _clock.now()
        table = sql.Identifier(store.table)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            with conn.cursor() as cur:
                copy_sql = sql.SQL("COPY {t} (key, data, created_at, expires_at) FROM STDIN").format(t=table)
                with cur.copy(copy_sql) as copy:
                    for i in range(count):
                        created, expires = self.times(i, now, expired=expired)
                        data = {k: json.dumps(v, separators=(",", ":")) for k, v in session_data(i).items()}
                        copy.write_row((session_key(label, i), json.dumps(data), created, expires))
            conn.execute(sql.SQL("VACUUM ANALYZE {t}").format(t=table))
            conn.execute("CHECKPOINT")

    def drop(self, store: Any) -> None:
        import psycopg
        from psycopg import sql

        table = store.table
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {t}").format(t=sql.Identifier(table)))


BACKENDS: dict[str, type[Backend]] = {"sqlite": SQLiteBackend, "file": FileBackend, "postgres": PostgresBackend}


def postgres_problem() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'wsgisession[postgres]')"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}"
    return None


# -- measurements -----------------------------------------------------------------------------


def request(store: Any, key: str) -> None:
    """What one session-updating request asks of its store."""
    record = store.load(key)
    if record is None:
        raise RuntimeError(f"{store!r}: a live session was not found")
    store.save(key, Update(set={"n": record.data["n"] + 1}, expires_at=_clock.now() + TTL))


def time_requests(store: Any, keys: list[str], latencies: list[float] | None = None) -> float:
    """Seconds to serve *keys*; each request's own time is appended to *latencies* if given."""
    clock = time.perf_counter
    started = clock()
    if latencies is None:
        for key in keys:
            request(store, key)
    else:
        for key in keys:
            began = clock()
            request(store, key)
            latencies.append(clock() - began)
    return clock() - started


def per_request_cost(
    stores: dict[str, tuple[Any, str, int]], rounds: int, target: float, max_n: int, rng: random.Random
) -> dict[str, Any]:
    """Median µs per request on each store, taking turns round by round."""

    def sample(label: str, population: int, n: int) -> list[str]:
        return [session_key(label, rng.randrange(population)) for _ in range(n)]

    sizes: dict[str, int] = {}
    for name, (store, label, population) in stores.items():
        time_requests(store, sample(label, population, 10))  # warm up connections and caches
        n = 8
        while True:
            elapsed = time_requests(store, sample(label, population, n))
            if elapsed >= min(0.05, target / 2) or n >= max_n:
                break
            n *= 4
        sizes[name] = max(5, min(max_n, round(target / (elapsed / n))))
    names = list(stores)
    us: dict[str, list[float]] = {name: [] for name in names}
    # Every request's own time too: the mean hides whether a store is slower on
    # every request or on a few (a checkpoint, a page read back from disk).
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            store, label, population = stores[name]
            keys = sample(label, population, sizes[name])
            gc.collect()
            us[name].append(time_requests(store, keys, latencies[name]) / len(keys) * 1e6)
    small, large = us["small"], us["large"]
    pct = {
        name: {f"p{q}": round(_bench.percentile(values, q / 100) * 1e6, 1) for q in (50, 90, 99)}
        for name, values in latencies.items()
    }
    return {
        "requests_per_round": sizes,
        "us_per_request_rounds": {name: [round(v, 2) for v in values] for name, values in us.items()},
        "small_us": round(_bench.median(small), 2),
        "large_us": round(_bench.median(large), 2),
        "ratio_large_over_small": round(_bench.median([b / a for a, b in zip(small, large, strict=True)]), 3),
        "request_percentiles_us": pct,
        "p50_ratio_large_over_small": round(pct["large"]["p50"] / pct["small"]["p50"], 3),
    }


class Reader(threading.Thread):
    """Loads random live sessions in a loop, recording each load's latency."""

    def __init__(self, store: Any, label: str, population: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.keys = [
            session_key(label, i) for i in random.Random(seed).sample(range(population), min(population, 1000))
        ]
        self.latencies: list[float] = []
        self.missing = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        keys, load, clock, latencies = self.keys, self.store.load, time.perf_counter, self.latencies
        i = 0
        try:
            while not self.stop.is_set():
                started = clock()
                if load(keys[i % len(keys)]) is None:
                    self.missing += 1
                latencies.append(clock() - started)
                i += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def summary(self) -> dict[str, Any]:
        ms = [v * 1e3 for v in self.latencies]
        return {
            "loads": len(ms),
            "missing": self.missing,
            "p50_ms": round(_bench.percentile(ms, 0.5), 3),
            "p99_ms": round(_bench.percentile(ms, 0.99), 3),
            "max_ms": round(max(ms), 3) if ms else None,
            "over_10ms": sum(1 for v in ms if v > 10),
            "over_50ms": sum(1 for v in ms if v > 50),
            "worst_ms": [round(v, 2) for v in sorted(ms)[-5:][::-1]],
        }


def _stall_probe(ready: Any, stop: Any, result: Any) -> None:
    """In its own process: how late a 1 ms sleep wakes up, i.e. the machine's own scheduling noise."""
    worst = 0.0
    ready.set()
    while not stop.is_set():
        started = time.perf_counter()
        time.sleep(0.001)
        worst = max(worst, time.perf_counter() - started - 0.001)
    result.value = worst * 1e3


@contextlib.contextmanager
def stall_probe() -> Iterator[dict[str, float]]:
    """Measure, meanwhile, the worst oversleep of a process that does nothing but sleep."""
    context = multiprocessing.get_context("spawn")
    ready, stop, result = context.Event(), context.Event(), context.Value("d", -1.0)
    process = context.Process(target=_stall_probe, args=(ready, stop, result), daemon=True)
    process.start()
    ready.wait(30)
    found: dict[str, float] = {}
    try:
        yield found
    finally:
        stop.set()
        process.join(10)
        found["max_oversleep_ms"] = round(result.value, 3)


@contextlib.contextmanager
def reading(backend: Backend, store: Any, label: str, population: int, seed: int) -> Iterator[Reader]:
    reader_store = backend.reopen(store)
    reader = Reader(reader_store, label, population, seed)
    reader.store.load(reader.keys[0])  # connect before the clock starts
    reader.start()
    try:
        yield reader
    finally:
        reader.stop.set()
        reader.join()
        reader_store.close()
        if reader.error is not None:
            raise RuntimeError(f"the reader thread failed: {reader.error!r}") from reader.error


def prune_under_load(
    backend: Backend, store: Any, label: str, live: int, expired: int, baseline_seconds: float, seed: int
) -> dict[str, Any]:
    started = time.perf_counter()
    backend.fill(store, label + "-expired", expired, expired=True)
    filled = time.perf_counter() - started
    with stall_probe() as idle_noise, reading(backend, store, label, live, seed) as idle_reader:
        time.sleep(baseline_seconds)
    with stall_probe() as noise, reading(backend, store, label, live, seed) as reader:
        started = time.perf_counter()
        removed = store.prune()
        seconds = time.perf_counter() - started
    return {
        "expired": expired,
        "live": live,
        "fill_seconds": round(filled, 2),
        "removed": removed,
        "seconds": round(seconds, 3),
        "removed_per_second": round(removed / seconds) if seconds else None,
        "reader_during_prune": reader.summary(),
        "reader_without_prune": {**idle_reader.summary(), "seconds": baseline_seconds},
        # A process that only sleeps 1 ms at a time, run alongside: its worst
        # late wake-up is the machine's own stall, not the store's.
        "machine_stall_during_prune": noise,
        "machine_stall_without_prune": idle_noise,
    }


def run_store(name: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    backend = BACKENDS[name](workdir)
    large = min(args.large, args.max_sessions) if name == "file" else args.large
    expired = args.prune if args.prune is not None else large
    if name == "file":
        expired = min(expired, args.max_sessions)
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"store": name, "small": args.small, "large": large}
    opened: list[Any] = []
    try:
        populations = {}
        for size_name, count in (("small", args.small), ("large", large)):
            label = f"{size_name}-{secrets.token_hex(3)}"
            store = backend.open(size_name)
            opened.append(store)
            started = time.perf_counter()
            backend.fill(store, label, count, expired=False)
            result[f"fill_{size_name}_seconds"] = round(time.perf_counter() - started, 2)
            populations[size_name] = (store, label, count)
        print(f"{name}: filled {args.small:,} and {large:,} live sessions", flush=True)
        result["per_request"] = per_request_cost(populations, args.rounds, args.round_seconds, args.max_n, rng)
        print(_bench.table(*per_request_rows(name, result)), end="\n\n", flush=True)
        store, label, count = populations["large"]
        result["prune"] = prune_under_load(backend, store, label, count, expired, args.baseline_seconds, args.seed)
        print(_bench.table(*prune_rows([result])), end="\n\n", flush=True)
    finally:
        for store in opened:
            backend.drop(store)
    return result


def per_request_rows(name: str, result: dict[str, Any]) -> tuple[tuple[str, ...], list[list[object]]]:
    p = result["per_request"]
    headers = ("store", "small", "µs/request", "p50", "p99", "large", "µs/request", "p50", "p99", "large/small", "p50s")
    pct = p["request_percentiles_us"]
    return headers, [
        [
            name,
            result["small"],
            p["small_us"],
            pct["small"]["p50"],
            pct["small"]["p99"],
            result["large"],
            p["large_us"],
            pct["large"]["p50"],
            pct["large"]["p99"],
            p["ratio_large_over_small"],
            p["p50_ratio_large_over_small"],
        ]
    ]


def prune_rows(results: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[list[object]]]:
    headers = ("store", "expired", "live", "prune s", "removed/s", "reader p50 ms", "p99 ms", "max ms", "idle max ms")
    rows: list[list[object]] = []
    for r in results:
        if "prune" not in r:
            continue
        p, during, idle = r["prune"], r["prune"]["reader_during_prune"], r["prune"]["reader_without_prune"]
        rows.append(
            [
                r["store"],
                p["expired"],
                p["live"],
                p["seconds"],
                p["removed_per_second"],
                during["p50_ms"],
                during["p99_ms"],
                during["max_ms"],
                idle["max_ms"],
            ]
        )
    return headers, rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, from {','.join(STORES)}")
    parser.add_argument("--small", type=int, default=1_000, help="live sessions in the small store (default 1,000)")
    parser.add_argument(
        "--large", type=int, default=1_000_000, help="live sessions in the large store (default 1,000,000)"
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=200_000,
        help="cap on the File store's sessions, live and expired alike (default 200,000: a file each)",
    )
    parser.add_argument("--prune", type=int, default=None, help="expired sessions to prune (default: as many as large)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the per-request comparison (default 7)")
    parser.add_argument("--round-seconds", type=float, default=0.3, help="target length of one batch (default 0.3)")
    parser.add_argument("--baseline-seconds", type=float, default=2.0, help="reader alone, for comparison (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random session picks")
    parser.add_argument("--quick", action="store_true", help="small stores and short rounds: a smoke test")
    parser.add_argument("--json", default=str(_bench.RESULTS / "scaling-latest.json"), help="where to write results")
    parser.add_argument("--tmpdir", default=None, help="where the SQLite and File stores live (default: system temp)")
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(args.stores) - set(STORES))
    if unknown or not args.stores:
        parser.error(f"unknown store(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(STORES)}")
    if args.quick:
        args.small, args.large, args.max_sessions = 100, 2_000, 2_000
        args.prune = 1_000 if args.prune is None else args.prune
        args.rounds, args.round_seconds, args.baseline_seconds = 3, 0.01, 0.05
        args.max_n = 20
    else:
        args.max_n = 100_000
    if min(args.small, args.large, args.max_sessions, args.rounds) < 1 or (args.prune is not None and args.prune < 0):
        parser.error("sizes and rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _bench.exit_cleanly_on_sigterm()
    document = _bench.new_document(
        "scaling",
        {
            "quick": args.quick,
            "stores": args.stores,
            "small": args.small,
            "large": args.large,
            "max_sessions_file": args.max_sessions,
            "prune": args.prune,
            "rounds": args.rounds,
            "round_seconds": args.round_seconds,
            "request": "store.load(key) + store.save(key, Update(set one key)) on a random live session",
            "statistic": "median over rounds; the large/small ratio is per round, then the median",
            "postgres_url": POSTGRES_URL,
        },
    )
    workdir = tempfile.mkdtemp(prefix="wsgisession-scaling-", dir=args.tmpdir)
    try:
        for name in args.stores:
            if name == "postgres" and (problem := postgres_problem()) is not None:
                _bench.skip(document, name, problem)
                continue
            document["results"].append(run_store(name, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    done = [r for r in document["results"] if "skipped" not in r]
    rows = [row for r in done for row in per_request_rows(r["store"], r)[1]]
    print(_bench.table(per_request_rows("", done[0])[0] if done else (), rows) if done else "nothing ran")
    print()
    print(_bench.table(*prune_rows(done)))
    path = _bench.write_json(args.json, document)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
