"""FileStore: one file per session in a local directory, for POSIX systems.

Layout of the store directory::

    <64 hex digits>       one session record (the key is already a hash of the ID)
    .tmp-<random>         a new record file being written; renamed over the record when complete
    .locks/<xx>.lock      256 lock files, one per first byte of the key
    .users/<sha256>/<key> the user index: an empty marker per session bound to the
                          user whose ID hashes to <sha256> (created on first login)

A record file holds two *slots* of S bytes each, A at offset 0 and B at
offset S, and is exactly 2*S bytes long; S is a multiple of 4096 (4096 for
any session under 4 KiB of JSON). A slot is a 20-byte header (the magic
``WSS1``, a CRC32 of the rest, a 64-bit sequence number, the payload's
length; little-endian) followed by the payload: the JSON document
``{"created_at":…,"expires_at":…,"data":{…}[,"user_id":…]}``. The slot with
the highest sequence among the valid ones is the record; the other holds the
previous version, or zeros in a file that was never updated.

Why two slots: an update of a live session overwrites the slot that is *not*
the record, in place (``pwrite`` then ``fdatasync``), with the next sequence
number. Its blocks were all written when the file was made, so the file
neither grows nor changes its block map, and syncing it costs one data write
and a disk-cache flush; no rename, no directory sync, no journal commit. A
crash mid-write leaves a torn slot that its CRC rejects, beside the intact
previous record. Slots are block-aligned so that writing one never rewrites
the block holding the other. The price is disk space: 8 KiB per session on a
4 KiB-block filesystem.

A new session, a record that outgrows its slot, or one whose expiry moves
back (see _overwrite) gets a whole new file instead, written as a temp file
(slot A the record, slot B zeros), synced, renamed over the old name with
``os.replace`` and made durable with a sync of the directory.

Reads take no lock. A reader that finds no valid slot, or finds the slot
whose header claims the newer sequence invalid, may have caught a write in
progress: it reads again under the key's lock, which every writer holds, and
only then may it call the file corrupt. Writes (save, touch, destroy, prune) take an exclusive lock on
the key's lock file, so a save applies its changes to the record as it is
*now*, even across processes. A rename (a save with ``replaces``) holds the
locks of both keys, taken in a fixed order.

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
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, NamedTuple
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

#: The record file format (see the module's docstring): a slot's header is
#: magic, CRC32, sequence, payload length, and the CRC covers the bytes from
#: the sequence to the end of the payload, which are contiguous.
_MAGIC = b"WSS1"
_HEADER = struct.Struct("<4sIQI")
_CRC_FROM = 8
_BLANK_HEADER = bytes(_HEADER.size)
#: Slot sizes are multiples of this, the usual filesystem block (and page) size.
_BLOCK = 4096

_CORRUPT = object()
"""What _read returns for a file that exists but is not a record this store wrote."""


class StoredRecord(NamedTuple):
    """A record as decoded from its file, with where in the file it lies."""

    record: Record
    #: The slot's sequence number: the next version of the record gets this + 1.
    sequence: int
    #: 0 for slot A (offset 0), 1 for slot B (offset *slot_size*).
    slot: int
    #: S, the size of each slot: the file is 2*S bytes.
    slot_size: int


def encode_payload(record: Record) -> bytes:
    """The JSON document a slot holds for *record*."""
    doc: dict[str, Any] = {"created_at": record.created_at, "expires_at": record.expires_at, "data": record.data}
    if record.user_id is not None:  # optional: records of anonymous sessions have none
        doc["user_id"] = record.user_id
    return _json.encode(doc).encode("utf-8")


def slot_size_for(payload: bytes) -> int:
    """The smallest slot size (a multiple of 4096) that holds *payload* and its header."""
    return max(_BLOCK, -(-(_HEADER.size + len(payload)) // _BLOCK) * _BLOCK)


def encode_slot(payload: bytes, sequence: int, slot_size: int) -> bytes:
    """One whole slot: header, *payload*, zeros up to *slot_size*."""
    if _HEADER.size + len(payload) > slot_size:
        raise ValueError("the payload does not fit in the slot")
    tail = _HEADER.pack(_MAGIC, 0, sequence, len(payload))[_CRC_FROM:]
    header = _HEADER.pack(_MAGIC, zlib.crc32(payload, zlib.crc32(tail)), sequence, len(payload))
    return b"".join((header, payload, bytes(slot_size - _HEADER.size - len(payload))))


def encode_record_file(record: Record, sequence: int = 1) -> bytes:
    """The whole content of a new record file: *record* in slot A, slot B blank.

    The benchmarks fill stores with it; the store writes it through a temp file.
    """
    payload = encode_payload(record)
    slot_size = slot_size_for(payload)
    return encode_slot(payload, sequence, slot_size) + bytes(slot_size)


def decode_record_file(raw: bytes) -> StoredRecord | None:
    """The newest valid slot of a record file's content, or ``None`` if it has none."""
    return _decode(raw)[0]


