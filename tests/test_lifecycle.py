"""The session lifecycle model (wsgisession.testing.SessionLifecycle) on every store."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from wsgisession.stores.base import Store
from wsgisession.testing import SessionLifecycle

from . import servers
from .conftest import STORE_KINDS, open_store

#: Bounded for CI's time: each example runs up to 40 steps.
CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
EXAMPLES = {"memory": 600, "sqlite": 400, "file": 300, "redis": 300, "postgres": 300, "mysql": 200}


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_the_lifecycle_holds_on_every_store(kind: str, encrypt: bool, tmp_path: Path) -> None:
    if kind == "redis":
        servers.require_redis()
    elif kind == "postgres":
        servers.require_postgres()
    elif kind == "mysql":
        servers.require_mysql()
    if encrypt:
        servers.require_module("cryptography", "cannot run the lifecycle with encrypt=True")
    examples = iter(range(10**9))

    class Lifecycle(SessionLifecycle):
        def make_store(self) -> Store:
            self.opened = contextlib.ExitStack()
            folder = tmp_path / f"example-{next(examples)}"
            folder.mkdir()
            return self.opened.enter_context(open_store(kind, folder))

        def release_store(self, store: Store) -> None:
            self.opened.close()

    Lifecycle.encrypt = encrypt

    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            # Sealing changes what the session writes, not how the store keeps it: fewer examples.
            max_examples=(EXAMPLES[kind] // (3 if encrypt else 1)) if CI else 25,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
