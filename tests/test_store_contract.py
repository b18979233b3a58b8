"""The conformance suite on the embedded stores (server-backed stores run it in their own modules)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgisession import MemoryStore, SQLiteStore
from wsgisession.testing import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[MemoryStore]:
        s = MemoryStore()
        yield s
        s.close()


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteStore]:
        s = SQLiteStore(tmp_path / "contract.db")
        yield s
        s.close()


class TestSQLiteStoreCustomTable(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteStore]:
        s = SQLiteStore.from_url(f"sqlite:///{tmp_path}/custom.db?table=my_sessions&timeout=2")
        yield s
        s.close()