def _decode(raw: bytes) -> tuple[StoredRecord | None, bool]:
    """The newest valid slot of *raw*, and whether a write may have been in progress.

    An update writes the slot that does not hold the record, header first,
    with the next sequence number; a slot caught mid-write therefore claims a
    *higher* sequence than the record and fails its CRC. So does one left by
    a writer that died. Either way, a reader that took no lock must look
    again under it: the write may have begun after a newer version of the
    record than the other slot's was complete. A file of the wrong size is
    not one of ours, or one being made.
    """
    size = len(raw)
    slot_size = size >> 1
    if slot_size == 0 or slot_size % _BLOCK or size != 2 * slot_size:
        return None, True
    a = _HEADER.unpack_from(raw, 0)
    b = _HEADER.unpack_from(raw, slot_size)
    # Newest first: the slot with the higher sequence, or the only one with a header.
    if b[0] == _MAGIC and (a[0] != _MAGIC or b[2] > a[2]):
        newer, newer_header, older, older_header = 1, b, 0, a
    else:
        newer, newer_header, older, older_header = 0, a, 1, b
    record = _slot_record(raw, newer * slot_size, newer_header, slot_size)
    if record is not None:
        return StoredRecord(record, newer_header[2], newer, slot_size), False
    # The newer slot is torn (or blank, and then so is this one).
    record = _slot_record(raw, older * slot_size, older_header, slot_size)
    if record is not None:
        return StoredRecord(record, older_header[2], older, slot_size), True
    return None, True


def _slot_record(raw: bytes, start: int, header: tuple[bytes, int, int, int], slot_size: int) -> Record | None:
    magic, crc, _, length = header
    if magic != _MAGIC or length > slot_size - _HEADER.size:
        return None  # blank (never written), or not ours
    body = start + _HEADER.size
    if zlib.crc32(raw[start + _CRC_FROM : body + length]) != crc:
        return None
    return _parse_payload(raw[body : body + length])


