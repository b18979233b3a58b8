"""Counters and timings for monitoring, and an optional in-process pruner.

wsgisession depends on no metrics library. Pass ``metrics=`` to
:class:`~wsgisession.SessionMiddleware` any object with ``increment`` and
``timing`` methods (see :class:`Metrics`) and feed Prometheus, StatsD or
OpenTelemetry from it::

    from prometheus_client import Counter, Histogram

    class PrometheusMetrics:
        events = Counter("wsgisession_events_total", "session events", ["event"])
        latency = Histogram("wsgisession_store_seconds", "store latency", ["operation"])

        def increment(self, name, value=1):
            self.events.labels(name).inc(value)

        def timing(self, name, seconds):
            self.latency.labels(name.removeprefix("store.")).observe(seconds)

Events (``increment``): ``load``, ``load.miss``, ``save``, ``save.dropped``,
``touch``, ``destroy``, ``bad_signature``, ``store_error``, ``prune.removed``
(by how many). Timings: ``store.load``, ``store.save``, ``store.touch``,
``store.destroy``, ``store.prune``, in seconds.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from .errors import StoreError
from .stores.base import BatchedPrune, Countable, IndexSized, ProcessLocal, Record, Store, Update, UserIndex

log = logging.getLogger("wsgisession")

T = TypeVar("T")


@runtime_checkable
class Metrics(Protocol):
    """Where wsgisession reports what it does. Both methods must be fast and never raise."""

    def increment(self, name: str, value: int = 1) -> None:
        """Count *value* occurrences of event *name*."""
        ...

    def timing(self, name: str, seconds: float) -> None:
        """Record that operation *name* took *seconds*."""
        ...


class InstrumentedStore:
    """A store that reports every call's outcome and latency to a :class:`Metrics`.

    It offers exactly the capabilities of the store it wraps (``UserIndex``,
    ``Countable``, ``BatchedPrune``, ``IndexSized``, ``ProcessLocal``), each
    instrumented: ``InstrumentedStore(store, metrics)`` makes an instance of
    the subclass that declares them.
    """

    _classes: dict[frozenset[type], type[InstrumentedStore]] = {}

    def __new__(cls, store: Store, metrics: Metrics) -> InstrumentedStore:
        if cls is not InstrumentedStore:
            return super().__new__(cls)
        mixins = frozenset(mixin for protocol, mixin in _CAPABILITIES if isinstance(store, protocol))
        made = InstrumentedStore._classes.get(mixins)
        if made is None:
            bases = tuple(mixin for _, mixin in _CAPABILITIES if mixin in mixins)
            made = type("InstrumentedStore", (*bases, InstrumentedStore), {"__slots__": ()})
            InstrumentedStore._classes[mixins] = made
        return super().__new__(made)

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.inner = store
        self.metrics = metrics

    def __repr__(self) -> str:
        return f"<instrumented {self.inner!r}>"

    def _timed(self, operation: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        except StoreError:
            self._report(self.metrics.increment, "store_error")
            raise
        finally:
            self._report(self.metrics.timing, f"store.{operation}", time.perf_counter() - started)

    @staticmethod
    def _report(method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            # A broken metrics backend must not fail the request it measures.
            log.exception("metrics hook failed")

    def load(self, key: str) -> Record | None:
        record = self._timed("load", lambda: self.inner.load(key))
        self._report(self.metrics.increment, "load" if record is not None else "load.miss")
        return record

    def save(self, key: str, update: Update) -> bool:
        written = self._timed("save", lambda: self.inner.save(key, update))
        self._report(self.metrics.increment, "save" if written else "save.dropped")
        return written

    def touch(self, key: str, expires_at: float) -> bool:
        touched = self._timed("touch", lambda: self.inner.touch(key, expires_at))
        self._report(self.metrics.increment, "touch")
        return touched

    def destroy(self, key: str) -> None:
        self._timed("destroy", lambda: self.inner.destroy(key))
        self._report(self.metrics.increment, "destroy")

    def prune(self) -> int:
        removed = self._timed("prune", self.inner.prune)
        self._report(self.metrics.increment, "prune.removed", removed)
        return removed

    def close(self) -> None:
        self.inner.close()


class _UserIndexCalls:
    inner: Any
    _timed: Callable[..., Any]

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        found: list[tuple[str, Record]] = self._timed("sessions_of", lambda: self.inner.sessions_of(user_id))
        return found

    def destroy_user(self, user_id: str) -> int:
        ended: int = self._timed("destroy_user", lambda: self.inner.destroy_user(user_id))
        return ended


class _CountCalls:
    inner: Any
    _timed: Callable[..., Any]

    def count(self) -> int:
        counted: int = self._timed("count", self.inner.count)
        return counted


class _BatchedPruneCalls:
    inner: Any
    metrics: Metrics
    _report: Callable[..., None]

    def prune_batches(self, batch_size: int = 1000) -> Iterator[int]:
        for removed in self.inner.prune_batches(batch_size):
            self._report(self.metrics.increment, "prune.removed", removed)
            yield removed


class _IndexSizeCalls:
    inner: Any

    def index_size(self) -> int:
        size: int = self.inner.index_size()
        return size


class _ProcessLocal:
    process_local: Literal[True] = True


_CAPABILITIES: tuple[tuple[type, type], ...] = (
    (UserIndex, _UserIndexCalls),
    (Countable, _CountCalls),
    (BatchedPrune, _BatchedPruneCalls),
    (IndexSized, _IndexSizeCalls),
    (ProcessLocal, _ProcessLocal),
)


class Pruner:
    """Prunes a store every *interval* seconds (give or take 20 %) from a daemon thread.

    For deployments without cron. Each run removes at most *max_batches* times
    *batch_size* sessions where the store prunes in batches (SQLite,
    PostgreSQL), so a run never holds the store for long. The thread starts
    with the first request of each worker process (a thread does not survive
    ``fork()``); failures are logged and retried at the next interval.
    """

    def __init__(self, store: Store, interval: float, *, batch_size: int = 1000, max_batches: int = 10) -> None:
        self.store = store
        self.interval = float(interval)
        self.batch_size = batch_size
        self.max_batches = max_batches
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.runs = 0

    def ensure_running(self) -> None:
        """Start the thread in this process if it is not running (cheap when it is)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._loop, name="wsgisession-pruner", daemon=True).start()

    def stop(self) -> None:
        """Stop the thread after its current run."""
        self._stop.set()

    def _loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval * random.uniform(0.8, 1.2)):
            try:
                removed = self.run_once()
            except Exception:
                log.exception("background prune failed; trying again in about %g s", self.interval)
            else:
                if removed:
                    log.info("background prune removed %d expired session(s)", removed)

    def run_once(self) -> int:
        """One bounded prune; return how many sessions it removed."""
        self.runs += 1
        if not isinstance(self.store, BatchedPrune):
            return self.store.prune()
        removed = 0
        for done, count in enumerate(self.store.prune_batches(self.batch_size), start=1):
            removed += count
            if done >= self.max_batches:
                break
        return removed
