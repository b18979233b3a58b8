"""FileStore against a real filesystem: layout, permissions, locking, crashes, full disks."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wsgisession import _clock
from wsgisession.errors import (
    ConfigurationError,
    StoreError,
    StoreFullError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from wsgisession.ids import new_id, store_key
from wsgisession.stores import base, from_url
from wsgisession.stores.base import BatchedPrune, Countable, IndexSized, ProcessLocal, Record, Store, Update, UserIndex
from wsgisession.stores.file import FileStore, encode_record_file
from wsgisession.testing import StoreContract

from . import servers

REPO = Path(base.__file__).resolve().parents[2]
HOUR = 3600.0
#: A record file's first line, for files planted around a data line on trial.
HEAD = b'{"created_at":1.0,"expires_at":9000000000.0}'


def new_key() -> str:
    return store_key(new_id())


def create(store: FileStore, key: str, ttl: float = HOUR, **values: Any) -> None:
    now = _clock.now()
    assert store.save(key, Update(set=values, created_at=now, expires_at=now + ttl))


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def tmp_files(directory: Path) -> list[str]:
    return [name for name in files_in(directory) if name.startswith(".tmp-")]


def head_of(directory: Path, key: str) -> Any:
    """The first line of *key*'s file: the record's times and user, as JSON."""
    return json.loads((directory / key).read_bytes().partition(b"\n")[0])


def plant(directory: Path, key: str, content: bytes) -> None:
    (directory / key).write_bytes(content)


def security_events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "security_event", None) == "corrupt_record"]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def store(directory: Path) -> Iterator[FileStore]:
    s = FileStore(directory)
    yield s
    s.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Move the store's clock: clock(seconds) jumps that far ahead of real time."""

    def move(offset: float) -> None:
        monkeypatch.setattr(_clock, "now", lambda: time.time() + offset)

    return move


