"""SessionMiddleware: the WSGI wrapper that reads the cookie and writes it back."""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Literal

from . import _clock
from .errors import BadSignature, ConfigurationError, StoreError
from .observe import InstrumentedStore, Metrics, Pruner
from .session import DEFAULT_TTL, Session, SessionSettings
from .signing import Secret, SecretLike, Signer
from .stores import from_url
from .stores.base import Store

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
else:
    OptExcInfo = Any
    StartResponse = Callable[..., Any]
    WSGIApplication = Callable[..., Any]
    WSGIEnvironment = dict

log = logging.getLogger("wsgisession")
security_log = logging.getLogger("wsgisession.security")

#: The environ key the session is published under.
ENVIRON_KEY = "wsgisession.session"

#: A Cookie header longer than this is ignored, not parsed (browsers send at most
#: about 4 KB per cookie; servers usually cap all headers at 8-16 KB).
MAX_COOKIE_HEADER = 32 * 1024
#: At most this many cookies of our name are considered (cookie tossing).
_MAX_CANDIDATES = 4
#: Signed cookie values already verified, remembered (value -> ID) so a browser's
#: later requests skip the HMAC; emptied when full.
_VERIFIED_CACHE = 8192

# RFC 6265 cookie-name token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SIGNED_ID = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}")
_DOMAIN = re.compile(
    r"\.?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f;]")

_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"

SecureSetting = bool | Literal["auto"]


def get_session(environ: WSGIEnvironment) -> Session:
    """The request's session (``environ["wsgisession.session"]``).

    Raises :class:`RuntimeError` if the application is not wrapped in
    :class:`SessionMiddleware`.
    """
    try:
        session: Session = environ[ENVIRON_KEY]
    except KeyError:
        raise RuntimeError(
            "no session in this request: wrap the application in wsgisession.SessionMiddleware"
        ) from None
    return session


