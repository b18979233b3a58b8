"""SessionMiddleware: the WSGI wrapper that reads the cookie and writes it back."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import quote

from . import _clock, sealing
from .errors import BadSignature, ConfigurationError, StoreError
from .observe import InstrumentedStore, Metrics, Pruner
from .session import DEFAULT_TTL, CookieAction, Session, SessionSettings
from .signing import Secret, SecretLike, Signer
from .stores import from_url
from .stores.base import ProcessLocal, Store

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
#: Signed cookie values already verified, remembered (value -> ID) so a browser's
#: later requests skip the HMAC; emptied when full.
_VERIFIED_CACHE = 8192

# RFC 6265 cookie-name token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SIGNED_ID = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}")
_DOMAIN = re.compile(
    r"\.?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# A cookie Path is printable ASCII other than ';' (RFC 6265 path-value). A
# space or a non-ASCII character is allowed by no browser's matching: they
# compare it with the URL's path, which is percent-encoded.
_PATH = re.compile(r"/[!-:<-~]*")
#: Browsers ignore a Path or Domain attribute longer than this (RFC 6265bis).
_MAX_ATTRIBUTE = 1024
#: The longest max_age, absolute_timeout and prune_interval accepted: 100 years.
#: The cookie's Expires date (now + max_age) must stay a date that can be
#: written (email.utils.formatdate stops at year 9999), a session's expiry a
#: number every store can keep, and a wait one that threading can do.
_MAX_SECONDS = 100 * 36525 * 864
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != ";")

_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"

SecureSetting = bool | Literal["auto"]


class _Incoming(NamedTuple):
    """The session cookie a request carried, once verified."""

    session_id: str | None
    #: The cookie's value as sent.
    signed: str | None
    #: An older secret signed it: send it again signed with the current one.
    resign: bool


_NO_COOKIE = _Incoming(None, None, False)
# Looked up once: an Enum attribute lookup is slow on the per-request path.
_NO_ACTION, _SET = CookieAction.NONE, CookieAction.SET


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
        encrypt: bool = False,
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

        self._check_seconds("max_age", max_age, whole=True)
        self._check_seconds("absolute_timeout", absolute_timeout, whole=True)
        self.max_age = max_age
        self.rolling = bool(rolling)
        self.absolute_timeout = absolute_timeout
        self.save_uninitialized = bool(save_uninitialized)
        self.trust_proxy = bool(trust_proxy)
        if type(encrypt) is not bool:
            raise ConfigurationError(f"encrypt must be True or False, not {encrypt!r}")
        if encrypt:
            sealing.require()
        self.encrypt = encrypt
        if metrics is not None and not isinstance(metrics, Metrics):
            raise ConfigurationError("metrics must have increment(name, value) and timing(name, seconds) methods")
        self.metrics = metrics
        session_store: Store = store if metrics is None else InstrumentedStore(store, metrics)
        self._settings = SessionSettings(
            store=session_store,
            ttl=DEFAULT_TTL if max_age is None else max_age,
            absolute_timeout=absolute_timeout,
            rolling=self.rolling,
            save_uninitialized=self.save_uninitialized,
            encrypt=encrypt,
        )
        self._check_seconds("prune_interval", prune_interval, whole=False)
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
        self._verified: dict[str, _Incoming] = {}

    @staticmethod
    def _check_cookie_name(name: str) -> str:
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise ConfigurationError(
                f"cookie_name {name!r} must be a non-empty RFC 6265 token (no spaces, ;, = or quotes)"
            )
        return name

    @staticmethod
    def _check_seconds(name: str, value: float | None, *, whole: bool) -> None:
        if value is None:
            return
        kinds: tuple[type, ...] = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
            raise ConfigurationError(f"{name} must be a positive number of seconds or None, not {value!r}")
        if not value <= _MAX_SECONDS:
            # Also refuses inf and, above, NaN: no comparison holds for it.
            # The value is not shown: repr() of a huge int is long, or raises.
            raise ConfigurationError(
                f"{name} is too long: at most {_MAX_SECONDS:,} seconds (100 years), so that "
                "the cookie's Expires date and the session's expiry stay dates that can be written"
            )

    @staticmethod
    def _check_path(path: str) -> str:
        if not isinstance(path, str) or _PATH.fullmatch(path) is None:
            hint = ""
            if isinstance(path, str) and path.startswith("/") and ";" not in path:
                # What the browser sends for it, which is what its cookie Path must say.
                hint = f" (write it as the browser sends it: {quote(path, safe=_PATH_SAFE)!r})"
            raise ConfigurationError(
                f"path {path!r} must start with '/' and hold only printable ASCII other than ';': "
                f"no spaces, control or non-ASCII characters{hint}"
            )
        if len(path) > _MAX_ATTRIBUTE:
            raise ConfigurationError(f"path is {len(path)} characters long: browsers ignore one over {_MAX_ATTRIBUTE}")
        return path

    @staticmethod
    def _check_domain(domain: str) -> str:
        if not isinstance(domain, str) or len(domain) > 253 or _DOMAIN.fullmatch(domain) is None:
            hint = ""
            if isinstance(domain, str) and not domain.isascii():
                with contextlib.suppress(UnicodeError):
                    hint = f" (write an international name in its ASCII form: {domain.encode('idna').decode()!r})"
            raise ConfigurationError(f"domain {domain!r} is not a valid host name{hint}")
        return domain

    def __repr__(self) -> str:
        return f"<SessionMiddleware cookie={self.cookie_name!r} store={self.store!r}>"

    def close(self) -> None:
        """Stop the background pruner, if any, and close the store."""
        if self._pruner is not None:
            self._pruner.stop()
        self.store.close()

    # -- per request -----------------------------------------------------------------

    def _session_id(self, environ: WSGIEnvironment) -> _Incoming:
        """The verified session ID from the request's cookie, with the cookie's value and whether to re-sign it."""
        header = environ.get("HTTP_COOKIE")
        if not header:
            return _NO_COOKIE
        if len(header) > MAX_COOKIE_HEADER:
            security_log.warning(
                "Cookie header of %d bytes ignored (limit %d)",
                len(header),
                MAX_COOKIE_HEADER,
                extra={"security_event": "oversized_cookie_header"},
            )
            return _NO_COOKIE
        name = self.cookie_name
        if name not in header:
            return _NO_COOKIE
        # str.split and str.partition are linear in the header's length, unlike a
        # backtracking cookie regex on a long run of characters without '='.
        # Every cookie of our name is tried, in the order sent: browsers send
        # longer-path cookies first, so the genuine one can come after any number
        # planted by a sibling subdomain (cookie tossing). The size cap bounds the
        # work: a value not shaped like a signed ID costs no HMAC, and at most
        # about 330 well-shaped ones fit in MAX_COOKIE_HEADER.
        candidates = []
        for part in header.split(";"):
            key, eq, value = part.partition("=")
            if eq and key.strip() == name:
                value = value.strip()
                if len(value) > 1 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                candidates.append(value)
        if len(candidates) > 1:
            security_log.warning(
                "request carried %d cookies named %r",
                len(candidates),
                name,
                extra={"security_event": "duplicate_cookie"},
            )
        verified = self._verified
        found = _NO_COOKIE
        malformed = forged = 0
        for candidate in candidates:
            known = verified.get(candidate)
            if known is not None:
                found = known
                break
            if _SIGNED_ID.fullmatch(candidate) is None:
                malformed += 1
                continue
            try:
                session_id, current = self._signer.unsign(candidate)
            except BadSignature:
                forged += 1
                continue
            # Remember it: the next request of this browser skips the HMAC. Only
            # verified values go in, so a forged one can never hit.
            if len(verified) >= _VERIFIED_CACHE:
                verified.clear()
            found = verified[candidate] = _Incoming(session_id, candidate, not current)
            break
        # One record per kind and request, however many cookies were planted:
        # a header full of junk must not become thousands of log lines.
        if malformed:
            security_log.info(
                "%d malformed session cookie(s) ignored", malformed, extra={"security_event": "malformed_cookie"}
            )
        if forged:
            if self.metrics is not None:
                InstrumentedStore._report(self.metrics.increment, "bad_signature", forged)
            security_log.info(
                "%d session cookie(s) with a bad signature ignored", forged, extra={"security_event": "bad_signature"}
            )
        return found

    def _is_secure(self, environ: WSGIEnvironment) -> bool:
        if self.secure != "auto":
            return bool(self.secure)
        if environ.get("wsgi.url_scheme") == "https":
            return True
        if self.trust_proxy:
            forwarded = environ.get("HTTP_X_FORWARDED_PROTO", "")
            return str(forwarded).split(",", 1)[0].strip().lower() == "https"
        return False

    def _set_cookie(self, session: Session, environ: WSGIEnvironment, incoming: _Incoming) -> str:
        sid = session.id
        assert sid is not None
        # The cookie the browser sent, if it names this session and the current
        # key signed it (signing is deterministic: it would come out the same).
        value = incoming.signed if incoming.session_id == sid and not incoming.resign else None
        parts = [f"{self.cookie_name}={value or self._signer.sign(sid)}"]
        expires_at = session.expires_at
        permanent = session.permanent
        if permanent is None:
            permanent = self.max_age is not None
        if permanent and expires_at is not None:
            remaining = max(0, math.ceil(expires_at - _clock.now()))
            parts.append(f"Max-Age={remaining}")
            parts.append(f"Expires={self._http_date(expires_at)}")
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
        if not self._warned_multiprocess and environ.get("wsgi.multiprocess") and isinstance(self.store, ProcessLocal):
            self._warned_multiprocess = True
            warnings.warn(
                f"{type(self.store).__name__} keeps sessions in one process, but this server runs several: "
                "users will lose their sessions at random. Use SQLiteStore, RedisStore or PostgresStore.",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._pruner is not None:
            self._pruner.ensure_running()
        incoming = self._session_id(environ)
        session = Session(self._settings, incoming.session_id, user_agent=environ.get("HTTP_USER_AGENT"))
        environ[ENVIRON_KEY] = session

        def session_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if exc_info is None and not status.startswith("5"):
                headers = self._commit(session, environ, incoming, headers)
            elif session.accessed:
                headers = _add_vary_cookie(list(headers))
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return self.app(environ, session_start_response)

    def open_session(self, environ: WSGIEnvironment) -> Session:
        """The session of *environ*'s cookie (or a new one), for a request that does not pass through the middleware.

        For test helpers and framework hooks that build a request of their own
        (Flask's ``test_request_context()``, say): the cookie is verified as
        the middleware does it, and nothing is read from the store until the
        session is used. Pass the session to :meth:`commit_session` to save it.
        """
        incoming = self._session_id(environ)
        return Session(self._settings, incoming.session_id, user_agent=environ.get("HTTP_USER_AGENT"))

    def commit_session(
        self, session: Session, environ: WSGIEnvironment, headers: Iterable[tuple[str, str]] = ()
    ) -> list[tuple[str, str]]:
        """Save *session* as the end of a request does; return *headers* with the cookie headers applied.

        *session* comes from :meth:`open_session` with the same *environ*.
        The result adds ``Set-Cookie`` (a new cookie, or one that expires the
        browser's), ``Vary: Cookie`` and ``Cache-Control: private`` as a
        response through the middleware would carry them.

        :raises StoreError: if the store fails; :raises TypeError: for data that is not JSON.
        """
        return self._commit(session, environ, self._session_id(environ), list(headers))

    def _commit(
        self, session: Session, environ: WSGIEnvironment, incoming: _Incoming, headers: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        try:
            action = session.commit()
            if action is _NO_ACTION and incoming.resign and session.id == incoming.session_id:
                # Signed by an older secret and still live: sign it with the current one.
                action = _SET
        except StoreError:
            log.exception("session not saved: the store failed")
            raise
        except TypeError:
            log.exception("session not saved: it holds data that is not JSON")
            raise
        if action is not _NO_ACTION or session.accessed:
            headers = self._response_headers(headers, session, action, environ, incoming)
        return headers

    def _response_headers(
        self,
        headers: list[tuple[str, str]],
        session: Session,
        action: CookieAction,
        environ: WSGIEnvironment,
        incoming: _Incoming,
    ) -> list[tuple[str, str]]:
        headers = _add_vary_cookie(list(headers))
        if action is _NO_ACTION:
            return headers
        if action is _SET:
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