def python(code: str, *args: str) -> subprocess.Popen[str]:
    """Run *code* in a fresh interpreter that imports this checkout of wsgisession."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def expect_line(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    if got != line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"child said {got!r}, expected {line!r}; stderr:\n{err}")


class TestFileStoreContract(StoreContract):
    # Each login here fsyncs four times (the marker's directory, the temp file,
    # the store directory, and the directories a first login makes) and each
    # destroy once: the contract's 10,000 logins took 12-16 s on an idle ext4
    # disk and over 120 s while other jobs used it.
    user_churn = 2_000

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[FileStore]:
        s = FileStore(tmp_path / "contract")
        yield s
        s.close()


class TestFileStoreContractFromURL(StoreContract):
    # The same store as above, only opened from a URL: a short churn suffices.
    user_churn = 200

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[FileStore]:
        s = FileStore.from_url(f"file://{tmp_path}/contract?lock_timeout=5")
        yield s
        s.close()


# -- the protocol, basics ------------------------------------------------------


def test_is_a_multi_process_store_with_every_capability(store: FileStore) -> None:
    assert isinstance(store, Store) and isinstance(store, base.StoreBase)
    assert not isinstance(store, ProcessLocal)
    for capability in (UserIndex, Countable, BatchedPrune, IndexSized):
        assert isinstance(store, capability)


def test_round_trip_and_file_format(store: FileStore, directory: Path) -> None:
    key = new_key()
    now = _clock.now()
    assert store.save(key, Update(set={"user": "ünï", "n": [1, 2.5, None]}, created_at=now, expires_at=now + 60))
    assert store.load(key) == Record({"user": "ünï", "n": [1, 2.5, None]}, now, now + 60)
    # Two lines of JSON: the times (and user, once bound), then the data.
    head, data = (directory / key).read_text("utf-8").split("\n")
    assert json.loads(head) == {"created_at": now, "expires_at": now + 60}
    assert data == '{"user":"ünï","n":[1,2.5,null]}'
    assert (directory / key).read_bytes() == encode_record_file(Record(json.loads(data), now, now + 60))
    # mtime carries the expiry as a hint for prune()
    assert (directory / key).stat().st_mtime == pytest.approx(now + 60, abs=1)


def test_merge_keeps_created_at_and_untouched_keys(store: FileStore) -> None:
    key = new_key()
    create(store, key, a=1, b=2, c=3)
    first = store.load(key)
    assert first is not None
    later = _clock.now() + 5
    assert store.save(key, Update(set={"b": 20}, delete=frozenset({"c"}), created_at=later, expires_at=later + 99))
    record = store.load(key)
    assert record == Record({"a": 1, "b": 20}, first.created_at, later + 99)


def test_touch_changes_only_the_expiry(store: FileStore, directory: Path) -> None:
    key = new_key()
    create(store, key, a=1)
    before = store.load(key)
    assert before is not None
    assert store.touch(key, before.expires_at + 500)
    after = store.load(key)
    assert after == Record({"a": 1}, before.created_at, before.expires_at + 500)
    assert (directory / key).stat().st_mtime == pytest.approx(before.expires_at + 500, abs=1)
    assert store.touch(new_key(), _clock.now() + 10) is False


def test_expired_record_is_absent_and_save_does_not_revive_it(
    store: FileStore, directory: Path, clock: Callable[[float], None]
) -> None:
    key = new_key()
    create(store, key, ttl=10, a=1)
    content = (directory / key).read_bytes()
    clock(11)
    assert store.load(key) is None
    assert store.touch(key, _clock.now() + 100) is False
    assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + 100)) is False
    assert (directory / key).read_bytes() == content  # nothing written
    # A new session under the same key replaces it: old data does not leak in.
    now = _clock.now()
    assert store.save(key, Update(set={"b": 2}, created_at=now, expires_at=now + 100))
    assert store.load(key) == Record({"b": 2}, now, now + 100)


def test_expires_exactly_now_is_expired(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    create(store, key, a=1)
    record = store.load(key)
    assert record is not None
    monkeypatch.setattr(_clock, "now", lambda: record.expires_at)
    assert store.load(key) is None


def test_an_injected_clock_decides_expiry(directory: Path) -> None:
    now = [1_000_000.0]
    s = FileStore(directory, clock=lambda: now[0])
    key = new_key()
    assert s.save(key, Update(set={"a": 1}, created_at=now[0], expires_at=now[0] + 10))
    assert s.load(key) is not None and s.count() == 1
    now[0] += 11
    assert s.load(key) is None and s.count() == 0
    assert s.touch(key, now[0] + 10) is False
    assert s.prune() == 1


def test_destroy_wins(store: FileStore, directory: Path) -> None:
    key = new_key()
    create(store, key, a=1)
    assert store.load(key) is not None  # a request loads the session...
    FileStore(directory).destroy(key)  # ...another logs out...
    # ...and the first one's save must not bring it back.
    assert store.save(key, Update(set={"b": 2}, expires_at=_clock.now() + HOUR)) is False
    assert store.load(key) is None
    assert key not in files_in(directory)
    store.destroy(key)  # absent: no error


def test_load_reads_expiry_from_content_not_mtime(store: FileStore, directory: Path) -> None:
    live, dead = new_key(), new_key()
    create(store, live, a=1)
    create(store, dead, ttl=-5, a=1)
    os.utime(directory / live, (0, 0))
    os.utime(directory / dead, (4e9, 4e9))
    assert store.load(live) is not None
    assert store.load(dead) is None


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../../etc/passwd", id="traversal"),
        pytest.param("A" * 64, id="uppercase"),
        pytest.param("a" * 63, id="short"),
        pytest.param("a" * 64 + "\n", id="newline"),
        pytest.param(".locks", id="lock-dir"),
        pytest.param(".tmp-0123456789abcdef", id="temp-name"),
        pytest.param(None, id="none"),
    ],
)
def test_invalid_keys_never_reach_a_path(store: FileStore, directory: Path, key: Any) -> None:
    before = files_in(directory)
    assert store.load(key) is None
    assert store.touch(key, _clock.now() + 10) is False
    store.destroy(key)
    with pytest.raises(ValueError, match="not a store key"):
        store.save(key, Update(set={"a": 1}, created_at=0.0, expires_at=_clock.now() + 10))
    assert files_in(directory) == before


def test_close_is_idempotent(directory: Path) -> None:
    s = FileStore(directory)
    s.close()
    s.close()


# -- every write: a temp file, fsync, rename, fsync of the directory ----------------------------


def test_every_write_replaces_the_file_through_a_synced_temp_file(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    create(store, key, n=0)
    original = (directory / key).open("rb")  # held open, so that its inode number is not reused
    events: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        real = getattr(os, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "fsync":
                events.append("fsync dir" if stat.S_ISDIR(os.fstat(args[0]).st_mode) else "fsync file")
            elif name == "open" and args[1] & os.O_EXCL:
                events.append("create temp")
            elif name != "open":
                events.append(name)
            return real(*args, **kwargs)

        return call

    for name in ("open", "write", "pwrite", "fdatasync", "fsync", "utime", "replace", "rename"):
        monkeypatch.setattr(os, name, spy(name))
    assert store.save(key, Update(set={"n": 1}, expires_at=_clock.now() + HOUR))
    assert store.touch(key, _clock.now() + 2 * HOUR)
    monkeypatch.undo()
    # The mtime hint is set before the fsync, so it reaches the disk with the
    # data it describes; the rename only after, so the name never points at
    # data that is not on disk.
    assert events == ["create temp", "write", "utime", "fsync file", "replace", "fsync dir"] * 2
    assert (directory / key).stat().st_ino != os.fstat(original.fileno()).st_ino
    assert b'"n":0' in original.read()  # the old file was never written to
    original.close()
    record = store.load(key)
    assert record is not None and record.data == {"n": 1}
    assert tmp_files(directory) == []
    assert files_in(directory) == {key, ".locks"}


_UPDATER = """
import sys, time
from wsgisession.stores.base import Update
from wsgisession.stores.file import FileStore

store = FileStore(sys.argv[1])
key, count = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for n in range(1, count + 1):
    assert store.save(key, Update(set={"n": n, "pad": "x" * (n * 37 % 9000)}, expires_at=time.time() + 3600))
print("done", flush=True)
"""

_READER = """
import logging, sys
from wsgisession.stores.file import FileStore

class Count(logging.Handler):
    events = 0
    def emit(self, record):
        Count.events += 1

logging.getLogger("wsgisession.security").addHandler(Count())
store = FileStore(sys.argv[1])
key, last = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
loads, n = 0, 0
while n < last:
    record = store.load(key)
    loads += 1
    if record is None:
        print("absent after", loads, flush=True)
        sys.exit(1)
    assert record.data["pad"] == "x" * (record.data["n"] * 37 % 9000), record.data
    assert record.data["n"] >= n, (record.data["n"], n)
    n = record.data["n"]
