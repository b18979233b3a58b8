"""Cost of finding the session cookie in a hostile Cookie header, beside WebOb's parser.

A header made of one long run of characters without ``=`` (the case that
makes a backtracking cookie regex quadratic), followed by a valid session
cookie. For each size the script times wsgisession's extraction (with the
32 KiB size limit lifted, to show the parser's own cost) and WebOb's
``Request.cookies``, and prints microseconds and the ratio. Linear cost shows
as a constant time per KiB.

    python benchmarks/cookie_parse.py [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import webob

from wsgisession import MemoryStore, SessionMiddleware
from wsgisession import middleware as mw_module
from wsgisession.ids import new_id

SECRET = "benchmark-secret-" + "s" * 32
SIZES_KIB = [1, 2, 4, 8, 16, 32, 64]


def _app(environ: Any, start_response: Any) -> list[bytes]:
    return []


def _time(fn: Any, budget: float) -> float:
    """Median seconds per call over rounds that together take about *budget* seconds."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(budget / 7 / once))
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "cookie-parse-latest.json")
    parser.add_argument("--quick", action="store_true", help="tiny budget, for a smoke run")
    parser.add_argument(
        "--webob-max-kib", type=int, default=16, help="largest header to give WebOb (64 KiB takes it about a minute)"
    )
    args = parser.parse_args()
    budget = 0.02 if args.quick else 0.7

    middleware = SessionMiddleware(_app, SECRET, MemoryStore())
    mw_module.MAX_COOKIE_HEADER = 1 << 30  # measure the parser itself, not the size limit
    signed = middleware._signer.sign(new_id())
    rows = []
    print(f"{'header':>8}  {'wsgisession µs':>15}  {'µs/KiB':>7}  {'WebOb µs':>12}  {'WebOb/ours':>10}")
    for kib in SIZES_KIB:
        header = "a" * (kib * 1024) + f"; session={signed}"
        environ = {"HTTP_COOKIE": header}
        ours = _time(lambda environ=environ: middleware._session_id(environ), budget)
        assert middleware._session_id(environ)[0] is not None
        if kib > args.webob_max_kib:
            rows.append({"kib": kib, "wsgisession_us": ours * 1e6, "webob_us": None, "ratio": None})
            print(f"{kib:>6}KB  {ours * 1e6:>15.1f}  {ours * 1e6 / kib:>7.2f}  {'(skipped)':>12}")
            continue
        # WebOb's cost grows with the square of the size (seconds per call at 8 KiB and
        # more): one call is measured there, which timer noise cannot disturb.
        start = time.perf_counter()
        webob.Request({"HTTP_COOKIE": header}).cookies.get("session")
        once = time.perf_counter() - start
        if once < 0.05:
            once = _time(lambda header=header: webob.Request({"HTTP_COOKIE": header}).cookies.get("session"), budget)
        rows.append({"kib": kib, "wsgisession_us": ours * 1e6, "webob_us": once * 1e6, "ratio": once / ours})
        print(f"{kib:>6}KB  {ours * 1e6:>15.1f}  {ours * 1e6 / kib:>7.2f}  {once * 1e6:>12.0f}  {once / ours:>9.0f}x")
    report = {
        "benchmark": "cookie_parse",
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "webob": webob.__version__ if hasattr(webob, "__version__") else "unknown",
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
