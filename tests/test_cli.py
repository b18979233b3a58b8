"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from wsgisession import SQLiteStore
from wsgisession.ids import new_id, store_key
from wsgisession.stores.base import Update


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgisession", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_prune_removes_expired_and_says_how_many(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    now = time.time()
    for i in range(3):
        store.save(store_key(new_id()), Update(set={"i": i}, expires_at=now - 1 - i, created_at=now - 100))
    live = store_key(new_id())
    store.save(live, Update(set={"live": True}, expires_at=now + 600, created_at=now))
    store.close()
    result = run("prune", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "removed 3 expired sessions"
    again = run("prune", f"sqlite:///{tmp_path}/s.db")
    assert again.stdout.strip() == "removed 0 expired sessions"
    store = SQLiteStore(tmp_path / "s.db")
    assert store.count() == 1
    store.close()


def test_bad_url_is_one_line_and_exit_2() -> None:
    result = run("prune", "mongodb://localhost/x")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown store URL" in lines[0]


def test_unreachable_sqlite_directory_is_exit_2(tmp_path: Path) -> None:
    result = run("prune", f"sqlite:///{tmp_path}/missing/dir/s.db")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_password_is_not_echoed() -> None:
    result = run("prune", "bogus://user:hunter2@host/db")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "prune" in result.stdout
    assert run().returncode == 2