print("read", loads, "corrupt", Count.events, flush=True)
"""


def test_readers_never_see_a_partial_or_missing_record(
    store: FileStore, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Readers take no lock: they open the old file or the new one, whole.
    # Records up to 9 KB: bigger than a page, so a torn write would show.
    count = 300
    key = new_key()
    create(store, key, n=0, pad="")
    writer = python(_UPDATER, str(directory), key, str(count))
    reader = python(_READER, str(directory), key, str(count))
    expect_line(writer, "ready")
    expect_line(reader, "ready")
    done = threading.Event()
    problems: list[str] = []
    loads = [0, 0]

    def read(index: int) -> None:
        own = FileStore(directory)  # one thread shares the test's store, one has its own
        s = store if index == 0 else own
        n = 0
        while not done.is_set() or n < count:
            record = s.load(key)
            loads[index] += 1
            if record is None:
                problems.append(f"absent after {loads[index]} loads")
                return
            if record.data["pad"] != "x" * (record.data["n"] * 37 % 9000) or record.data["n"] < n:
                problems.append(f"{record.data} after n={n}")
                return
            n = record.data["n"]

    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        expect_line(writer, "done")
        done.set()
        for t in threads:
            t.join(30)
    out, err = reader.communicate(timeout=60)
    writer.communicate(timeout=10)
    assert writer.returncode == 0
    assert problems == []
    assert reader.returncode == 0, out + err
    assert out.split()[-1] == "0", out  # nothing logged as corrupt in the reading process
    assert int(out.split()[1]) > 100 and min(loads) > 100  # they really read while it wrote
    assert security_events(caplog) == []
    assert tmp_files(directory) == []


# -- the directory -----------------------------------------------------------------


def test_permissions(tmp_path: Path) -> None:
    # umask 0: the modes must come from the store, not from a friendly umask.
    old = os.umask(0)
    try:
        directory = tmp_path / "sessions"
        s = FileStore(directory)
        key = new_key()
        create(s, key, a=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / ".locks").stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / key).stat().st_mode) == 0o600
    locks = list((directory / ".locks").iterdir())
    assert locks
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in locks)


def test_raw_session_id_is_never_written(store: FileStore, directory: Path) -> None:
    session_id = new_id()
    key = store_key(session_id)
    create(store, key, user="alice")
    assert store.touch(key, _clock.now() + 99)
    for path in directory.rglob("*"):
        assert session_id not in path.name
        if path.is_file():
            assert session_id.encode() not in path.read_bytes()


def test_relative_path_is_resolved_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = FileStore("rel")
    key = new_key()
    monkeypatch.chdir("/")
    create(s, key, a=1)
    assert (tmp_path / "rel" / key).exists()


def test_missing_parent_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="parent directory does not exist"):
        FileStore(tmp_path / "nope" / "sessions")
    assert not (tmp_path / "nope").exists()  # no tree created from a typo


def test_create_false_never_makes_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(StoreUnavailableError, match=f"{missing} does not exist"):
        FileStore(missing, create=False)
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        from_url(f"file://{missing}", create=False)
    assert not missing.exists()
    missing.mkdir(mode=0o700)
    s = FileStore(missing, create=False)  # an existing directory is used as it is
    create(s, new_key(), a=1)
    assert s.count() == 1


def test_the_command_line_does_not_make_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    done = subprocess.run(
        [sys.executable, "-m", "wsgisession", "count", f"file://{missing}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2, done.stderr
    assert "does not exist" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not missing.exists()


def test_path_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileStore(tmp_path / "f")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileStore(tmp_path / "f", create=False)


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "5", True])
def test_bad_lock_timeout(directory: Path, value: Any) -> None:
    with pytest.raises(ConfigurationError, match="lock_timeout"):
        FileStore(directory, lock_timeout=value)
    assert not directory.exists()


def test_loose_directory_permissions_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        FileStore(directory)
    assert "accessible to other users" in caplog.text


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "ro"
    if os.geteuid() != 0:
        target.mkdir()
        target.chmod(0o500)
        yield target
        target.chmod(0o700)
        return
    with servers.tmpfs(target, "ro,size=64k"):  # root ignores mode bits; a read-only mount stops it
        yield target


def test_unwritable_directory_is_unavailable(unwritable_dir: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="cannot write to"):
        FileStore(unwritable_dir)
    with pytest.raises(StoreUnavailableError, match="cannot create"):
        FileStore(unwritable_dir / "sessions")


# -- from_url ---------------------------------------------------------------------------


def test_from_url(tmp_path: Path) -> None:
    s = FileStore.from_url(f"file://{tmp_path}/my%20sessions?lock_timeout=2.5")
    assert repr(s) == f"<FileStore {str(tmp_path / 'my sessions')!r}>"
    assert (tmp_path / "my sessions").is_dir()
    assert isinstance(from_url(f"file://localhost{tmp_path}/x"), FileStore)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("file://sessions", id="relative-as-host"),
        pytest.param("file://example.com/var/x", id="remote-host"),
        pytest.param("file:sessions", id="relative"),
        pytest.param("sqlite:///x", id="scheme"),
        pytest.param("file:///x?lock_timeout=soon", id="timeout-not-number"),
        pytest.param("file:///x?lock_timeout=-1", id="timeout-negative"),
        pytest.param("file:///x?lock_timeout=1&lock_timeout=2", id="timeout-twice"),
        pytest.param("file:///x?lock_timeout", id="timeout-no-value"),
        pytest.param("file:///x?fsync=0", id="unknown-option"),
        pytest.param("file:///x#frag", id="fragment"),
        pytest.param("file:///x%ff", id="bad-percent-encoding"),
        pytest.param("file:///x%00y", id="nul"),
    ],
)
def test_bad_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FileStore.from_url(url)
    assert "\n" not in str(info.value)


# -- unreadable records ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(HEAD, id="no-data-line"),
        pytest.param(HEAD + b"\n", id="empty-data"),
        pytest.param(HEAD + b'\n{"a":', id="truncated-data"),
        pytest.param(HEAD[:20], id="truncated-head"),
        pytest.param(HEAD + b"\n\xff\xfe{}", id="data-not-utf8"),
        pytest.param(b"\xff\xfe\n{}", id="head-not-utf8"),
        pytest.param(HEAD + b"\nnot json", id="data-not-json"),
        pytest.param(HEAD + b"\n[1,2]", id="data-array"),
        pytest.param(HEAD + b'\n{"a":NaN}', id="data-nan"),
        pytest.param(b"[1,2]\n{}", id="head-array"),
        pytest.param(b'{"created_at":"1","expires_at":9e9}\n{}', id="time-is-str"),
        pytest.param(b'{"created_at":1,"expires_at":true}\n{}', id="time-is-bool"),
        pytest.param(b'{"created_at":1,"expires_at":Infinity}\n{}', id="time-infinite"),
        pytest.param(b'{"created_at":1,"expires_at":1e999}\n{}', id="time-overflows"),
        pytest.param(b'{"created_at":1}\n{}', id="no-expiry"),
        pytest.param(b'{"created_at":1,"expires_at":9e9,"data":{}}', id="one-document"),
        pytest.param(b"WSS1" + bytes(8188), id="old-slot-format"),
        pytest.param(bytes(8192), id="zeros"),
    ],
)
def test_corrupt_file_is_absent(
    store: FileStore, directory: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    key = new_key()
    plant(directory, key, content)
    with caplog.at_level(logging.WARNING, logger="wsgisession.security"):
        assert store.load(key) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "wsgisession.security"]
    assert len(messages) == 1 and len(security_events(caplog)) == 1
    assert all(key not in m and "treated as absent" in m for m in messages)
    assert store.touch(key, _clock.now() + 10) is False
    assert store.save(key, Update(set={"a": 1}, expires_at=_clock.now() + 10)) is False
    assert (directory / key).read_bytes() == content
    create(store, key, a=1)
    record = store.load(key)
    assert record is not None and record.data == {"a": 1}


def test_symlink_is_not_followed(store: FileStore, directory: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    content = encode_record_file(Record({"admin": True}, 1.0, 9e9))
    outside.write_bytes(content)
    key = new_key()
    (directory / key).symlink_to(outside)
    assert store.load(key) is None
    create(store, key, a=1)  # replaces the link itself
    assert not (directory / key).is_symlink()
    assert outside.read_bytes() == content


def test_a_directory_named_like_a_record_is_absent(store: FileStore, directory: Path) -> None:
    key = new_key()
    (directory / key).mkdir()
    assert store.load(key) is None


# -- prune ----------------------------------------------------------------------------


def test_prune_removes_only_expired(store: FileStore, directory: Path, clock: Callable[[float], None]) -> None:
    dead = [new_key() for _ in range(3)]
    live = [new_key() for _ in range(2)]
    for key in dead:
        create(store, key, ttl=10, a=1)
    for key in live:
        create(store, key, ttl=HOUR, a=1)
    assert store.prune() == 0
    clock(60)
    assert store.prune() == 3
    assert store.prune() == 0
    remaining = files_in(directory)
    assert not remaining & set(dead)
    assert set(live) <= remaining
    assert all(store.load(key) is not None for key in live)


def test_prune_in_batches_syncs_once_per_batch(
    store: FileStore, directory: Path, clock: Callable[[float], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(7):
        create(store, new_key(), ttl=10, a=1)
    create(store, new_key(), a=1)
    clock(60)
    syncs: list[str | None] = []
    real_sync = FileStore._sync_dir

    def sync(self: FileStore, path: str | None = None) -> None:
        syncs.append(path)
        real_sync(self, path)

    monkeypatch.setattr(FileStore, "_sync_dir", sync)
    assert list(store.prune_batches(3)) == [3, 3, 1]
    assert syncs == [None] * 3
    assert list(store.prune_batches(3)) == []
    assert store.count() == 1


def test_prune_rechecks_content_under_the_lock(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    create(store, key, ttl=-1, a=1)  # expired: prune's stat() sees a past mtime
    other = FileStore(directory)
    real_locked = store._locked

    def racing(*keys: str) -> Any:
        # Between prune's stat() and its lock, another worker re-creates the session.
        now = _clock.now()
        assert other.save(keys[0], Update(set={"b": 2}, created_at=now, expires_at=now + HOUR))
        return real_locked(*keys)

    monkeypatch.setattr(store, "_locked", racing)
    assert store.prune() == 0
    record = store.load(key)
    assert record is not None and record.data == {"b": 2}


def test_prune_trusts_content_when_mtime_is_stale(store: FileStore, directory: Path) -> None:
    key = new_key()
    create(store, key, a=1)
    os.utime(directory / key, (0, 0))  # e.g. restored from a backup without times
    assert store.prune() == 0
    assert store.load(key) is not None


def test_prune_removes_stale_temp_files_without_counting_them(
    store: FileStore, directory: Path, clock: Callable[[float], None]
) -> None:
    (directory / ".tmp-0123456789abcdef").write_bytes(b'{"created_at":1,"exp')
    os.utime(directory / ".tmp-0123456789abcdef", (4e9, 4e9))  # writers set mtime to the expiry
    assert store.prune() == 0
    assert tmp_files(directory) == [".tmp-0123456789abcdef"]  # may belong to a live writer
    clock(2 * HOUR)
    assert store.prune() == 0
    assert tmp_files(directory) == []


def test_prune_removes_corrupt_records_and_skips_strangers(store: FileStore, directory: Path) -> None:
    corrupt = new_key()
    (directory / corrupt).write_bytes(b"{")
    os.utime(directory / corrupt, (1, 1))
    (directory / new_key()).mkdir()  # not a regular file: left alone, prune still works
    (directory / new_key()).symlink_to("/etc/passwd")
    (directory / ".tmp-0123456789abcdef").mkdir()
    (directory / "README").write_text("not a session")
    assert store.prune() == 1
    assert corrupt not in files_in(directory)
    assert "README" in files_in(directory) and ".tmp-0123456789abcdef" in files_in(directory)


# -- write failures ------------------------------------------------------------------


def _fail(err: int) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(err, os.strerror(err))

    return fail


def _fail_exclusive_open(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    """Make the creation of temp files (the only O_EXCL open) fail with *err*."""
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_EXCL:
            raise OSError(err, os.strerror(err))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize(
    ("function", "err", "expected"),
    [
        pytest.param("write", errno.ENOSPC, StoreFullError, id="write-ENOSPC"),
        pytest.param("write", errno.EDQUOT, StoreFullError, id="write-EDQUOT"),
        pytest.param("fsync", errno.ENOSPC, StoreFullError, id="fsync-ENOSPC"),
        pytest.param("fsync", errno.EIO, StoreError, id="fsync-EIO"),
        pytest.param("utime", errno.EIO, StoreError, id="utime-EIO"),
        pytest.param("replace", errno.EIO, StoreError, id="replace-EIO"),
        pytest.param("replace", errno.EACCES, StoreUnavailableError, id="replace-EACCES"),
        pytest.param("open", errno.ENOSPC, StoreFullError, id="create-ENOSPC"),
    ],
)
def test_failed_write_keeps_previous_record(
    store: FileStore,
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    err: int,
    expected: type[StoreError],
) -> None:
    key = new_key()
    create(store, key, a=1, keep="me")
    before = store.load(key)
    content = (directory / key).read_bytes()
    if function == "open":
        _fail_exclusive_open(monkeypatch, err)
    else:
        monkeypatch.setattr(os, function, _fail(err))
    with pytest.raises(expected) as info:
        store.save(key, Update(set={"a": 2, "big": "x" * 10_000}, expires_at=_clock.now() + HOUR))
    monkeypatch.undo()
    assert type(info.value) is expected
    message = str(info.value)
    assert str(directory) in message
    assert os.strerror(err) in message
    assert key not in message
    assert store.load(key) == before
    assert (directory / key).read_bytes() == content
    assert tmp_files(directory) == []
    # Nothing is left half done: the same save succeeds once the disk is back.
    assert store.save(key, Update(set={"a": 2}, expires_at=_clock.now() + HOUR))
    record = store.load(key)
    assert record is not None and record.data == {"a": 2, "keep": "me"}


@pytest.mark.parametrize("function", ["write", "fsync", "replace"])
def test_failed_creation_leaves_nothing(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    key = new_key()
    monkeypatch.setattr(os, function, _fail(errno.ENOSPC))
    with pytest.raises(StoreFullError):
        create(store, key, a=1)
    monkeypatch.undo()
    assert store.load(key) is None
    assert files_in(directory) == {".locks"}


def test_partial_writes_are_completed(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    key = new_key()
    create(store, key, text="a fairly long value " * 20)
    assert store.save(key, Update(set={"more": "another value " * 20}, expires_at=_clock.now() + HOUR))
    monkeypatch.undo()
    record = store.load(key)
    assert record is not None and record.data == {"text": "a fairly long value " * 20, "more": "another value " * 20}


def test_directory_fsync_unsupported_is_tolerated(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    key = new_key()
    create(store, key, a=1)
    assert bind(store, "alice")
    store.destroy(key)


def test_unreadable_file_is_a_store_error(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    create(store, key, a=1)
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(key):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(StoreError, match="Input/output error") as info:
        store.load(key)
    assert key not in str(info.value)


def test_a_vanished_directory_is_unavailable(store: FileStore, directory: Path) -> None:
    key = new_key()
    create(store, key, a=1)
    for path in sorted(directory.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    directory.rmdir()
    assert store.load(key) is None  # a missing record is only absent
    with pytest.raises(StoreUnavailableError, match=str(directory)):
        create(store, new_key(), a=1)
    with pytest.raises(StoreUnavailableError, match=str(directory)):
        store.count()


def test_real_full_filesystem(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    with servers.tmpfs(target, "size=64k,mode=0700"):
        s = FileStore(target)
        small = new_key()
        create(s, small, a="small")
        with pytest.raises(StoreFullError, match="No space left on device"):
            create(s, new_key(), a="x" * 200_000)
        with pytest.raises(StoreFullError):
            s.save(small, Update(set={"a": "x" * 200_000}, expires_at=_clock.now() + HOUR))
        record = s.load(small)
        assert record is not None and record.data == {"a": "small"}
        assert tmp_files(target) == []
        s.destroy(small)


# -- concurrency -----------------------------------------------------------------------

_WORKER = """
import sys, time
from wsgisession.stores.base import Update
from wsgisession.stores.file import FileStore

