"""Server-side sessions for any WSGI application."""

from __future__ import annotations

from .errors import BadSignature as BadSignature
from .errors import ConfigurationError as ConfigurationError
from .errors import StoreError as StoreError
from .errors import StoreFullError as StoreFullError
from .errors import StoreTimeoutError as StoreTimeoutError
from .errors import StoreUnavailableError as StoreUnavailableError
from .errors import WSGISessionError as WSGISessionError
from .middleware import SessionMiddleware as SessionMiddleware
from .middleware import get_session as get_session
from .session import CookieAction as CookieAction
from .session import Session as Session
from .session import SessionInfo as SessionInfo
from .session import State as State
from .signing import Secret as Secret
from .signing import Signer as Signer
from .stores import MemoryStore as MemoryStore
from .stores import SQLiteStore as SQLiteStore
from .stores import Store as Store
from .stores import UserIndex as UserIndex
from .stores import from_url as from_url

__version__ = "0.1.0"