def _parse_payload(payload: bytes) -> Record | None:
    try:
        doc = _json.decode(payload.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return None
    if (
        type(doc) is not dict
        or type(doc.get("data")) is not dict
        or not _is_time(doc.get("created_at"))
        or not _is_time(doc.get("expires_at"))
        or type(doc.get("user_id")) not in (str, type(None))
    ):
        return None
    return Record(doc["data"], float(doc["created_at"]), float(doc["expires_at"]), doc.get("user_id"))


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

    Each session is one file named by its key, holding two slots of (usually)
    4 KiB: the record and its previous version, each with a sequence number
    and a checksum. An update overwrites the older slot in place and syncs
    it (``fdatasync``), so a crash mid-write leaves the previous version
    intact and no rename or directory sync is needed. A new session, or one
    that outgrows its slots, is written as a whole new file (temporary file,
    ``fsync``, ``os.replace``, ``fsync`` of the directory). Either way a crash
    or a full disk never leaves a half-written record. Each session costs
    8 KiB of disk on a filesystem of 4 KiB blocks. Changes to one session are
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
    def from_url(cls, url: str, *, create: bool = True) -> FileStore:
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

        Takes no lock: an update writes the slot that does not hold the record,
        and a new file replaces the old one whole, so this reads a complete old
        or new version. Only a read that finds no intact record (or a slot
        caught mid-write) reads again under the key's lock. A file that is not
        a valid record is logged on ``wsgisession.security`` and treated as
        absent.
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
        if update.replaces is not None and update.replaces != key:
            return self._rename(update.replaces, key, update)
        with self._locked(key):
            stored = self._read_stored(key, locked=True)
            current = stored.record if isinstance(stored, StoredRecord) else stored
            live = stored if isinstance(stored, StoredRecord) and stored.record.expires_at > _clock.now() else None
            if live is not None:
                data, created_at, user_id = live.record.data, live.record.created_at, live.record.user_id
            elif update.created_at is not None and update.replaces is None:
                data, created_at, user_id = {}, update.created_at, None
            else:
                log.info("save dropped: the session was destroyed or expired meanwhile")
                return False
            if update.user_id is not None:
                user_id = update.user_id
                self._add_marker(user_id, key)
            self._write(key, Record(update.apply(data), created_at, update.expires_at, user_id), live)
            previous = current.user_id if isinstance(current, Record) else None
            if previous is not None and previous != user_id:
                self._remove_marker(previous, key)
        return True

    def _rename(self, old: str, key: str, update: Update) -> bool:
        """Move *old*'s live record to *key* with *update* applied, under both keys' locks."""
        if not valid_key(old):
            return False
        with self._locked_both(old, key):
            stored = self._read_stored(old, locked=True)
            if not isinstance(stored, StoredRecord) or stored.record.expires_at <= _clock.now():
                log.info("save dropped: the session was destroyed or expired meanwhile")
                return False
            source = stored.record
            current = self._read(key, locked=True)
            user_id = source.user_id if update.user_id is None else update.user_id
            if user_id is not None:
                self._add_marker(user_id, key)
            self._write(key, Record(update.apply(source.data), source.created_at, update.expires_at, user_id))
            # The new record is durable before the old one goes. A crash (or an
            # error) in between leaves both live, each with its marker: the old
            # one is the session as it was, under the ID the client still has
            # since the new one was never sent; the new one is an orphan that
            # destroy_user() finds and prune() removes once it has expired.
            if self._unlink_record(old):
                self._sync_dir()
            if source.user_id is not None:
                self._remove_marker(source.user_id, old)
            previous = current.user_id if isinstance(current, Record) else None
            if previous is not None and previous != user_id:
                self._remove_marker(previous, key)
        return True

    def touch(self, key: str, expires_at: float) -> bool:
        """Set a live record's expiry; ``False`` if it is missing, expired or unreadable.

        The record is rewritten (in place, like any update) with the same data
        and creation time: only the expiry changes.
        """
        if not valid_key(key):
            return False
        with self._locked(key):
            live = self._read_stored(key, locked=True)
            if not isinstance(live, StoredRecord) or live.record.expires_at <= _clock.now():
                return False
            current = live.record
            self._write(key, Record(current.data, current.created_at, expires_at, current.user_id), live)
        return True

    def destroy(self, key: str) -> None:
        """Delete the record for *key*, durably (no error if it does not exist)."""
        if not valid_key(key):
            return
        with self._locked(key):
            current = self._read(key, locked=True)
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
        seen: set[str] = set()
        live = 0
        deleted = False
        while keys:
            for key in keys:
                with self._locked(key):
                    current = self._read(key, locked=True)
                    if isinstance(current, Record) and current.user_id == user_id and self._unlink_record(key):
                        deleted = True
                        live += int(current.expires_at > _clock.now())
            seen.update(keys)
            # A rename that got a key's lock first has moved its record to a
            # new key, whose marker it made while holding that lock: list
            # again, so that the session does not survive under its new ID.
            keys = [key for key in self._markers(user_dir) if key not in seen]
        if deleted:
            self._sync_dir()
        # Only now that the deletions are durable may the markers go.
        for key in seen:
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
            current = self._read(key, locked=True)
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
                    if not self._bound_to(self._read(key, locked=True), digest, _clock.now()):
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

    @contextmanager
    def _locked_both(self, a: str, b: str) -> Iterator[None]:
        # Stripes in ascending order, so that two renames never wait for each
        # other in a cycle; one stripe taken once when both keys share it (its
        # thread lock is not re-entrant).
        with ExitStack() as stack:
            for key in sorted({a[:2]: a, b[:2]: b}.values()):
                stack.enter_context(self._locked(key))
            yield

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

    def _read(self, key: str, *, locked: bool = False) -> Record | object | None:
        """The record for *key* whatever its expiry, ``None`` if absent, or _CORRUPT.

        *locked*: the caller holds the key's lock (no writer can be at work).
        """
        stored = self._read_stored(key, locked=locked)
        return stored.record if isinstance(stored, StoredRecord) else stored

    def _read_stored(self, key: str, *, locked: bool = False) -> StoredRecord | object | None:
        raw = self._read_raw(key)
        if not isinstance(raw, bytes):
            return raw
        stored, unsettled = _decode(raw)
        if stored is not None and not unsettled:
            return stored
        if not locked:
            # The newer slot was caught mid-write (see _decode), or neither
            # slot was whole, which takes two updates within one read. Under
            # the lock no writer is at work: what is found there is what the
            # file really holds.
            with self._locked(key):
                return self._read_stored(key, locked=True)
        if stored is None:
            if not raw or len(raw) % (2 * _BLOCK):
                return self._corrupt(key, "is not a record file (wrong size)")
            return self._corrupt(key, "holds no intact record")
        return stored  # the other slot is torn: a writer died mid-update

    def _read_raw(self, key: str) -> bytes | object | None:
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
            # file means the end of it. Its size never changes: updates
            # overwrite it in place, anything else replaces the inode.
            raw = os.read(fd, _READ_CHUNK)
            if len(raw) == _READ_CHUNK:  # slots of 32 KiB or more
                chunks = [raw]
                while len(chunks[-1]) == _READ_CHUNK:
                    chunks.append(os.read(fd, _READ_CHUNK))
                raw = b"".join(chunks)
        except IsADirectoryError:
            return self._corrupt(key, "is a directory")
        except OSError as exc:
            raise self._error("could not read a session file", exc) from exc
        finally:
            os.close(fd)
        return raw

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

    def _write(self, key: str, record: Record, live: StoredRecord | None = None) -> None:
        """Store *record* durably; *live* is the live record it follows, read under the lock."""
        payload = encode_payload(record)
        if live is not None and self._overwrite(key, live, record, payload):
            return
        sequence = 1 if live is None else live.sequence + 1
        slot_size = slot_size_for(payload)
        self._replace(key, encode_slot(payload, sequence, slot_size) + bytes(slot_size), record.expires_at)

    def _overwrite(self, key: str, live: StoredRecord, record: Record, payload: bytes) -> bool:
        """Write *record* over the slot that is not *live*, in place; ``False`` if it must be a new file."""
        hint = _mtime_hint(record.expires_at)
        if _HEADER.size + len(payload) > live.slot_size or hint < _mtime_hint(live.record.expires_at):
            # Too big for the slot; or an expiry that moves back, whose hint
            # could otherwise be older than the record after a power cut
            # (see below), making prune() and count() skip a dead record.
            return False
        offset = live.slot_size * (1 - live.slot)
        data = memoryview(encode_slot(payload, live.sequence + 1, live.slot_size))
        try:
            fd = os.open(self._prefix + key, os.O_WRONLY | _OPEN_FLAGS)
        except OSError as exc:
            raise self._error("could not open a session file, the previous record is intact", exc) from exc
        try:
            try:
                while data:
                    written = os.pwrite(fd, data, offset)
                    data, offset = data[written:], offset + written
                # fdatasync, not fsync: the blocks are allocated and the size is
                # unchanged, so the data is all there is to make durable. The
                # mtime hint is set afterwards and left to the next journal
                # commit; see below.
                _sync_data(fd)
            except OSError as exc:
                # The live slot is untouched, but this one may now hold the new
                # version in the page cache: blank its header so that readers
                # keep to the previous record, as the error says.
                with suppress(OSError):
                    os.pwrite(fd, _BLANK_HEADER, live.slot_size * (1 - live.slot))
                raise self._error("could not write a session file, the previous record is intact", exc) from exc
            # The expiry doubles as the file's mtime (see _replace). Set only
            # once the data is durable, and never to less than it was (above):
            # then whatever mtime a power cut leaves on disk is no later than
            # the expiry of the record that survived (or is the time of a
            # write, which is in the past), so the hint never hides a dead
            # record. It reaches the disk with the next journal commit.
            try:
                os.utime(fd, (hint, hint))
            except OSError as exc:
                # The record is written; the mtime the write left (now) is a
                # hint that only costs prune() a read.
                log.warning("FileStore at %s: could not set a session file's mtime: %s", self._dir, _describe(exc))
        finally:
            os.close(fd)
        return True

    def _replace(self, key: str, content: bytes, expires_at: float) -> None:
        """Replace *key*'s file, whatever it is, by a new one holding *content*."""
        data = memoryview(content)
        tmp: str | None = None
        fd = -1
        try:
            fd, tmp = self._create_tmp()
            # Every block is written, slot B's zeros too: an in-place update of
            # a block that was a hole (or fallocate's unwritten extent) would
            # change the block map, which only a journal commit makes durable.
            while data:
                data = data[os.write(fd, data) :]
            # The expiry doubles as the file's mtime so prune() can skip live
            # records with a stat() instead of opening each one. The content
            # stays authoritative; the mtime is only a hint.
            hint = _mtime_hint(expires_at)
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
            current = self._read(key, locked=True)
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


def _sync_data(fd: int) -> None:
    # Looked up at each call, like os.fsync elsewhere, so that a test can
    # replace it; macOS has no fdatasync.
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


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