directory, key, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = FileStore(directory)
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    drop = frozenset({f"doomed-{worker}"}) if i == 0 else frozenset()
    assert store.save(key, Update(set={f"w{worker}-{i}": i}, delete=drop, expires_at=time.time() + 3600))
print("done", flush=True)
"""


def test_processes_changing_different_keys_all_land(store: FileStore, directory: Path) -> None:
    workers, count = 8, 25
    key = new_key()
    create(store, key, **{f"doomed-{w}": True for w in range(workers)}, shared="kept")
    procs = [python(_WORKER, str(directory), key, str(w), str(count)) for w in range(workers)]
    for proc in procs:
        expect_line(proc, "ready")
    for proc in procs:  # release them together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    record = store.load(key)
    assert record is not None
    expected = {f"w{w}-{i}": i for w in range(workers) for i in range(count)}
    assert record.data == {**expected, "shared": "kept"}


@pytest.mark.parametrize("shared_instance", [True, False], ids=["one-store", "store-per-thread"])
def test_threads_changing_different_keys_all_land(store: FileStore, directory: Path, shared_instance: bool) -> None:
    # With a store per thread the per-instance thread locks do not meet: only
    # flock() on a fresh descriptor per acquisition keeps the threads apart.
    threads, count = 8, 25
    key = new_key()
    create(store, key, shared="kept")
    stores = [store if shared_instance else FileStore(directory) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(count):
                assert stores[worker].save(key, Update(set={f"t{worker}-{i}": i}, expires_at=_clock.now() + HOUR))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    record = store.load(key)
    assert record is not None
    assert record.data == {"shared": "kept", **{f"t{w}-{i}": i for w in range(threads) for i in range(count)}}


_HOLDER = """
import sys
from wsgisession.stores.file import FileStore

