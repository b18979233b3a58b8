"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgisession import SQLiteStore
from wsgisession.ids import new_id, store_key
from wsgisession.session import _handle
from wsgisession.stores.base import Update

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsgisession", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "s.db")
    store.load(store_key(new_id()))  # the app has opened it: the file and table exist
    yield f"sqlite:///{tmp_path}/s.db", store
    store.close()


def add(store: SQLiteStore, *, ttl: float = 600, user: str | None = None, **data: object) -> str:
    key = store_key(new_id())
    now = time.time()
    store.save(key, Update(set=data, expires_at=now + ttl, created_at=now - 10, user_id=user))
    return key


def test_prune_removes_expired_and_says_how_many(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    for _ in range(3):
        add(store, ttl=-1)
    add(store)
    result = run("prune", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "removed 3 expired sessions"
    assert result.stderr == "", "no progress bar when stderr is not a terminal"
    assert run("prune", url, "--batch-size", "2").stdout.strip() == "removed 0 expired sessions"
    assert store.count() == 1


def test_prune_in_small_batches(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    for _ in range(7):
        add(store, ttl=-1)
    result = run("prune", url, "--batch-size", "2")
    assert result.stdout.strip() == "removed 7 expired sessions"


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_bad_batch_size_is_usage_error(db: tuple[str, SQLiteStore], bad: str) -> None:
    result = run("prune", db[0], "--batch-size", bad)
    assert result.returncode == 2
    assert "batch-size" in result.stderr


def test_count(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    add(store)
    add(store, user="alice")
    add(store, ttl=-1)
    result = run("count", url)
    assert result.returncode == 0
    assert result.stdout.strip() == "2"


def test_list_and_end_a_users_sessions(db: tuple[str, SQLiteStore]) -> None:
    url, store = db
    keys = [add(store, user="alice", _user_agent=f"Browser {i}") for i in range(2)]
    bob = add(store, user="bob")
    listing = run("list", url, "--user", "alice")
    assert listing.returncode == 0
    lines = listing.stdout.strip().splitlines()
    assert lines[0].startswith("handle")
    assert len(lines) == 3
    assert {_handle(k) for k in keys} == {line.split()[0] for line in lines[1:]}
    assert "Browser 0" in listing.stdout
    for key in keys:
        assert key not in listing.stdout
    assert run("list", url, "--user", "carol").stdout.strip() == "no live sessions for user 'carol'"

    ended = run("end", url, "--user", "alice")
    assert ended.returncode == 0
    assert ended.stdout.strip() == "ended 2 sessions of user 'alice'"
    assert store.sessions_of("alice") == []
    assert store.load(bob) is not None


def test_user_is_required_for_list_and_end(db: tuple[str, SQLiteStore]) -> None:
    for command in ("list", "end"):
        result = run(command, db[0])
        assert result.returncode == 2
        assert "--user" in result.stderr


def test_check_a_good_deployment(db: tuple[str, SQLiteStore]) -> None:
    result = run("check", db[0], env={"SESSION_SECRET": "s" * 40})
    assert result.returncode == 0, result.stdout
    assert "store reachable" in result.stdout
    assert "0 problems found" in result.stdout
    assert "HttpOnly; SameSite=Lax" in result.stdout
    assert (
        "over https: session=<id>.<signature>; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax; Secure" in result.stdout
    )
    assert "s" * 40 not in result.stdout


def test_check_finds_problems(tmp_path: Path) -> None:
    result = run("check", "memory://", "--secure", "false", env={"SESSION_SECRET": "short"})
    assert result.returncode == 1
    assert "BAD  secret: $SESSION_SECRET is 5 bytes" in result.stdout
    assert "BAD  MemoryStore keeps sessions in one process" in result.stdout
    assert "BAD  cookie: secure=False" in result.stdout
    assert "short" not in result.stdout.replace("$SESSION_SECRET", "")
    existing = SQLiteStore(tmp_path / "x.db")
    existing.load(store_key(new_id()))
    existing.close()
    missing = run("check", f"sqlite:///{tmp_path}/x.db", env={"SESSION_SECRET": ""})
    assert "BAD  secret: $SESSION_SECRET is not set" in missing.stdout
    bad_cookie = run(
        "check", f"sqlite:///{tmp_path}/x.db", "--cookie-name", "__Host-s", env={"SESSION_SECRET": "s" * 40}
    )
    assert bad_cookie.returncode == 1
    assert "BAD  cookie settings" in bad_cookie.stdout


GOOD_SECRET = "f" * 40


def secret_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if "secret:" in line]
    assert len(lines) >= 1, result.stdout
    return "\n".join(lines)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "session-secret.txt"
    path.write_text(GOOD_SECRET + "\n")
    path.chmod(0o600)
    return path


def test_check_reads_the_secret_from_a_file(db: tuple[str, SQLiteStore], secret_file: Path) -> None:
    result = run("check", db[0], "--secret-file", str(secret_file), env={"SESSION_SECRET": ""})
    assert result.returncode == 0, result.stdout
    assert f"ok   secret: file {secret_file} is 40 bytes (at least 32)" in result.stdout
    assert "0 problems found" in result.stdout
    assert GOOD_SECRET not in result.stdout + result.stderr


def test_check_reads_the_secret_file_named_in_the_environment(db: tuple[str, SQLiteStore], secret_file: Path) -> None:
    result = run("check", db[0], env={"SESSION_SECRET": "", "SESSION_SECRET_FILE": str(secret_file)})
    assert result.returncode == 0, result.stdout
    assert f"ok   secret: file {secret_file} ($SESSION_SECRET_FILE) is 40 bytes" in result.stdout
    # $SESSION_SECRET, when set, is what the app uses: it wins over the file.
    both = run("check", db[0], env={"SESSION_SECRET": "short", "SESSION_SECRET_FILE": str(secret_file)})
    assert both.returncode == 1
    assert "BAD  secret: $SESSION_SECRET is 5 bytes" in both.stdout


def test_check_reads_the_reference_apps_secret_file(db: tuple[str, SQLiteStore], tmp_path: Path) -> None:
    from examples import _common

    env = {"SESSION_SECRET": ""}
    database = str(tmp_path / "s.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SESSION_SECRET", raising=False)
        with pytest.warns(UserWarning, match="SESSION_SECRET is not set"):
            secret = _common.load_secret(database)
    result = run("check", db[0], "--secret-file", str(tmp_path / "session-secret.txt"), env=env)
    assert result.returncode == 0, result.stdout
    assert "is 64 bytes" in result.stdout
    assert secret not in result.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param("", "is empty", id="empty"),
        pytest.param(" \n\t\n", "is empty", id="whitespace"),
        pytest.param(b"\xff\xfe" + b"s" * 40, "is not UTF-8 text (the app reads the secret as text)", id="binary"),
        pytest.param("s" * 70_000, "is over 65536 bytes: not a secret file", id="huge"),
    ],
)
def test_check_explains_a_bad_secret_file(
    db: tuple[str, SQLiteStore], tmp_path: Path, content: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "secret.txt"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = run("check", db[0], "--secret-file", str(path), env={"SESSION_SECRET": GOOD_SECRET})
    assert result.returncode == 1
    assert secret_line(result) == f"BAD  secret: file {path} {expected}"
    assert "1 problem found" in result.stdout
    assert result.stderr == ""
    if isinstance(content, str) and content.strip():
        assert content not in result.stdout


def test_check_explains_an_unreadable_secret_file(db: tuple[str, SQLiteStore], tmp_path: Path) -> None:
    result = run("check", db[0], "--secret-file", str(tmp_path), env={"SESSION_SECRET": ""})
    assert result.returncode == 1
    assert secret_line(result) == f"BAD  secret: file {tmp_path} is a directory, not a file"
    if os.geteuid() == 0:
        return  # root reads any file: no permission to deny
    locked = tmp_path / "locked.txt"
    locked.write_text(GOOD_SECRET)
    locked.chmod(0)
    result = run("check", db[0], "--secret-file", str(locked))
    assert result.returncode == 1
    assert secret_line(result) == f"BAD  secret: file {locked} cannot be read: permission denied"


def test_check_flags_a_world_readable_secret_file(db: tuple[str, SQLiteStore], secret_file: Path) -> None:
    secret_file.chmod(0o644)
    result = run("check", db[0], "--secret-file", str(secret_file))
    assert result.returncode == 1
    assert f"BAD  secret: file {secret_file} is open to every user (mode 0644): chmod 600 or 640 it" in result.stdout
    secret_file.chmod(0o640)
    assert run("check", db[0], "--secret-file", str(secret_file)).returncode == 0


def test_check_takes_one_source_of_the_secret(db: tuple[str, SQLiteStore], secret_file: Path) -> None:
    result = run("check", db[0], "--secret-file", str(secret_file), "--secret-env", "OTHER")
    assert result.returncode == 2
    assert "not allowed with" in result.stderr
    assert "--secret-file" in run("check", "--help").stdout


def test_check_without_a_secret_says_how_to_give_one(db: tuple[str, SQLiteStore]) -> None:
    result = run("check", db[0], env={"SESSION_SECRET": "", "SESSION_SECRET_FILE": ""})
    assert result.returncode == 1
    assert secret_line(result) == "BAD  secret: $SESSION_SECRET is not set (or pass --secret-file PATH)"


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://localhost/x",
        "sqlite://",
        "file:relative",
        "redis://127.0.0.1:6379/notadb",
        "postgresql://x/y?table=a;b",
    ],
)
def test_bad_url_is_one_line_and_exit_2(url: str) -> None:
    result = run("count", url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("wsgisession: ")


def test_unreachable_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (
        ("prune", f"sqlite:///{tmp_path}/missing/dir/s.db"),
        ("count", "redis://127.0.0.1:1/0"),
        ("count", "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_password_is_not_echoed() -> None:
    result = run("prune", "bogus://user:hunter2@host/db")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr


def test_help_for_each_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("prune", "count", "list", "end", "check"):
        assert command in result.stdout
        sub = run(command, "--help")
        assert sub.returncode == 0
        assert "Exit codes" in sub.stdout
    assert run().returncode == 2
    assert run("frobnicate", "memory://").returncode == 2


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "wsgisession"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}: the package is not installed there")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("wsgisession ")
