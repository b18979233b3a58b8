"""The exceptions wsgisession raises."""

from __future__ import annotations


class WSGISessionError(Exception):
    """Base class of every error raised by wsgisession."""


class ConfigurationError(WSGISessionError, ValueError):
    """A setting is invalid: raised at construction, never per request."""


class BadSignature(WSGISessionError):
    """A signed value did not verify against any of the configured secrets.

    The message never contains the value itself: a cookie is a credential.
    """


class StoreError(WSGISessionError):
    """The session store failed (server down, disk full, lock held too long).

    Raised for system failures only: a missing or expired session is not an
    error, it is ``None`` from :meth:`Store.load`. The message names the store
    and what went wrong; it never contains a session ID.
    """


class StoreUnavailableError(StoreError):
    """The store could not be reached or opened (connection refused, no such path)."""


class StoreTimeoutError(StoreError):
    """The store did not answer, or a lock was not granted, within the time allowed."""


class StoreFullError(StoreError):
    """The store ran out of space; the previous record is intact."""