store = FileStore(sys.argv[1])
with store._locked(sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_lock_held_by_another_process_times_out(store: FileStore, directory: Path) -> None:
    key = new_key()
    create(store, key, a=1)
    impatient = FileStore(directory, lock_timeout=0.3)
    holder = python(_HOLDER, str(directory), key)
    try:
        expect_line(holder, "locked")
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError) as info:
            impatient.save(key, Update(set={"a": 2}, expires_at=_clock.now() + HOUR))
        assert 0.25 <= time.monotonic() - started < 3
        assert str(directory) in str(info.value)
        assert "0.3s" in str(info.value)
        with pytest.raises(StoreTimeoutError):
            impatient.touch(key, _clock.now() + HOUR)
        with pytest.raises(StoreTimeoutError):
            impatient.destroy(key)
        record = impatient.load(key)  # readers never wait
        assert record is not None and record.data == {"a": 1}
    finally:
        holder.communicate("\n", timeout=10)
    assert impatient.save(key, Update(set={"a": 2}, expires_at=_clock.now() + HOUR))


def test_lock_held_by_another_thread_times_out(directory: Path) -> None:
    s = FileStore(directory, lock_timeout=0.2)
    key = new_key()
    create(s, key, a=1)
    outcome: list[BaseException | bool] = []
    with s._locked(key):
        t = threading.Thread(target=lambda: outcome.append(_catch(lambda: s.touch(key, _clock.now() + 9))))
        t.start()
        t.join()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreTimeoutError)
    assert s.touch(key, _clock.now() + 9)


