"""The reference app under gunicorn, loaded over loopback: requests/s and latency, with and without sessions.

Two targets, one after the other, each served by the same gunicorn command
(``--workers 4`` on 127.0.0.1, a free port):

* ``session`` -- ``examples.app:app`` on a fresh SQLite store (``SESSION_DB``
  in a temp dir, a random ``SESSION_SECRET``). Every connection logs in first
  (GET /login for the CSRF token, POST /login as admin/123) and then replays
  its cookie on GET /dashboard, which reads the session, counts the visit
  (a store write), lists the user's other sessions and renders the page.
* ``plain`` -- :mod:`benchmarks.plain_app`, a static page of about the same
  size without any session: what the server and the load generator cost.

The load generator is this process: ``--connections`` threads (default 8),
each with its own ``http.client`` connection (kept alive where the worker
class allows it; gunicorn's default sync worker closes it after every
response and the client reconnects). Requests are timed end to end. The
first ``--warmup`` seconds are not counted; then ``--duration`` seconds
(default 10) are. Everything stops by itself: the threads at the deadline,
gunicorn right after.

    python benchmarks/server_load.py                  # ~25 s
    python benchmarks/server_load.py --duration 2     # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import _bench

HOST = "127.0.0.1"
TARGETS = {"session": "examples.app:app", "plain": "plain_app:app"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: str, workers: int, worker_class: str, env: dict[str, str], log: Path) -> Iterator[int]:
    """Run gunicorn on a free loopback port until the block ends; yield the port."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--chdir",
        str(_bench.ROOT),
        "--pythonpath",
        f"{_bench.ROOT},{_bench.ROOT / 'benchmarks'}",
        "--log-level",
        "warning",
        "--graceful-timeout",
        "5",
        app,
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}; see {log}:\n{log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not answer on port {port} within {START_TIMEOUT:g} s") from None
                time.sleep(0.1)
        yield port
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the gunicorn we started (its master; the master stops its workers)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group is ours: start_new_session=True
        process.wait(5)


class Client:
    """One connection and its cookie jar."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        headers = {"User-Agent": "wsgisession-server-load/1.0"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # A kept-alive connection the server had already closed: once more, on a new one.
            self.conn.close()
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        for header in response.msg.get_all("Set-Cookie") or []:
            name, _, value = header.split(";", 1)[0].strip().partition("=")
            if value:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        if response.will_close:
            self.conn.close()
        return response.status, data

    def login(self) -> None:
        status, page = self.request("GET", "/login")
        found = _CSRF.search(page.decode("utf-8", "replace"))
        if status != 200 or found is None:
            raise RuntimeError(f"GET /login: status {status}, no CSRF token in the form")
        form = urlencode({"username": "admin", "password": "123", "csrf_token": found.group(1)})
        status, _ = self.request("POST", "/login", form)
        if status != 303:
            raise RuntimeError(f"POST /login: status {status}, not the 303 of a successful login")
        status, page = self.request("GET", "/dashboard")
        if status != 200 or b"Welcome" not in page:
            raise RuntimeError(f"GET /dashboard after login: status {status}")


class Worker(threading.Thread):
    def __init__(self, port: int, login: bool, start_at: float, stop_at: float, barrier: threading.Barrier) -> None:
        super().__init__(daemon=True)
        self.client = Client(port)
        self.login = login
        self.start_at, self.stop_at = start_at, stop_at
        self.barrier = barrier
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            if self.login:
                self.client.login()
        except BaseException as exc:
            self.failure = exc
        self.barrier.wait()
        if self.failure is not None:
            return
        clock, latencies, statuses = time.perf_counter, self.latencies, self.statuses
        while True:
            started = clock()
            if started >= self.stop_at:
                break
            try:
                status, _ = self.client.request("GET", "/dashboard")
            except (OSError, http.client.HTTPException):
                self.errors += 1
                self.client.conn.close()
                continue
            finished = clock()
            if started >= self.start_at and finished <= self.stop_at:
                latencies.append(finished - started)
                statuses[status] = statuses.get(status, 0) + 1
        self.client.conn.close()


def load(port: int, login: bool, connections: int, warmup: float, duration: float) -> dict[str, Any]:
    workers: list[Worker] = []

    def set_clock() -> None:
        # Runs once every connection has logged in (scrypt takes a while), before
        # any of them is released: no worker can see a clock that is not set yet.
        start_at = time.perf_counter() + warmup
        for worker in workers:
            worker.start_at, worker.stop_at = start_at, start_at + duration

    barrier = threading.Barrier(connections + 1, action=set_clock)
    workers.extend(Worker(port, login, 0.0, 0.0, barrier) for _ in range(connections))
    for worker in workers:
        worker.start()
    barrier.wait()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    for worker in workers:
        worker.join(warmup + duration + 60)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    failures = [w.failure for w in workers if w.failure is not None]
    if failures:
        raise RuntimeError(f"{len(failures)} connection(s) could not log in: {failures[0]!r}") from failures[0]
    latencies = [v * 1e3 for w in workers for v in w.latencies]
    statuses: dict[str, int] = {}
    for w in workers:
        for status, count in w.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    client_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / duration, 1),
        "p50_ms": round(_bench.percentile(latencies, 0.50), 3),
        "p90_ms": round(_bench.percentile(latencies, 0.90), 3),
        "p99_ms": round(_bench.percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies), 3) if latencies else None,
        "statuses": statuses,
        "errors": sum(w.errors for w in workers),
        # The load generator shares the machine with the server: how much CPU it took.
        "client_cpu_seconds": round(client_cpu, 2),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per target (default 10)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds not counted first (default: duration/5, <= 2)"
    )
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class (default sync)")
    parser.add_argument("--targets", default="session,plain", help="comma-separated, from session,plain")
    parser.add_argument("--json", default=str(_bench.RESULTS / "server-load-latest.json"), help="results file")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown or not args.targets:
        parser.error(f"unknown target(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(TARGETS)}")
    if args.warmup is None:
        args.warmup = min(2.0, args.duration / 5)
    if args.duration <= 0 or args.warmup < 0 or not 1 <= args.connections <= 256 or not 1 <= args.workers <= 64:
        parser.error("need duration > 0, warmup >= 0, 1-256 connections and 1-64 workers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _bench.exit_cleanly_on_sigterm()
    if importlib.util.find_spec("gunicorn") is None:
        print("gunicorn is not installed: pip install gunicorn", file=sys.stderr)
        return 2
    document = _bench.new_document(
        "server_load",
        {
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "workers": args.workers,
            "worker_class": args.worker_class,
            "bind": HOST,
            "targets": {name: TARGETS[name] for name in args.targets},
            "store": "SQLiteStore (the reference app's default), a fresh file per run",
            "request": "GET /dashboard with the session cookie (session) / without a cookie (plain)",
        },
        results={},
    )
    tmp = Path(tempfile.mkdtemp(prefix="wsgisession-load-"))
    env = dict(os.environ)
    env.update(
        SESSION_DB=str(tmp / "sessions.sqlite3"),
        SESSION_SECRET=secrets.token_hex(32),
        PYTHONPATH=os.pathsep.join([str(_bench.ROOT), str(_bench.ROOT / "benchmarks")]),
    )
    try:
        for target in args.targets:
            with serve(TARGETS[target], args.workers, args.worker_class, env, tmp / "gunicorn.log") as port:
                result = load(port, target == "session", args.connections, args.warmup, args.duration)
            document["results"][target] = result
            print(
                f"{target:8s} {result['requests_per_second']:9,.1f} req/s  p50 {result['p50_ms']:.2f} ms  "
                f"p99 {result['p99_ms']:.2f} ms  max {result['max_ms']} ms  statuses {result['statuses']}  "
                f"errors {result['errors']}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = document["results"]
    if "session" in results and "plain" in results and results["session"]["requests_per_second"]:
        document["session_over_plain"] = {
            "throughput_ratio": round(
                results["session"]["requests_per_second"] / results["plain"]["requests_per_second"], 3
            ),
            "p50_added_ms": round(results["session"]["p50_ms"] - results["plain"]["p50_ms"], 3),
        }
        print(f"with sessions: {document['session_over_plain']}")
    path = _bench.write_json(args.json, document)
    print(f"wrote {path}")
    bad = [t for t, r in results.items() if r["errors"] or set(r["statuses"]) - {"200"} or not r["requests"]]
    if bad:
        for target in bad:
            r = results[target]
            print(
                f"failed requests in: {target} (requests {r['requests']}, statuses {r['statuses']}, "
                f"errors {r['errors']})",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
