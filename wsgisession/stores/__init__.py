"""Session stores, and :func:`from_url` to pick one by URL."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..errors import ConfigurationError
from .base import Record, Store, Update, UserIndex
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "Record", "SQLiteStore", "Store", "Update", "UserIndex", "from_url"]
# scheme -> (module, class, the extra that installs its client library)
_SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": (".memory", "MemoryStore", None),
    "sqlite": (".sqlite", "SQLiteStore", None),
    "file": (".file", "FileStore", None),
    "redis": (".redis", "RedisStore", "redis"),
    "rediss": (".redis", "RedisStore", "redis"),
    "unix": (".redis", "RedisStore", "redis"),
    "redis+cluster": (".redis", "RedisStore", "redis"),
    "redis+sentinel": (".redis", "RedisStore", "redis"),
    "postgresql": (".postgres", "PostgresStore", "postgres"),
    "postgres": (".postgres", "PostgresStore", "postgres"),
    "mysql": (".mysql", "MySQLStore", "mysql"),
    "mariadb": (".mysql", "MySQLStore", "mysql"),
}


def from_url(url: str, *, create: bool = True) -> Store:
    """Open the store a URL names.

    ``memory://``, ``file:///abs/dir``, ``sqlite:///relative.db`` or
    ``sqlite:////abs/path.db``, ``redis://host:6379/0``, ``rediss://…``,
    ``postgresql://user@host/db``, ``mysql://user@host/db``. Raises
    :class:`~wsgisession.errors.ConfigurationError` for a URL it cannot use.

    With ``create=False`` (what the command line's read-only commands use) a
    store that does not exist yet (no database file, no directory, no table)
    is not made: using it raises :class:`~wsgisession.errors.StoreUnavailableError`.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a store URL must be a str, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    entry = _SCHEMES.get(scheme.lower()) if sep else None
    if entry is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(f"unknown store URL {_redact(url)!r} (known schemes: {known})")
    module_name, class_name, extra = entry
    if class_name == "MemoryStore":
        if url.rstrip("/") != "memory:":
            raise ConfigurationError(f"memory:// takes no path or options: {url!r}")
        return MemoryStore()
    try:
        module = import_module(module_name, __name__)
    except ImportError as exc:
        hint = f": pip install 'wsgisession[{extra}]'" if extra else ""
        raise ConfigurationError(f"{class_name} is not available ({exc}){hint}") from exc
    cls: Any = getattr(module, class_name)
    store: Store = cls.from_url(url, create=create)
    return store


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
    return url