def _catch(fn: Callable[[], bool]) -> BaseException | bool:
    try:
        return fn()
    except BaseException as exc:
        return exc


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_a_thread_holds_a_lock(directory: Path) -> None:
    # gunicorn --preload forks workers from a process that may have used the
    # store; a thread lock copied in the locked state must not wedge the child.
    s = FileStore(directory, lock_timeout=5)
    key = new_key()
    create(s, key, a=1)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with s._locked(key):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # child: the holder thread does not exist here
        code = 1
        try:
            code = 0 if s.touch(key, _clock.now() + 99) else 2
        finally:
            os._exit(code)
    time.sleep(0.1)
    release.set()  # the parent's flock is shared with the child until released
    t.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


_CRASHER = """
import sys, time
from wsgisession.stores.base import Update
from wsgisession.stores.file import FileStore

store = FileStore(sys.argv[1])
keys = sys.argv[2:]
n = max([r.data["n"] for r in map(store.load, keys) if r is not None] or [0])
print("ready", flush=True)
while True:
    n += 1
    now = time.time()
    for key in keys:
        # Creations the first time round, merges into the live record after.
        store.save(key, Update(set={"n": n, "v": "x" * (n * 211)}, created_at=now, expires_at=now + 86400))
        store.touch(key, now + 86400 + n)
"""


def test_writer_killed_at_random_points_never_tears_a_record(
    store: FileStore, directory: Path, clock: Callable[[float], None]
) -> None:
    keys = [new_key() for _ in range(3)]
    seen = dict.fromkeys(keys, 0)
    rng = random.Random(20240611)
    for _ in range(20):
        writer = python(_CRASHER, str(directory), *keys)
        expect_line(writer, "ready")
        time.sleep(rng.uniform(0.005, 0.08))
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=10)
        assert writer.returncode == -signal.SIGKILL
        for key in keys:
            record = store.load(key)  # never raises, never half a record
            if record is None:
                assert seen[key] == 0
                continue
            n = record.data["n"]
            assert record.data["v"] == "x" * (n * 211)
            assert n >= seen[key]
            seen[key] = n
    assert all(seen.values()), "the writer never got a record written"
    # The kernel dropped the dead writers' locks, so writing goes on at once.
    quick = FileStore(directory, lock_timeout=1)
    for key in keys:
        assert quick.touch(key, _clock.now() + 3 * HOUR)
    strangers = files_in(directory) - set(keys) - {".locks"}
    assert all(name.startswith(".tmp-") for name in strangers)
    clock(2 * HOUR)
    assert store.prune() == 0  # temp files are not sessions
    assert files_in(directory) == {*keys, ".locks"}


# -- the user index -------------------------------------------------------------------------


def bind(store: FileStore, user: str, key: str | None = None, ttl: float = HOUR) -> str:
    key = key or new_key()
    now = _clock.now()
    assert store.save(key, Update(set={"u": 1}, created_at=now, expires_at=now + ttl, user_id=user))
    return key


