"""FileStore: one JSON file per session in a local directory, for POSIX systems.

Layout of the store directory::

    <64 hex digits>        a session record (the key is already a hash of the ID)
    .tmp-<random>          a record being written, renamed over the record when complete
    .locks/<xx>.lock       256 lock files, one per first byte of the key
    .users/<sha256>/<key>  the user index: an empty marker per session bound to the
                           user whose ID hashes to <sha256> (made on the first login)

A record file is two lines of JSON: ``{"created_at":…,"expires_at":…[,"user_id":…]}``,
then the session's data, one JSON object; on a line of its own so that a load
parses it once (StoreBase.decode takes it as text). The file's mtime is the
expiry, a hint that lets prune() and count() pass over a live record with a
stat() instead of a read.

Every write makes a new file: a temp file, written, its mtime set, fsync'ed,
renamed over the record with ``os.replace``, then the directory fsync'ed. A
name only ever points at a complete file that is never written again, so
readers take no lock; a crash or a full disk leaves the previous record as it
was, and at worst a temp file, which prune() removes once it is an hour old.
Writers hold the key's lock (``flock`` on its stripe's lock file), so a save
merges into the record as it is *now*, even across processes; a rename holds
both keys' locks.

In the user index the record is the truth and a marker only points at it. A
binding save makes the marker durable *before* it writes the record, and a
destroy makes the record's deletion durable *before* it removes the marker:
a crash can leave a marker without a live record (listings and prune() remove
it) but never a live bound record without its marker, hidden from destroy_user().
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from .. import _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import CORRUPT, BatchPruneBase, Record, Update, log, query_options, security_log, user_bytes, valid_key

_TMP_PREFIX = ".tmp-"
#: A temp file unchanged for this long belongs to a writer that died before its rename.
_STALE_TMP_AGE = 3600.0
#: The mtime hint is clamped to what every filesystem stores; a hint below the
#: expiry only costs a read, one above it would hide a dead record from prune().
_MTIME_MAX = float(2**31 - 1)
#: Attempts of a binding save, when destroy_user() or prune() removes the empty user directory before its marker.
_MARKER_ATTEMPTS = 5
_POLL_FIRST, _POLL_MAX = 0.001, 0.05
_READ_CHUNK = 64 * 1024
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW
_LOCK_FLAGS = os.O_RDONLY | os.O_CREAT | _OPEN_FLAGS
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNAVAILABLE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS})
_Parts = tuple[object, float, float, str | None]


class _LockTimeout(TimeoutError):
    """A session's lock was not granted within lock_timeout."""


def encode_record_file(record: Record) -> bytes:
    """The whole content of *record*'s file (the benchmarks fill stores with it)."""
    head: dict[str, Any] = {"created_at": record.created_at, "expires_at": record.expires_at}
    if record.user_id is not None:
        head["user_id"] = record.user_id
    return f"{_json.encode(head)}\n{_json.encode(record.data)}".encode()


