"""The metrics hook and the in-process pruner."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import webtest

from wsgisession import ConfigurationError, SessionMiddleware, SQLiteStore, StoreError, UserIndex
from wsgisession.ids import new_id, store_key
from wsgisession.observe import InstrumentedStore, Pruner
from wsgisession.stores.base import Store, Update

from .conftest import SECRET, demo_app


class Recorder:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.timings: dict[str, list[float]] = {}

    def increment(self, name: str, value: int = 1) -> None:
        self.counts[name] += value

    def timing(self, name: str, seconds: float) -> None:
        self.timings.setdefault(name, []).append(seconds)


def test_counts_and_timings_through_the_middleware(store: Store) -> None:
    metrics = Recorder()
    app = webtest.TestApp(SessionMiddleware(demo_app, SECRET, store, metrics=metrics))
    app.get("/incr")  # no cookie: nothing loaded, one save
    app.get("/incr")  # load + save
    app.get("/read")  # load
    app.get("/read", headers={"Cookie": "session=" + "A" * 43 + "." + "B" * 43})  # bad signature
    app.get("/logout")  # load? no: destroy only
    assert metrics.counts["save"] == 2
    assert metrics.counts["load"] == 2
    assert metrics.counts["bad_signature"] == 1
    assert metrics.counts["destroy"] == 1
    assert metrics.counts["load.miss"] == 0
    assert len(metrics.timings["store.save"]) == 2
    assert all(0 <= t < 5 for t in metrics.timings["store.load"])


def test_misses_and_dropped_saves_are_counted(store: Store) -> None:
    metrics = Recorder()
    instrumented = InstrumentedStore(store, metrics)
    key = store_key(new_id())
    assert instrumented.load(key) is None
    assert instrumented.save(key, Update(set={"a": 1}, expires_at=time.time() + 60)) is False
    assert metrics.counts == Counter({"load.miss": 1, "save.dropped": 1})


def test_store_errors_are_counted_and_raised(tmp_path: Path) -> None:
    metrics = Recorder()
    store = SQLiteStore(tmp_path / "s.db")
    store.close()
    instrumented = InstrumentedStore(store, metrics)
    with pytest.raises(StoreError):
        instrumented.load(store_key(new_id()))
    assert metrics.counts["store_error"] == 1
    assert len(metrics.timings["store.load"]) == 1


def test_a_broken_metrics_backend_does_not_fail_requests(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def increment(self, name: str, value: int = 1) -> None:
            raise RuntimeError("statsd is down")

        def timing(self, name: str, seconds: float) -> None:
            raise RuntimeError("statsd is down")

    app = webtest.TestApp(SessionMiddleware(demo_app, SECRET, store, metrics=Broken()))
    assert app.get("/incr").json == 1
    assert app.get("/incr").json == 2
    assert "metrics hook failed" in caplog.text


def test_instrumented_store_keeps_the_user_index(store: Store) -> None:
    instrumented = InstrumentedStore(store, Recorder())
    assert isinstance(instrumented, UserIndex)
    assert instrumented.count() == 0


def test_metrics_must_have_the_two_methods(store: Store) -> None:
    with pytest.raises(ConfigurationError, match="increment"):
        SessionMiddleware(demo_app, SECRET, store, metrics=object())  # type: ignore[arg-type]


def _expired(store: Store, n: int) -> None:
    now = time.time()
    for _ in range(n):
        store.save(store_key(new_id()), Update(set={"x": 1}, expires_at=now - 1, created_at=now - 100))


def test_pruner_runs_in_the_background_and_is_bounded(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    _expired(store, 50)
    pruner = Pruner(store, interval=0.05, batch_size=10, max_batches=2)
    assert pruner.run_once() == 20, "one run removes at most max_batches * batch_size"
    pruner.ensure_running()
    pruner.ensure_running()  # idempotent: one thread per process
    deadline = time.monotonic() + 10
    while _remaining(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    pruner.stop()
    assert _remaining(store) == []
    assert sum(t.name == "wsgisession-pruner" for t in threading.enumerate()) <= 1
    store.close()


def _remaining(store: SQLiteStore) -> list[Any]:
    return store._connect().execute(f"SELECT key FROM {store.table}").fetchall()


def test_middleware_starts_the_pruner_on_first_request(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    _expired(store, 5)
    metrics = Recorder()
    mw = SessionMiddleware(demo_app, SECRET, store, prune_interval=0.05, metrics=metrics)
    time.sleep(0.2)
    assert len(_remaining(store)) == 5, "nothing runs before the first request"
    webtest.TestApp(mw).get("/nothing")
    deadline = time.monotonic() + 10
    while _remaining(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _remaining(store) == []
    mw.close()
    assert metrics.counts["prune.removed"] == 5


def test_pruner_survives_store_failures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.close()
    pruner = Pruner(store, interval=0.02)
    pruner.ensure_running()
    deadline = time.monotonic() + 10
    while "background prune failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    pruner.stop()
    assert "background prune failed" in caplog.text


@pytest.mark.parametrize("bad", [0, -1, True, "often"])
def test_prune_interval_is_checked(store: Store, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="prune_interval"):
        SessionMiddleware(demo_app, SECRET, store, prune_interval=bad)