def user_dir(directory: Path, user: str) -> Path:
    return directory / ".users" / hashlib.sha256(user.encode()).hexdigest()


def test_index_layout_and_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    old = os.umask(0)
    try:
        store = FileStore(directory)
        assert not (directory / ".users").exists(), "made on first login, not before"
        key = bind(store, "../../etc")
    finally:
        os.umask(old)
    marker = user_dir(directory, "../../etc") / key
    assert marker.is_file() and marker.stat().st_size == 0
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    assert stat.S_IMODE(marker.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / ".users").stat().st_mode) == 0o700
    assert head_of(directory, key)["user_id"] == "../../etc"
    anonymous = new_key()
    create(store, anonymous, a=1)
    assert "user_id" not in head_of(directory, anonymous)
    assert not (tmp_path / "etc").exists()


def test_records_written_before_the_index_still_load(store: FileStore, directory: Path) -> None:
    key = new_key()
    plant(directory, key, HEAD + b'\n{"a":1}')
    record = store.load(key)
    assert record is not None and record.user_id is None
    assert store.save(key, Update(expires_at=_clock.now() + 60, user_id="alice"))
    assert [k for k, _ in store.sessions_of("alice")] == [key]


@pytest.mark.parametrize("user_id", [1, [], {"a": 1}, True], ids=repr)
def test_a_user_id_that_is_not_text_is_a_corrupt_record(store: FileStore, directory: Path, user_id: Any) -> None:
    key = new_key()
    plant(directory, key, json.dumps({"created_at": 1, "expires_at": 9e9, "user_id": user_id}).encode() + b"\n{}")
    assert store.load(key) is None


