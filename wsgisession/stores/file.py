"""FileStore: one JSON file per session in a local directory, for POSIX systems.

Layout of the store directory::

    <64 hex digits>       one session record (the key is already a hash of the ID)
    .tmp-<random>         a record being written; renamed over the record when complete
    .locks/<xx>.lock      256 lock files, one per first byte of the key
    .users/<sha256>/<key> the user index: an empty marker per session bound to the
                          user whose ID hashes to <sha256> (created on first login)

Reads take no lock: a record is only ever replaced whole by ``os.replace``, so a
reader sees the old file or the new one, never a mix. Writes (save, touch,
destroy, prune) take an exclusive lock on the key's lock file, so a save
applies its changes to the record as it is *now*, even across processes.

The record is the truth and a marker only a pointer to it: a binding save
makes the marker durable *before* it writes the bound record, and a destroy
makes the record's deletion durable *before* it removes the marker. A crash
can thus leave a marker without a live record (which sessions_of() and prune()
remove) but never a live bound record without its marker, which would hide the
session from ``destroy_user()``.
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
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .. import _clock, _json
from ..errors import ConfigurationError, StoreError, StoreFullError, StoreTimeoutError, StoreUnavailableError
from .base import Record, Update, log, security_log, user_bytes, valid_key

_TMP_PREFIX = ".tmp-"
_LOCK_DIR = ".locks"
_USERS_DIR = ".users"
#: A binding save retries this often when destroy_user() or prune() removes the
#: (empty) user directory between its mkdir and its marker's creation.
_MARKER_ATTEMPTS = 5
#: A temp file whose inode has not changed for this long belongs to a writer
#: that died between creating it and renaming it; prune() removes it.
_STALE_TMP_AGE = 3600.0
#: Mtime is only a hint of the expiry (see _mtime_hint); clamp it to what
#: every filesystem can store so os.utime never fails on a far-future expiry.
_MTIME_MAX = float(2**31 - 1)
#: Lock polling backs off from the first to the last delay (seconds).
_POLL_FIRST = 0.001
_POLL_MAX = 0.05

_READ_CHUNK = 64 * 1024
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW
_UNAVAILABLE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

_CORRUPT = object()
"""What _read returns for a file that exists but is not a record this store wrote."""

# Per-stripe thread locks are plain threading.Locks; a fork while another thread
# holds one would leave the child's copy locked forever, so every store
# re-creates them in the child (as the logging module does for its own locks).
_live_stores: weakref.WeakSet[FileStore] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for store in list(_live_stores):
        store._reset_thread_locks()


os.register_at_fork(after_in_child=_reset_after_fork)


class FileStore:
    """Sessions as JSON files in one directory, safe across threads and processes.

    Each session is one file named by its key, written atomically (temporary
    file, ``fsync``, ``os.replace``, ``fsync`` of the directory), so a crash or
    a full disk never leaves a half-written record. Changes to one session are
    serialised by ``flock`` on a lock file, so gunicorn workers that change
    different keys of the same session both land.

    :param path: the store directory. It is created (mode 0700) if it does not
        exist but its parent does. A relative path is resolved now, so a later
        ``chdir`` does not move the store. Session files are created 0600.
    :param lock_timeout: seconds to wait for a session's lock before raising
        :class:`~wsgisession.errors.StoreTimeoutError`.
    :raises ConfigurationError: *lock_timeout* is not a number >= 0, or *path*
        exists and is not a directory: the setting itself is wrong.
    :raises StoreUnavailableError: the parent directory is missing or the
        directory cannot be written (permissions, read-only filesystem): the
        setting may be right but the machine is not ready for it.

    The directory must be local: ``flock`` over NFS is emulated with POSIX
    locks and ``fsync`` guarantees vary, so use SQLite or a server store there.
    """

    single_process = False

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        if type(lock_timeout) not in (int, float) or not math.isfinite(lock_timeout) or lock_timeout < 0:
            raise ConfigurationError(f"FileStore lock_timeout must be a number of seconds >= 0, not {lock_timeout!r}")
        directory = os.path.abspath(os.fspath(path))
        if "\x00" in directory:
            raise ConfigurationError("FileStore path contains a NUL character")
        self._dir = directory
        self._prefix = os.path.join(directory, "")
        self._lock_dir = os.path.join(directory, _LOCK_DIR)
        self._users_dir = os.path.join(directory, _USERS_DIR)
        self._lock_timeout = float(lock_timeout)
        self._reset_thread_locks()
        self._prepare_directory()
        _live_stores.add(self)

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        """Make a store from ``file:///absolute/path[?lock_timeout=seconds]``.

        The path is percent-decoded. A host other than empty or ``localhost``,
        a relative path, an unknown or repeated query parameter or a fragment
        raises :class:`~wsgisession.errors.ConfigurationError`.
        """
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ConfigurationError(f"not a file URL (expected file:///absolute/path): {url!r}")
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"file URL must have an absolute path, file:///path (three slashes), not host {parts.netloc!r}: {url!r}"
            )
        if parts.fragment:
            raise ConfigurationError(f"file URL must not have a #fragment: {url!r}")
        try:
            path = unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            raise ConfigurationError(f"file URL path is not percent-encoded UTF-8: {url!r}") from None
        if not path.startswith("/"):
            raise ConfigurationError(f"file URL must have an absolute path: {url!r}")
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise ConfigurationError(f"file URL has a malformed query: {url!r}") from None
        unknown = sorted(set(query) - {"lock_timeout"})
        if unknown:
            raise ConfigurationError(f"unknown file URL option(s) {', '.join(unknown)} (known: lock_timeout): {url!r}")
        kwargs: dict[str, Any] = {}
        if "lock_timeout" in query:
            values = query["lock_timeout"]
            try:
                if len(values) != 1:
                    raise ValueError
                kwargs["lock_timeout"] = float(values[0])
            except ValueError:
                raise ConfigurationError(f"file URL lock_timeout must be one number of seconds: {url!r}") from None
        return cls(path, **kwargs)

    def __repr__(self) -> str:
        return f"<FileStore {self._dir!r}>"

    # -- the Store protocol ---------------------------------------------------

    def load(self, key: str) -> Record | None:
        """Return the live record for *key*, or ``None`` if missing, expired or unreadable.

        Takes no lock: records are replaced whole, so this reads a complete
        old or new version. A file that is not a valid record is logged on
        ``wsgisession.security`` and treated as absent.
        """
        if not valid_key(key):
            return None
        record = self._read(key)
        if not isinstance(record, Record) or record.expires_at <= _clock.now():
            return None
        return record

    def save(self, key: str, update: Update) -> bool:
        """Apply *update* to the record as it is now, under the key's lock.

        Without ``update.created_at`` a missing, expired or unreadable record
        is left alone and ``False`` is returned (destroy wins). With it, such
        a record is replaced by a new one; a live record is merged into and
        keeps its creation time.

        :raises ValueError: *key* is not a store key.
        :raises StoreFullError: the disk or quota is full; the previous record is intact.
        :raises StoreTimeoutError: the lock was not granted within ``lock_timeout``.
        :raises StoreError: any other failure to write, named in the message.
        """
        if not valid_key(key):
            raise ValueError("not a store key")
        if update.user_id is not None:
            user_bytes(update.user_id)
        with self._locked(key):
            current = self._read(key)
            if isinstance(current, Record) and current.expires_at > _clock.now():
                data, created_at, user_id = current.data, current.created_at, current.user_id
            elif update.created_at is not None:
                data, created_at, user_id = {}, update.created_at, None
            else:
                log.info("save dropped: the session was destroyed or expired meanwhile")
                return False
            if update.user_id is not None:
                user_id = update.user_id
                self._add_marker(user_id, key)
            self._write(key, Record(update.apply(data), created_at, update.expires_at, user_id))
            previous = current.user_id if isinstance(current, Record) else None
            if previous is not None and previous != user_id:
                self._remove_marker(previous, key)
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        """Set a live record's expiry; ``False`` if it is missing, expired or unreadable.

        The file is rewritten atomically with the same data and creation time:
        only the expiry changes.
        """
        if not valid_key(key):
            return False
        with self._locked(key):
            current = self._read(key)
            if not isinstance(current, Record) or current.expires_at <= _clock.now():
                return False
            current.expires_at = expires_at
            self._write(key, current)
        return True

    def destroy(self, key: str) -> None:
        """Delete the record for *key*, durably (no error if it does not exist)."""
        if not valid_key(key):
            return
        with self._locked(key):
            current = self._read(key)
            if not self._unlink_record(key):
                return
            # A logout must survive a power cut: make the unlink itself durable
            # (and do so before the marker goes, see the module's docstring).
            self._sync_dir()
            if isinstance(current, Record) and current.user_id is not None:
                self._remove_marker(current.user_id, key)

    def prune(self) -> int:
        """Delete every expired record; return how many were deleted.

        Also deletes records that cannot be read back (counted, and logged as
        security events) once their expiry hint has passed, temporary files
        left by a writer that crashed more than an hour ago, and user index
        markers whose record is gone, expired or bound to someone else (not
        counted). Each candidate is re-checked under its lock, so a record
        that a concurrent save has just refreshed is kept.
        """
        now = _clock.now()
        removed = 0
        try:
            with os.scandir(self._dir) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(_TMP_PREFIX):
                        self._remove_stale_tmp(entry, now)
                    elif valid_key(name) and self._prune_one(entry):
                        removed += 1
        except OSError as exc:
            raise self._error("could not list the store directory", exc) from exc
        if removed:
            self._sync_dir()
        self._prune_index()
        return removed

    # -- the user index ---------------------------------------------------------

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live records bound to *user_id*, oldest first.

        Lists the user's index directory and reads those records only, never
        the whole store. Markers whose record is gone, expired or bound to
        someone else are removed.
        """
        user_bytes(user_id)
        now = _clock.now()
        found: list[tuple[str, Record]] = []
        for key in self._markers(self._user_dir(user_id)):
            record = self._read(key)
            if isinstance(record, Record) and record.user_id == user_id and record.expires_at > now:
                found.append((key, record))
            else:
                self._remove_stale_marker(user_id, key)
        found.sort(key=lambda item: item[1].created_at)
        return found

    def destroy_user(self, user_id: str) -> int:
        """Delete every record bound to *user_id*, durably; return how many live ones there were."""
        user_bytes(user_id)
        user_dir = self._user_dir(user_id)
        keys = self._markers(user_dir)
        live = 0
        deleted = False
        for key in keys:
            with self._locked(key):
                current = self._read(key)
                if isinstance(current, Record) and current.user_id == user_id and self._unlink_record(key):
                    deleted = True
                    live += int(current.expires_at > _clock.now())
        if deleted:
            self._sync_dir()
        # Only now that the deletions are durable may the markers go.
        for key in keys:
            self._remove_stale_marker(user_id, key)
        self._remove_user_dir(user_dir)
        return live

    def count(self) -> int:
        """How many live records the store holds (a scan of the store directory).

        A record whose mtime (its expiry hint) is still ahead is counted
        without being read; the others are read to be sure.
        """
        now = _clock.now()
        total = 0
        try:
            with os.scandir(self._dir) as entries:
                for entry in entries:
                    if not valid_key(entry.name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    if st.st_mtime > now:
                        total += 1
                    else:
                        record = self._read(entry.name)
                        total += int(isinstance(record, Record) and record.expires_at > now)
        except OSError as exc:
            raise self._error("could not list the store directory", exc) from exc
        return total

    def index_size(self) -> int:
        """How many markers the user index holds, stale ones included (for tests and diagnostics)."""
        return sum(len(self._markers(user_dir)) for user_dir in self._user_dirs())

    def _user_dir(self, user_id: str) -> str:
        # The ID is arbitrary text ("../../etc", 300 characters, NUL): its
        # digest is always a safe, fixed-length name.
        return os.path.join(self._users_dir, hashlib.sha256(user_id.encode("utf-8")).hexdigest())

    def _user_dirs(self) -> list[str]:
        try:
            with os.scandir(self._users_dir) as entries:
                return [e.path for e in entries if valid_key(e.name) and e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error("could not list the user index", exc) from exc

    def _markers(self, user_dir: str) -> list[str]:
        try:
            return [name for name in os.listdir(user_dir) if valid_key(name)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self._error("could not list the user index", exc) from exc

    def _add_marker(self, user_id: str, key: str) -> None:
        """Create *key*'s marker for *user_id*, durably. Called under the key's lock."""
        user_dir = self._user_dir(user_id)
        marker = os.path.join(user_dir, key)
        for _ in range(_MARKER_ATTEMPTS):
            try:
                made_root, made_dir = self._make_user_dir(user_dir)
                try:
                    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS, 0o600)
                except FileNotFoundError:
                    continue  # a destroy_user() or prune() removed the empty directory meanwhile
                os.close(fd)
                # The marker must be on disk before the record that needs it.
                # A directory a concurrent save created is flushed by that
                # save; the ones made here are flushed here.
                self._sync_dir(user_dir)
                if made_dir:
                    self._sync_dir(self._users_dir)
                if made_root:
                    self._sync_dir()
                return
            except OSError as exc:
                raise self._error("could not add a session to the user index", exc) from exc
        raise StoreError(
            f"FileStore at {self._dir}: could not add a session to the user index: directory kept vanishing"
        )

    def _make_user_dir(self, user_dir: str) -> tuple[bool, bool]:
        made_root = False
        try:
            os.mkdir(self._users_dir, 0o700)
            made_root = True
        except FileExistsError:
            pass
        try:
            os.mkdir(user_dir, 0o700)
        except FileExistsError:
            return made_root, False
        return made_root, True

    def _remove_marker(self, user_id: str, key: str) -> None:
        # A marker left behind is harmless (the next listing or prune removes
        # it), so failing here must not fail a save or destroy that succeeded.
        try:
            os.unlink(os.path.join(self._user_dir(user_id), key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("FileStore at %s: could not remove a user index marker: %s", self._dir, _describe(exc))

    def _remove_stale_marker(self, user_id: str, key: str) -> None:
        # Under the key's lock, re-checked: a save binding this key holds the
        # lock from creating the marker until its record is written.
        with self._locked(key):
            current = self._read(key)
            if not (isinstance(current, Record) and current.user_id == user_id and current.expires_at > _clock.now()):
                self._remove_marker(user_id, key)

    def _remove_user_dir(self, user_dir: str) -> None:
        # Only ever an empty one: a save that has just put a marker in it makes
        # this fail with ENOTEMPTY, and one that is about to finds it gone and
        # makes it again.
        try:
            os.rmdir(user_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                log.warning("FileStore at %s: could not remove an empty user directory: %s", self._dir, _describe(exc))

    def _prune_index(self) -> None:
        now = _clock.now()
        for user_dir in self._user_dirs():
            digest = os.path.basename(user_dir)
            for key in self._markers(user_dir):
                if self._bound_to(self._read(key), digest, now):
                    continue
                with self._locked(key):
                    if not self._bound_to(self._read(key), digest, _clock.now()):
                        try:
                            os.unlink(os.path.join(user_dir, key))
                        except FileNotFoundError:
                            pass
                        except OSError as exc:
                            raise self._error("could not remove a user index marker", exc) from exc
            self._remove_user_dir(user_dir)

    @staticmethod
    def _bound_to(record: Record | object | None, digest: str, now: float) -> bool:
        return (
            isinstance(record, Record)
            and record.user_id is not None
            and record.expires_at > now
            and hashlib.sha256(record.user_id.encode("utf-8")).hexdigest() == digest
        )

    def close(self) -> None:
        """Forget this store; safe to call twice. No descriptor stays open between calls, so nothing leaks."""
        _live_stores.discard(self)

    # -- internals ------------------------------------------------------------

    def _reset_thread_locks(self) -> None:
        # flock() on a fresh fd already excludes threads on a local filesystem,
        # but NFS and some FUSE filesystems implement it with per-process POSIX
        # locks that do not; a thread lock per stripe makes threads wait for each
        # other without polling, whatever the filesystem.
        self._thread_locks = [threading.Lock() for _ in range(256)]

    def _prepare_directory(self) -> None:
        try:
            os.mkdir(self._dir, 0o700)
        except FileExistsError:
            if not os.path.isdir(self._dir):
                raise ConfigurationError(f"FileStore path {self._dir} exists and is not a directory") from None
        except FileNotFoundError:
            raise StoreUnavailableError(
                f"FileStore cannot create {self._dir}: its parent directory does not exist"
            ) from None
        except OSError as exc:
            raise StoreUnavailableError(f"FileStore cannot create {self._dir}: {_describe(exc)}") from exc
        else:
            log.info("created session directory %s", self._dir)
        try:
            mode = os.stat(self._dir).st_mode
            os.makedirs(self._lock_dir, 0o700, exist_ok=True)
            # The lock directory may predate a permission change; prove that a
            # record can really be written now rather than on the first request.
            fd, tmp = self._create_tmp()
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise StoreUnavailableError(f"FileStore cannot write to {self._dir}: {_describe(exc)}") from exc
        if mode & 0o077:
            security_log.warning(
                "FileStore directory %s is accessible to other users (mode %o); make it 0700",
                self._dir,
                stat.S_IMODE(mode),
            )

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        # 256 lock files, striped by the first byte of the (uniformly random)
        # key, rather than one lock file per session: a per-session lock file
        # would have to be deleted with its session, and deleting a lock file
        # is racy (a waiter that opened it before the unlink locks an orphaned
        # inode while a newcomer locks a fresh one). Striped files are never
        # deleted, cost 256 inodes in all, and two sessions share a lock only
        # for the few milliseconds of a write.
        # The data file itself cannot be locked: os.replace swaps its inode,
        # so a waiter would hold a lock on the file that was just replaced.
        deadline = time.monotonic() + self._lock_timeout
        stripe = int(key[:2], 16)
        thread_lock = self._thread_locks[stripe]
        if not thread_lock.acquire(timeout=self._lock_timeout):
            raise self._timeout()
        try:
            path = os.path.join(self._lock_dir, f"{key[:2]}.lock")
            try:
                # A fresh descriptor per acquisition: flock() belongs to the open
                # file description, so one shared between threads, or inherited
                # by a forked child, would not exclude anyone.
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | _OPEN_FLAGS, 0o600)
            except OSError as exc:
                raise self._error("could not open a lock file", exc) from exc
            try:
                self._flock(fd, deadline)
                try:
                    yield
                finally:
                    # Unlock explicitly rather than rely on close(): a child
                    # forked meanwhile shares the description and would keep
                    # the lock until it exits.
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            thread_lock.release()

    def _flock(self, fd: int, deadline: float) -> None:
        # flock() has no timeout and a blocking call cannot be interrupted
        # safely from a thread, so poll without blocking, backing off. The
        # kernel drops the lock of a process that dies: no stale locks.
        delay = _POLL_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._error("could not lock a session", exc) from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    def _timeout(self) -> StoreTimeoutError:
        return StoreTimeoutError(
            f"FileStore at {self._dir}: a session's lock was held by another writer "
            f"for more than {self._lock_timeout:g}s"
        )

    def _read(self, key: str) -> Record | object | None:
        """The record for *key* whatever its expiry, ``None`` if absent, or _CORRUPT."""
        try:
            fd = os.open(self._prefix + key, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink: not something this store wrote
                return self._corrupt(key, "is a symbolic link")
            raise self._error("could not open a session file", exc) from exc
        try:
            # Plain os.read: a session file is small, and a buffered file object
            # would cost more than the read itself. A short read of a regular
            # file means the end of it.
            chunks = [os.read(fd, _READ_CHUNK)]
            while len(chunks[-1]) == _READ_CHUNK:
                chunks.append(os.read(fd, _READ_CHUNK))
            raw = b"".join(chunks)
        except IsADirectoryError:
            return self._corrupt(key, "is a directory")
        except OSError as exc:
            raise self._error("could not read a session file", exc) from exc
        finally:
            os.close(fd)
        try:
            doc = _json.decode(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
            return self._corrupt(key, "is not JSON")
        if (
            type(doc) is not dict
            or type(doc.get("data")) is not dict
            or not _is_time(doc.get("created_at"))
            or not _is_time(doc.get("expires_at"))
            or type(doc.get("user_id")) not in (str, type(None))
        ):
            return self._corrupt(key, "is not a session record")
        return Record(doc["data"], float(doc["created_at"]), float(doc["expires_at"]), doc.get("user_id"))

    def _corrupt(self, key: str, why: str) -> object:
        # The key is a hash, not the ID; its first 12 digits find the file
        # without putting a full lookup key in the logs.
        security_log.warning(
            "FileStore %s: session file %s… %s; treated as absent",
            self._dir,
            key[:12],
            why,
            extra={"security_event": "corrupt_record"},
        )
        return _CORRUPT

    def _create_tmp(self) -> tuple[int, str]:
        # O_EXCL: never write through a file (or symlink) that someone else put there.
        tmp = os.path.join(self._dir, _TMP_PREFIX + secrets.token_hex(8))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        return fd, tmp

    def _write(self, key: str, record: Record) -> None:
        doc: dict[str, Any] = {"created_at": record.created_at, "expires_at": record.expires_at, "data": record.data}
        if record.user_id is not None:  # optional: records of anonymous sessions (and older ones) have none
            doc["user_id"] = record.user_id
        text = _json.encode(doc)
        payload = memoryview(text.encode("utf-8"))
        tmp: str | None = None
        fd = -1
        try:
            fd, tmp = self._create_tmp()
            while payload:
                payload = payload[os.write(fd, payload) :]
            # The expiry doubles as the file's mtime so prune() can skip live
            # records with a stat() instead of opening each one. The content
            # stays authoritative; the mtime is only a hint.
            hint = _mtime_hint(record.expires_at)
            os.utime(fd, (hint, hint))
            # fsync before the rename: otherwise a power cut can leave the new
            # name pointing at a file whose blocks were never written.
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, os.path.join(self._dir, key))
            tmp = None
        except OSError as exc:
            raise self._error("could not write a session file, the previous record is intact", exc) from exc
        finally:
            if fd != -1:
                os.close(fd)
            if tmp is not None:
                _unlink_quietly(tmp)
        self._sync_dir()

    def _sync_dir(self, path: str | None = None) -> None:
        # Renames and unlinks are directory entries: they are durable only once
        # the directory itself is flushed.
        try:
            fd = os.open(self._dir if path is None else path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            except OSError as exc:
                # EINVAL: this filesystem cannot sync a directory (some FUSE and
                # network filesystems); the rename is as durable as it can be.
                if exc.errno != errno.EINVAL:
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._error("could not flush the store directory", exc) from exc

    def _prune_one(self, entry: os.DirEntry[str]) -> bool:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return False
        # Only regular files are records; anything else would make every prune fail.
        if not stat.S_ISREG(st.st_mode) or st.st_mtime > _clock.now():
            return False
        key = entry.name
        with self._locked(key):
            current = self._read(key)
            if current is None or (isinstance(current, Record) and current.expires_at > _clock.now()):
                return False
            if not self._unlink_record(key):
                return False
            # Expired, so it can never come back live: its marker may go at once.
            if isinstance(current, Record) and current.user_id is not None:
                self._remove_marker(current.user_id, key)
        return True

    def _unlink_record(self, key: str) -> bool:
        try:
            os.unlink(os.path.join(self._dir, key))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error("could not delete a session file", exc) from exc
        return True

    def _remove_stale_tmp(self, entry: os.DirEntry[str], now: float) -> None:
        # ctime, not mtime: the writer sets the temp file's mtime to the
        # record's (future) expiry, while ctime moves with every write and
        # cannot be set back.
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return
        if st.st_ctime < now - _STALE_TMP_AGE:
            log.info("removing a temporary file left by a crashed writer in %s", self._dir)
            _unlink_quietly(entry.path)

    def _error(self, action: str, exc: OSError) -> StoreError:
        message = f"FileStore at {self._dir}: {action}: {_describe(exc)}"
        if exc.errno in _FULL:
            return StoreFullError(message)
        if exc.errno in _UNAVAILABLE:
            return StoreUnavailableError(message)
        return StoreError(message)


def _describe(exc: OSError) -> str:
    # Not str(exc): that includes the file name, which is the session's key.
    if exc.errno is None:
        return type(exc).__name__
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{exc.strerror or os.strerror(exc.errno)} ({name})"


def _is_time(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _mtime_hint(expires_at: float) -> float:
    return min(max(expires_at, 0.0), _MTIME_MAX)


def _unlink_quietly(path: str) -> None:
    # Only for cleanup paths where a real error is already being raised (or,
    # for a stale temp file, where the next prune will try again): the file
    # being gone already is the expected case.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove temporary file %s: %s", path, _describe(exc))