class FileStore(BatchPruneBase):
    """Sessions as JSON files in one directory, safe across threads and processes (see above).

    :param path: the store directory, resolved now (a later ``chdir`` does not
        move it). Session files are made 0600.
    :param create: make the directory (0700) if it is missing but its parent is
        not; with ``False`` a missing directory is an error and is not made.
    :param lock_timeout: seconds to wait for a session's lock before raising
        :class:`~wsgisession.errors.StoreTimeoutError`.
    :param clock: see :class:`~wsgisession.stores.base.StoreBase`.
    :raises ConfigurationError: *lock_timeout* is not a number >= 0, or *path*
        is not a directory: the setting itself is wrong.
    :raises StoreUnavailableError: the directory (or its parent) is missing or
        cannot be written: the setting may be right, the machine not ready.

    The directory must be local: ``flock`` over NFS is emulated with POSIX
    locks and ``fsync`` guarantees vary; use SQLite or a server store there.

    A prune (one directory sync per batch) also removes unreadable records
    once their mtime has passed, temp files of writers that died over an hour
    ago, and markers whose record is gone, expired or bound to someone else.
    It reads each record again under its lock, so one just saved is kept.
    """

    failures = (OSError,)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        lock_timeout: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock=clock)
        if type(lock_timeout) not in (int, float) or not math.isfinite(lock_timeout) or lock_timeout < 0:
            raise ConfigurationError(f"FileStore lock_timeout must be a number of seconds >= 0, not {lock_timeout!r}")
        self._dir = os.path.abspath(os.fspath(path))
        if "\x00" in self._dir:
            raise ConfigurationError("FileStore path contains a NUL character")
        self._prefix = os.path.join(self._dir, "")
        self._lock_dir = os.path.join(self._dir, ".locks")
        self._users_dir = os.path.join(self._dir, ".users")
        self._lock_timeout = float(lock_timeout)
        self._thread_locks = _stripe_locks()
        self._open_directory(create)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> FileStore:
        """Make a store from ``file:///absolute/path[?lock_timeout=seconds]`` (the path percent-decoded).

        :raises ConfigurationError: any other form, or an unknown or repeated option.
        """
        parts = urlsplit(url)
        try:
            path = unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            path = ""
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.fragment or path[:1] != "/":
            raise ConfigurationError(
                "a file store URL is file:///absolute/path (three slashes, no other host than localhost, "
                f"no #fragment, the path percent-encoded UTF-8), not {url!r}"
            )
        return cls(path, create=create, **query_options(url, {"lock_timeout": float}))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<FileStore {self._dir!r}>"

    def _failure(self, action: str, exc: BaseException) -> StoreError:
        where = f"FileStore at {self._dir}: {action} failed"
        if isinstance(exc, _LockTimeout):
            return StoreTimeoutError(f"{where}: a session's lock was held for more than {self._lock_timeout:g}s")
        code = exc.errno if isinstance(exc, OSError) else None
        kind = StoreFullError if code in _FULL else StoreUnavailableError if code in _UNAVAILABLE else StoreError
        return kind(f"{where}: {_describe(exc)}")

    def _read(self, key: str, now: float = 0.0) -> _Parts | None:
        """The parts of *key*'s record whatever its expiry, ``None`` if there is none, or CORRUPT."""
        try:
            fd = os.open(self._prefix + key, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink: never something this store wrote
                return CORRUPT
            raise
        try:
            # os.read, cheaper than a file object; a short read of a regular file is its end.
            chunks = [os.read(fd, _READ_CHUNK)]
            while len(chunks[-1]) == _READ_CHUNK:
                chunks.append(os.read(fd, _READ_CHUNK))
        except IsADirectoryError:
            return CORRUPT
        finally:
            os.close(fd)
        head, _, data = b"".join(chunks).partition(b"\n")
        try:
            meta = _json.decode(head)
            times = meta["created_at"], meta["expires_at"]
        except (ValueError, TypeError, KeyError):  # not JSON, not an object, or without its times
            return CORRUPT
        if not (_is_time(times[0]) and _is_time(times[1])):
            return CORRUPT
        return data, *times, meta.get("user_id")

    def _write(self, key: str, update: Update, now: float) -> bool:
        source = key if update.replaces is None else update.replaces
        with self._locked(key, source):
            old = self._record(source)
            if old is not None and old.expires_at > now:
                data, created_at, user_id = old.data, old.created_at, old.user_id
            elif update.created_at is not None and update.replaces is None:
                data, created_at, user_id = {}, update.created_at, None
            else:
                return False
            current = old if source == key else self._record(key)
            indexed = current.user_id if current is not None and current.expires_at > now else None
            if update.user_id is not None:
                user_id = update.user_id
            if user_id is not None and user_id != indexed:
                self._add_marker(user_id, key)
            self._store(key, Record(update.apply(data), created_at, update.expires_at, user_id))
            if source != key and old is not None:
                # The new record is durable before the old goes: a crash in between leaves
                # both, with their markers: the old under the client's ID, the new an orphan.
                if self._unlink(source):
                    self._sync_dir()
                self._unbind(source, old)
            if current is not None and current.user_id != user_id:
                self._unbind(key, current)
        return True

    def _touch(self, key: str, expires_at: float, now: float) -> bool:
        with self._locked(key):
            record = self._record(key)
            if record is None or record.expires_at <= now:
                return False
            record.expires_at = expires_at
            self._store(key, record)
        return True

    def _delete(self, key: str) -> None:
        with self._locked(key):
            record = self._record(key)
            if self._unlink(key):
                self._sync_dir()  # a logout survives a power cut, and precedes the marker's removal
                self._unbind(key, record)

    def _after_fork(self) -> None:
        # A fork while another thread held a stripe's lock would leave the child's copy locked forever.
        self._thread_locks = _stripe_locks()

    def _prune_batches(self, now: float, batch_size: int) -> Iterator[int]:
        removed = 0
        with os.scandir(self._dir) as entries:
            for entry in entries:
                st = _regular(entry)  # anything else is a stranger: left alone, so no prune fails on it
                if st is None:
                    continue
                if entry.name.startswith(_TMP_PREFIX):
                    if st.st_ctime < now - _STALE_TMP_AGE:  # ctime: its mtime is an expiry
                        log.info("removing a temporary file left by a crashed writer in %s", self._dir)
                        self._remove(entry.path, "a temporary file")
                elif valid_key(entry.name) and st.st_mtime <= now and self._prune_one(entry.name, now):
                    removed += 1
                    if removed == batch_size:
                        self._sync_dir()
                        yield removed
                        removed = 0
        if removed:
            self._sync_dir()
            yield removed
        for digest in self._index_names():
            self._clean_markers(digest, self._index_names(digest), now)

    def _prune_one(self, key: str, now: float) -> bool:
        with self._locked(key):
            parts = self._read(key)
            record = None if parts is None else self.decode(*parts)
            if parts is None or (record is not None and record.expires_at > now) or not self._unlink(key):
                return False
            self._unbind(key, record)  # expired: it can never come back live
        return True

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first. Reads that user's records only.

        A session renamed as it is listed may appear under both its keys,
        never under neither.
        """
        digest, now = _digest(user_id), self.now()
        found: list[tuple[str, Record]] = []
        with self._errors("sessions_of"):
            for key in self._marked(digest):
                record = self._record(key)
                if record is None or record.user_id != user_id or record.expires_at <= now:
                    record = self._bound_record(digest, key, now)  # perhaps being written: ask under the lock
                if record is not None:
                    found.append((key, record))
        return sorted(found, key=lambda item: item[1].created_at)

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*, durably; return how many live ones there were."""
        digest, now = _digest(user_id), self.now()
        seen: list[str] = []
        live = deleted = 0
        with self._errors("destroy_user"):
            for key in self._marked(digest):
                seen.append(key)
                with self._locked(key):
                    record = self._record(key)
                    if record is not None and record.user_id == user_id and self._unlink(key):
                        deleted += 1
                        live += int(record.expires_at > now)
            if deleted:
                self._sync_dir()
            self._clean_markers(digest, seen, now)  # only now that the deletions are durable
        return live

    def count(self) -> int:
        """How many live records the store holds: a scan that reads only the files whose mtime has passed."""
        now, total = self.now(), 0
        with self._errors("count"), os.scandir(self._dir) as entries:
            for entry in entries:
                st = _regular(entry) if valid_key(entry.name) else None
                if st is not None and st.st_mtime > now:  # the hint is never later than the expiry: live
                    total += 1
                elif st is not None:
                    record = self._record(entry.name)
                    total += int(record is not None and record.expires_at > now)
        return total

    def index_size(self) -> int:
        """How many markers the user index holds, stale ones included (for tests and diagnostics)."""
        with self._errors("index_size"):
            return sum(len(self._index_names(digest)) for digest in self._index_names())

    def _open_directory(self, create: bool) -> None:
        try:
            if create and _mkdir(self._dir):
                log.info("created session directory %s", self._dir)
        except OSError as exc:
            why = "its parent directory does not exist" if isinstance(exc, FileNotFoundError) else _describe(exc)
            raise StoreUnavailableError(f"FileStore cannot create {self._dir}: {why}") from exc
        try:
            mode = os.stat(self._dir).st_mode
        except OSError as exc:
            why = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read: {_describe(exc)}"
            raise StoreUnavailableError(f"FileStore directory {self._dir} {why}") from None
        if not stat.S_ISDIR(mode):
            raise ConfigurationError(f"FileStore path {self._dir} exists and is not a directory")
        try:
            # Prove now, not at the first request, that a record can be written: permissions change.
            os.makedirs(self._lock_dir, 0o700, exist_ok=True)
            fd, tmp = self._create_tmp()
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise StoreUnavailableError(f"FileStore cannot write to {self._dir}: {_describe(exc)}") from exc
        if mode & 0o077:
            message = "FileStore directory %s is accessible to other users (mode %o); make it 0700"
            security_log.warning(message, self._dir, stat.S_IMODE(mode))

    def _record(self, key: str) -> Record | None:
        """*key*'s record whatever its expiry; ``None`` if there is none, or it is corrupt (logged)."""
        parts = self._read(key)
        return None if parts is None else self.decode(*parts)

    def _create_tmp(self) -> tuple[int, str]:
        # O_EXCL: never write through a file (or symlink) that someone else put there.
        tmp = os.path.join(self._dir, _TMP_PREFIX + secrets.token_hex(8))
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600), tmp

    def _store(self, key: str, record: Record) -> None:
        """Replace *key*'s file, whatever it is, by one holding *record*, durably."""
        content = memoryview(encode_record_file(record))
        hint = min(max(record.expires_at, 0.0), _MTIME_MAX)
        fd, tmp = self._create_tmp()
        try:
            try:
                while content:
                    content = content[os.write(fd, content) :]
                os.utime(fd, (hint, hint))  # before the fsync, to reach the disk with the data it describes
                os.fsync(fd)  # before the rename, or a power cut could leave the name on unwritten blocks
            finally:
                os.close(fd)
            os.replace(tmp, self._prefix + key)
        except BaseException:
            self._remove(tmp, "a temporary file")
            raise
        self._sync_dir()

    def _unlink(self, key: str) -> bool:
        try:
            os.unlink(self._prefix + key)
        except FileNotFoundError:
            return False
        return True

    def _remove(self, path: str, what: str, directory: bool = False) -> None:
        # A leftover is harmless (a listing or prune removes it): it must not fail a save or destroy that
        # succeeded. rmdir takes only an empty directory: a save that just made a marker in it makes rmdir
        # fail; one about to finds it gone and makes it again.
        try:
            os.rmdir(path) if directory else os.unlink(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                log.warning("FileStore at %s: could not remove %s: %s", self._dir, what, _describe(exc))

    def _sync_dir(self, path: str | None = None) -> None:
        # A rename or an unlink is durable only once its directory is flushed.
        fd = os.open(path or self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a filesystem that cannot (some FUSE, network ones)
                raise
        finally:
            os.close(fd)

    @contextmanager
    def _locked(self, *keys: str) -> Iterator[None]:
        # 256 lock files striped by the key's first byte, not one per session to delete with it, racily (a
        # waiter that opened it before the unlink locks an orphan); the record cannot be locked, os.replace
        # swaps its inode. Stripes go in ascending order, so two renames never wait for each other in a cycle,
        # and a stripe both keys share is taken once (its thread lock is not re-entrant). The thread lock lets
        # threads wait without polling, and keeps them apart where flock() is per process (NFS, FUSE).
        deadline = time.monotonic() + self._lock_timeout
        with ExitStack() as held:
            for stripe in sorted({int(key[:2], 16) for key in keys}):
                thread_lock = self._thread_locks[stripe]
                if not thread_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise _LockTimeout
                held.callback(thread_lock.release)
                # A fresh descriptor each time: flock() belongs to the open file description, so
                # a shared one would exclude no one. It has no timeout, and a blocking call cannot
                # be interrupted from a thread: poll, backing off. A dead process's lock is dropped.
                fd = os.open(os.path.join(self._lock_dir, f"{stripe:02x}.lock"), _LOCK_FLAGS, 0o600)
                held.callback(_unlock_and_close, fd)
                delay = _POLL_FIRST
                while not _try_flock(fd):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _LockTimeout
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, _POLL_MAX)
            yield

    def _marked(self, digest: str) -> Iterator[str]:
        # Listed until a listing adds no key: a rename marks the new key before it deletes the
        # old record, so one renamed away as it was read is in the next listing.
        seen: set[str] = set()
        while fresh := [key for key in self._index_names(digest) if key not in seen]:
            seen.update(fresh)
            yield from fresh

    def _index_names(self, digest: str = "") -> list[str]:
        """The markers (keys) in a user's directory, or with no *digest* the user directories."""
        try:
            with os.scandir(os.path.join(self._users_dir, digest)) as entries:
                return [e.name for e in entries if valid_key(e.name) and (digest or e.is_dir(follow_symlinks=False))]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _add_marker(self, user_id: str, key: str) -> None:
        """Make *key*'s marker for *user_id* durable: under the key's lock, before its record is written."""
        user_dir = os.path.join(self._users_dir, _digest(user_id))
        for _ in range(_MARKER_ATTEMPTS):
            made = [path for path in (self._users_dir, user_dir) if _mkdir(path)]
            try:
                os.close(os.open(os.path.join(user_dir, key), os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS, 0o600))
            except FileNotFoundError:
                continue  # a destroy_user() or prune() removed the empty directory meanwhile
            # Durable before the record that needs it, with any directory made for it (in its parent).
            for path in (user_dir, *map(os.path.dirname, made)):
                self._sync_dir(path)
            return
        raise StoreError(f"FileStore at {self._dir}: could not add a session to the user index: it kept vanishing")

    def _unbind(self, key: str, record: Record | None) -> None:
        if record is not None and record.user_id is not None:
            self._remove(os.path.join(self._users_dir, _digest(record.user_id), key), "a user index marker")

    def _clean_markers(self, digest: str, keys: list[str], now: float) -> None:
        """Remove the markers among *keys* whose record is not the user's and live, then their empty directory."""
        for key in keys:
            self._bound_record(digest, key, now)
        self._remove(os.path.join(self._users_dir, digest), "an empty user directory", directory=True)

    def _bound_record(self, digest: str, key: str, now: float) -> Record | None:
        """*key*'s live record if it is bound to the user with *digest*; else its marker goes (under the lock)."""
        with self._locked(key):
            record = self._record(key)
            bound = record is not None and record.user_id is not None and _digest(record.user_id) == digest
            if record is not None and bound and record.expires_at > now:
                return record
            self._remove(os.path.join(self._users_dir, digest, key), "a user index marker")
        return None


def _digest(user_id: str) -> str:
    # The ID is any text ("../../etc", 300 characters, NUL): its digest is a safe name.
    return hashlib.sha256(user_bytes(user_id)).hexdigest()


def _stripe_locks() -> list[threading.Lock]:
    return [threading.Lock() for _ in range(256)]


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock_and_close(fd: int) -> None:
    try:  # explicitly: close() does not release it while a forked child holds a copy of the descriptor
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _regular(entry: os.DirEntry[str]) -> os.stat_result | None:
    """*entry*'s stat if it is a regular file (a symlink is not followed); ``None`` if not, or gone."""
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _mkdir(path: str) -> bool:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


def _is_time(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _describe(exc: BaseException) -> str:
    # Not str(exc): that names the file, and a record's file name is its key.
    code = exc.errno if isinstance(exc, OSError) else None
    return type(exc).__name__ if code is None else f"{os.strerror(code)} ({errno.errorcode.get(code, str(code))})"