def test_marker_is_durable_before_the_record(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        alice = user_dir(directory, "alice")
        if alice.exists() and os.path.samestat(os.fstat(fd), alice.stat()):
            events.append("user dir synced")

    def replace(src: str, dst: str) -> None:
        events.append("record renamed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    bind(store, "alice")
    assert events.index("user dir synced") < events.index("record renamed")


def test_an_update_of_a_bound_session_touches_no_marker(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = bind(store, "alice")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    # The live record is already bound to alice, so its marker exists: no new one, no sync.
    assert store.save(key, Update(set={"n": 1}, expires_at=_clock.now() + HOUR, user_id="alice"))
    assert len(synced) == 2  # the temp file and the store directory, no marker


def test_crash_between_marker_and_record_leaves_only_a_harmless_marker(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()

    class PowerCut(BaseException):
        pass

    def crash(self: FileStore, *args: Any) -> None:
        raise PowerCut

    monkeypatch.setattr(FileStore, "_store", crash)
    with pytest.raises(PowerCut):
        bind(store, "alice", key=key)
    monkeypatch.undo()
    assert (user_dir(directory, "alice") / key).exists()
    assert store.load(key) is None
    assert store.index_size() == 1
    assert store.prune() == 0  # not a session, so not counted
    assert store.index_size() == 0
    assert not user_dir(directory, "alice").exists()
    # The same, cleaned by a listing instead.
    monkeypatch.setattr(FileStore, "_store", crash)
    with pytest.raises(PowerCut):
        bind(store, "alice", key=key)
    monkeypatch.undo()
    assert store.sessions_of("alice") == []
    assert store.index_size() == 0


def test_rebinding_moves_the_marker(store: FileStore, directory: Path) -> None:
    key = bind(store, "alice")
    assert store.save(key, Update(expires_at=_clock.now() + 60, user_id="bob"))
    assert not (user_dir(directory, "alice") / key).exists()
    assert (user_dir(directory, "bob") / key).exists()
    assert store.index_size() == 1


def test_destroy_and_prune_remove_markers(store: FileStore, directory: Path, clock: Callable[[float], None]) -> None:
    gone = bind(store, "alice")
    short = bind(store, "alice", ttl=10)
    live = bind(store, "alice")
    store.destroy(gone)
    assert {p.name for p in user_dir(directory, "alice").iterdir()} == {short, live}
    clock(60)
    assert store.prune() == 1
    assert {p.name for p in user_dir(directory, "alice").iterdir()} == {live}
    assert store.destroy_user("alice") == 1
    assert not user_dir(directory, "alice").exists()
    assert store.sessions_of("alice") == []
    assert not user_dir(directory, "alice").exists(), "a lookup creates nothing"


def test_a_stale_marker_never_ends_another_users_session(store: FileStore, directory: Path) -> None:
    bobs = bind(store, "bob")
    alices = bind(store, "alice")
    (user_dir(directory, "alice") / bobs).touch()  # e.g. left by a crash mid-rebind
    (user_dir(directory, "alice") / "not-a-key").touch()
    assert [k for k, _ in store.sessions_of("alice")] == [alices]
    (user_dir(directory, "alice") / bobs).touch()
    assert store.destroy_user("alice") == 1
    assert store.load(bobs) is not None
    assert store.index_size() == 1
    assert store.prune() == 0
    assert [k for k, _ in store.sessions_of("bob")] == [bobs]


def test_a_binding_save_survives_its_directory_being_removed(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = bind(store, "alice")
    store.destroy(first)  # leaves alice's directory empty
    real_open = os.open
    removed: list[str] = []

    def racing_open(path: str, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        # Between the binding save's mkdir and its marker, a destroy_user()
        # or prune() removes the empty directory.
        if ".users" in str(path) and not removed and os.path.isdir(os.path.dirname(path)):
            removed.append(path)
            os.rmdir(os.path.dirname(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", racing_open)
    key = bind(store, "alice")
    monkeypatch.undo()
    assert removed
    assert (user_dir(directory, "alice") / key).exists()
    assert [k for k, _ in store.sessions_of("alice")] == [key]


def test_destroy_user_removes_records_before_markers(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [bind(store, "alice") for _ in range(3)]
    events: list[str] = []
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        events.append("marker" if ".users" in str(path) else "record")
        real_unlink(path, *args, **kwargs)

    real_sync = FileStore._sync_dir

    def sync(self: FileStore, path: str | None = None) -> None:
        events.append("sync")
        real_sync(self, path)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(FileStore, "_sync_dir", sync)
    assert store.destroy_user("alice") == 3
    assert events == ["record"] * 3 + ["sync"] + ["marker"] * 3
    assert all(not (directory / k).exists() for k in keys)


def test_count_and_index_size(store: FileStore, clock: Callable[[float], None]) -> None:
    for i in range(4):
        bind(store, f"user{i}", ttl=10)
    bind(store, "user0")
    create(store, new_key(), a=1)
    assert store.count() == 6
    assert store.index_size() == 5
    clock(60)
    assert store.count() == 2
    assert store.index_size() == 5
    assert store.prune() == 4
    assert store.index_size() == 1


def test_user_ids_that_are_not_text_are_refused(store: FileStore) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        bind(store, "\ud800")
    with pytest.raises(TypeError):
        store.sessions_of(b"alice")  # type: ignore[arg-type]


# -- rename (regenerate) --------------------------------------------------------------


def _destroy_racing(
    store: FileStore, how: str, user: str, old: str, new: str, barrier: threading.Barrier, outcome: list[object]
) -> None:
    """End *user*'s session *old* the way *how* says; note how many it ended, or whether *new* existed after."""
    barrier.wait()
    if how == "destroy_user":
        outcome.append(store.destroy_user(user))
    elif how == "sessions_of":
        outcome.append(len(store.sessions_of(user)))
    else:
        store.destroy(old)
        outcome.append(store.load(new) is not None)


@pytest.mark.parametrize("how", ["destroy", "destroy_user", "sessions_of"])
def test_a_rename_is_atomic_against_a_concurrent_destroy(store: FileStore, directory: Path, how: str) -> None:
    # A rename that read the old record, then wrote the new one outside the old
    # key's lock, would bring back a session destroyed in between; one whose
    # new marker destroy_user() or sessions_of() missed would hide it. The
    # other side has its own store, so that only flock() keeps them apart.
    other = FileStore(directory)
    for i in range(100):
        user = f"user{i}"
        old, new = bind(store, user), new_key()
        barrier = threading.Barrier(2)
        outcome: list[object] = []
        thread = threading.Thread(target=_destroy_racing, args=(other, how, user, old, new, barrier, outcome))
        thread.start()
        barrier.wait()
        renamed = store.save(new, Update(set={"b": 2}, expires_at=_clock.now() + HOUR, replaces=old))
        thread.join()
        assert store.load(old) is None
        assert not (user_dir(directory, user) / old).exists(), "the index never lists the old key"
        if how == "destroy":
            assert renamed == (store.load(new) is not None)
            assert [k for k, _ in store.sessions_of(user)] == ([new] if renamed else [])
            if outcome == [False]:
                assert renamed is False, "a rename brought back a session destroyed before it wrote"
        elif how == "destroy_user":
            assert outcome == [1], "one live session, ended once, under whichever key it had"
            assert store.load(new) is None
            assert store.sessions_of(user) == []
        else:
            # Listed under its old key, its new one, or (caught mid-rename) both: never missed.
            assert renamed and outcome[0] in (1, 2)
            assert [k for k, _ in store.sessions_of(user)] == [new]
    assert tmp_files(directory) == []


def test_a_rename_within_one_lock_stripe_does_not_deadlock(directory: Path) -> None:
    # Both keys' locks are taken, in order; one stripe only once (its thread lock is not re-entrant).
    s = FileStore(directory, lock_timeout=1)
    keys = [new_key() for _ in range(2000)]
    by_stripe: dict[str, list[str]] = {}
    for key in keys:
        by_stripe.setdefault(key[:2], []).append(key)
    old, new = next(pair for pair in by_stripe.values() if len(pair) >= 2)[:2]
    create(s, old, a=1)
    assert s.save(new, Update(set={"b": 2}, expires_at=_clock.now() + HOUR, replaces=old))
    record = s.load(new)
    assert record is not None and record.data == {"a": 1, "b": 2}
    assert s.load(old) is None


@pytest.mark.parametrize("function", ["write", "fsync", "open"])
def test_a_rename_on_a_full_disk_keeps_the_old_record(
    store: FileStore, directory: Path, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    old, new = bind(store, "alice"), new_key()
    before = store.load(old)
    if function == "open":
        _fail_exclusive_open(monkeypatch, errno.ENOSPC)
    else:
        monkeypatch.setattr(os, function, _fail(errno.ENOSPC))
    with pytest.raises(StoreFullError):
        store.save(new, Update(set={"b": 2}, expires_at=_clock.now() + HOUR, replaces=old))
    monkeypatch.undo()
    assert store.load(old) == before
    assert store.load(new) is None
    assert [k for k, _ in store.sessions_of("alice")] == [old]
    assert tmp_files(directory) == []
    # Nothing is left half done: the same rename succeeds once there is room.
    assert store.save(new, Update(set={"b": 2}, expires_at=_clock.now() + HOUR, replaces=old))
    assert [k for k, _ in store.sessions_of("alice")] == [new]