class SessionMiddleware:
    """Give a WSGI application server-side sessions.

    The browser holds a signed session ID in a cookie; the data lives in
    *store*. See the README for every option. Invalid combinations (a
    ``__Host-`` cookie without ``secure=True``, ``SameSite=None`` without
    ``secure=True``, a ``;`` in the path...) raise
    :class:`~wsgisession.errors.ConfigurationError` here, not per request.
    """

    def __init__(
        self,
        app: WSGIApplication,
        secret: SecretLike | Secret | Sequence[SecretLike | Secret] | None = None,
        store: Store | str | None = None,
        *,
        cookie_name: str = "session",
        max_age: int | None = 86400,
        rolling: bool = False,
        absolute_timeout: int | None = None,
        save_uninitialized: bool = False,
        secure: SecureSetting = "auto",
        httponly: bool = True,
        samesite: str | None = "Lax",
        domain: str | None = None,
        path: str = "/",
        partitioned: bool = False,
        trust_proxy: bool = False,
        metrics: Metrics | None = None,
        prune_interval: float | None = None,
    ) -> None:
        self.app = app
        self._signer = Signer(secret)  # type: ignore[arg-type]
        if store is None:
            from .stores.sqlite import SQLiteStore

            store = SQLiteStore("sessions.sqlite3")
        elif isinstance(store, str):
            store = from_url(store)
        self.store: Store = store

        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= 0):
            raise ConfigurationError(f"max_age must be a positive number of seconds or None, not {max_age!r}")
        if absolute_timeout is not None and (
            isinstance(absolute_timeout, bool) or not isinstance(absolute_timeout, int) or absolute_timeout <= 0
        ):
            raise ConfigurationError(
                f"absolute_timeout must be a positive number of seconds or None, not {absolute_timeout!r}"
            )
        self.max_age = max_age
        self.rolling = bool(rolling)
        self.absolute_timeout = absolute_timeout
        self.save_uninitialized = bool(save_uninitialized)
        self.trust_proxy = bool(trust_proxy)
        if metrics is not None and not isinstance(metrics, Metrics):
            raise ConfigurationError("metrics must have increment(name, value) and timing(name, seconds) methods")
        self.metrics = metrics
        session_store: Store = store if metrics is None else InstrumentedStore(store, metrics)
        self._settings = SessionSettings(
            store=session_store, ttl=DEFAULT_TTL if max_age is None else max_age, absolute_timeout=absolute_timeout
        )
        if prune_interval is not None and (
            isinstance(prune_interval, bool) or not isinstance(prune_interval, (int, float)) or prune_interval <= 0
        ):
            raise ConfigurationError(
                f"prune_interval must be a positive number of seconds or None, not {prune_interval!r}"
            )
        self._pruner = None if prune_interval is None else Pruner(session_store, prune_interval)

        if secure not in (True, False, "auto"):
            raise ConfigurationError(f"secure must be True, False or 'auto', not {secure!r}")
        self.secure = secure
        self.cookie_name = self._check_cookie_name(cookie_name)
        lowered = cookie_name.lower()
        if lowered.startswith(("__host-", "__secure-")) and secure is not True:
            raise ConfigurationError(f"a cookie named {cookie_name!r} needs secure=True (browsers drop it otherwise)")
        if lowered.startswith("__host-") and (domain is not None or path != "/"):
            raise ConfigurationError(f"a cookie named {cookie_name!r} needs path='/' and no domain")
        attributes = [f"Path={self._check_path(path)}"]
        if domain is not None:
            attributes.append(f"Domain={self._check_domain(domain)}")
        if httponly:
            attributes.append("HttpOnly")
        if samesite is not None:
            canonical = _SAMESITE.get(str(samesite).lower())
            if canonical is None:
                raise ConfigurationError(f"samesite must be 'Strict', 'Lax', 'None' or None, not {samesite!r}")
            if canonical == "None" and secure is not True:
                raise ConfigurationError(
                    "samesite='None' needs secure=True: browsers refuse SameSite=None without Secure"
                )
            attributes.append(f"SameSite={canonical}")
        if partitioned:
            if secure is not True:
                raise ConfigurationError("partitioned=True needs secure=True: CHIPS cookies must be Secure")
            attributes.append("Partitioned")
        self._attributes = "; " + "; ".join(attributes)
        self._warned_multiprocess = False
        self._date_cache: tuple[int, str] = (-1, "")
        self._verified: dict[str, tuple[str, bool]] = {}

    @staticmethod
    def _check_cookie_name(name: str) -> str:
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise ConfigurationError(
                f"cookie_name {name!r} must be a non-empty RFC 6265 token (no spaces, ;, = or quotes)"
            )
        return name

    @staticmethod
    def _check_path(path: str) -> str:
        if not isinstance(path, str) or not path.startswith("/") or _PATH_FORBIDDEN.search(path):
            raise ConfigurationError(f"path {path!r} must start with '/' and contain no ';' or control characters")
        return path

    @staticmethod
    def _check_domain(domain: str) -> str:
        if not isinstance(domain, str) or len(domain) > 253 or _DOMAIN.fullmatch(domain) is None:
            raise ConfigurationError(f"domain {domain!r} is not a valid host name")
        return domain

    def __repr__(self) -> str:
        return f"<SessionMiddleware cookie={self.cookie_name!r} store={self.store!r}>"

    def close(self) -> None:
        """Stop the background pruner, if any, and close the store."""
        if self._pruner is not None:
            self._pruner.stop()
        self.store.close()

    # -- per request -----------------------------------------------------------------

    def _session_id(self, environ: WSGIEnvironment) -> tuple[str | None, bool, str | None]:
        """The verified session ID from the request's cookie, whether it needs re-signing, and the cookie value."""
        header = environ.get("HTTP_COOKIE")
        if not header:
            return None, False, None
        if len(header) > MAX_COOKIE_HEADER:
            security_log.warning(
                "Cookie header of %d bytes ignored (limit %d)",
                len(header),
                MAX_COOKIE_HEADER,
                extra={"security_event": "oversized_cookie_header"},
            )
            return None, False, None
        name = self.cookie_name
        if name not in header:
            return None, False, None
        # str.split and str.partition are linear in the header's length, unlike a
        # backtracking cookie regex on a long run of characters without '='.
        candidates = []
        for part in header.split(";"):
            key, eq, value = part.partition("=")
            if eq and key.strip() == name:
                value = value.strip()
                if len(value) > 1 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                candidates.append(value)
                if len(candidates) >= _MAX_CANDIDATES:
                    break
        if len(candidates) > 1:
            security_log.warning(
                "request carried %d cookies named %r",
                len(candidates),
                name,
                extra={"security_event": "duplicate_cookie"},
            )
        verified = self._verified
        for candidate in candidates:
            known = verified.get(candidate)
            if known is not None:
                return known[0], known[1], candidate
            if _SIGNED_ID.fullmatch(candidate) is None:
                security_log.info("malformed session cookie ignored", extra={"security_event": "malformed_cookie"})
                continue
            try:
                session_id, current = self._signer.unsign(candidate)
            except BadSignature:
                if self.metrics is not None:
                    InstrumentedStore._report(self.metrics.increment, "bad_signature")
                security_log.info(
                    "session cookie with a bad signature ignored", extra={"security_event": "bad_signature"}
                )
                continue
            # Remember it: the next request of this browser skips the HMAC. Only
            # verified values go in, so a forged one can never hit.
            if len(verified) >= _VERIFIED_CACHE:
                verified.clear()
            verified[candidate] = (session_id, not current)
            return session_id, not current, candidate
        return None, False, None

    def _is_secure(self, environ: WSGIEnvironment) -> bool:
        if self.secure != "auto":
            return bool(self.secure)
        if environ.get("wsgi.url_scheme") == "https":
            return True
        if self.trust_proxy:
            forwarded = environ.get("HTTP_X_FORWARDED_PROTO", "")
            return str(forwarded).split(",", 1)[0].strip().lower() == "https"
        return False

    def _set_cookie(self, session: Session, environ: WSGIEnvironment, incoming: tuple[str | None, str | None]) -> str:
        sid = session._sid
        assert sid is not None
        # The cookie the browser sent, if it names this session and the current
        # key signed it (signing is deterministic: it would come out the same).
        value = incoming[1] if incoming[0] == sid and not session._resign else None
        parts = [f"{self.cookie_name}={value or self._signer.sign(sid)}"]
        if self.max_age is not None and session._expires_at is not None:
            remaining = max(0, math.ceil(session._expires_at - _clock.now()))
            parts.append(f"Max-Age={remaining}")
            parts.append(f"Expires={self._http_date(session._expires_at)}")
        cookie = "; ".join(parts) + self._attributes
        return cookie + "; Secure" if self._is_secure(environ) else cookie

    def _http_date(self, when: float) -> str:
        # Many responses in the same second share an Expires date: format it once.
        second = int(when)
        cached = self._date_cache
        if cached[0] != second:
            cached = self._date_cache = (second, formatdate(second, usegmt=True))
        return cached[1]

    def _delete_cookie(self, environ: WSGIEnvironment) -> str:
        cookie = f"{self.cookie_name}=; Max-Age=0; Expires={_EXPIRED}{self._attributes}"
        return cookie + "; Secure" if self._is_secure(environ) else cookie

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if (
            not self._warned_multiprocess
            and environ.get("wsgi.multiprocess")
            and getattr(self.store, "single_process", False)
        ):
            self._warned_multiprocess = True
            warnings.warn(
                f"{type(self.store).__name__} keeps sessions in one process, but this server runs several: "
                "users will lose their sessions at random. Use SQLiteStore, RedisStore or PostgresStore.",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._pruner is not None:
            self._pruner.ensure_running()
        session_id, resign, signed = self._session_id(environ)
        session = Session(self._settings, session_id, resign=resign, user_agent=environ.get("HTTP_USER_AGENT"))
        environ[ENVIRON_KEY] = session

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if exc_info is None and not status.startswith("5"):
                try:
                    action = session._commit(rolling=self.rolling, save_uninitialized=self.save_uninitialized)
                except StoreError:
                    log.exception("session not saved: the store failed")
                    raise
                except TypeError:
                    log.exception("session not saved: it holds data that is not JSON")
                    raise
                if action is not None or session.accessed:
                    headers = self._response_headers(headers, session, action, environ, (session_id, signed))
            elif session.accessed:
                headers = _add_vary_cookie(list(headers))
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return self.app(environ, session_start_response)

    def _response_headers(
        self,
        headers: list[tuple[str, str]],
        session: Session,
        action: str | None,
        environ: WSGIEnvironment,
        incoming: tuple[str | None, str | None],
    ) -> list[tuple[str, str]]:
        headers = _add_vary_cookie(list(headers))
        if action is None:
            return headers
        if action == "set":
            headers.append(("Set-Cookie", self._set_cookie(session, environ, incoming)))
        else:
            headers.append(("Set-Cookie", self._delete_cookie(environ)))
        return _private_cache(headers)


def _add_vary_cookie(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    for i, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "cookie" not in tokens and "*" not in tokens:
                headers[i] = (name, f"{value}, Cookie" if value.strip() else "Cookie")
            return headers
    headers.append(("Vary", "Cookie"))
    return headers


def _private_cache(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keep a response that sets the session cookie out of shared caches."""
    for i, (name, value) in enumerate(headers):
        if name.lower() == "cache-control":
            directives = [d.strip() for d in value.split(",") if d.strip()]
            lowered = [d.lower() for d in directives]
            if "no-store" in lowered or "private" in lowered:
                return headers
            kept = [d for d in directives if d.lower() != "public" and not d.lower().startswith("s-maxage")]
            headers[i] = (name, ", ".join(["private", *kept]))
            return headers
    headers.append(("Cache-Control", "private"))
    return headers
