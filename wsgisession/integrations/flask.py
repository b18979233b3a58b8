"""Flask integration: ``flask.session`` backed by wsgisession's stores.

Call :func:`init_app` once; it wraps ``app.wsgi_app`` in
:class:`~wsgisession.SessionMiddleware` and installs :class:`WSGISessionInterface`::

    app = flask.Flask(__name__)
    app.config["SECRET_KEY"] = os.environ["SESSION_SECRET"]
    init_app(app, store="sqlite:///sessions.sqlite3")

``flask.session`` is then a :class:`FlaskSession` over the request's
:class:`~wsgisession.Session`; the middleware loads it lazily and saves it
before the response headers go out. It behaves as Flask's own session:

- Flask's ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``) and ``SESSION_COOKIE_*``
  settings configure the middleware unless :func:`init_app` is given the
  option itself (see there for the rule).
- Values are what Flask's session serializer keeps: JSON data, and also
  ``tuple``, ``bytes``, ``datetime``, ``uuid.UUID`` and ``Markup``, stored as
  tagged JSON (never pickled).
- ``session.permanent = False`` gives the session a browser-session cookie,
  ``True`` a cookie with ``Max-Age``; the choice is kept with the session.
- A session that the request empties (``clear()``, ``pop()`` of the last key)
  is destroyed and its cookie deleted, unless it is bound to a user by
  :meth:`~FlaskSession.login`.
- ``flask.flash()`` and ``flask.get_flashed_messages()`` work (``Markup``
  messages too), and share their messages with
  :meth:`Session.flash <wsgisession.Session.flash>`.
- Flask's test client works: ``client.session_transaction()`` opens and saves
  the session of the client's cookie, and in ``app.test_request_context()``
  ``flask.session`` is a real, writable session (saved only if Flask's
  ``process_response`` runs, as with Flask's own).

In typed code, :func:`current_session` is ``flask.session`` with its type.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import flask
from flask.sessions import NullSession, SessionInterface, SessionMixin

from .._tagged import tag, untag
from ..errors import ConfigurationError
from ..middleware import ENVIRON_KEY, SessionMiddleware
from ..session import FLASH_KEY, Session, State
from ..signing import Secret, SecretLike
from ..stores.base import Store
from ._view import SessionView

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from _typeshed.wsgi import WSGIEnvironment
    from flask import Flask
    from flask.wrappers import Request, Response

__all__ = ["FlaskSession", "NoMiddlewareSession", "WSGISessionInterface", "current_session", "init_app"]


def _encode(key: str, value: object) -> object:
    try:
        return tag(value)
    except TypeError as exc:
        raise TypeError(f"session[{key!r}] cannot be stored: {exc}") from None


def _encode_flashes(value: list[Any]) -> list[Any]:
    # Flask queues (category, message) tuples; the core keeps [category, message]
    # lists, the message tagged (Markup) so that every adapter reads it back.
    encoded: list[Any] = []
    for item in value:
        if isinstance(item, (tuple, list)) and len(item) == 2 and type(item[0]) is str:
            encoded.append([item[0], _encode(FLASH_KEY, item[1])])
        else:
            encoded.append(_encode(FLASH_KEY, item))
    return encoded


def _decode_flashes(value: list[Any]) -> list[Any]:
    return [
        (item[0], untag(item[1])) if type(item) is list and len(item) == 2 and type(item[0]) is str else untag(item)
        for item in value
    ]


class FlaskSession(SessionView, SessionMixin):
    """``flask.session``: Flask's ``SessionMixin`` over a :class:`~wsgisession.Session`.

    Values are JSON data or what Flask's own session keeps besides (``tuple``,
    ``bytes``, ``datetime``, ``uuid.UUID``, ``Markup``), each top-level value
    stored as tagged JSON; anything else raises :class:`TypeError` naming the
    key. Changes inside lists and dicts are saved without ``modified = True``.

    - ``modified``: whether the request changed the session (it keeps that
      answer after the response). Setting it ``True`` makes it read ``True``;
      it never forces a write of unchanged data.
    - ``accessed``: whether the request used the session (the response then
      carries ``Vary: Cookie``), as in Flask.
    - ``permanent``: ``True`` for a cookie with ``Max-Age``, ``False`` for a
      browser-session cookie; until set, it follows the middleware's
      ``max_age`` (Flask's own default is ``False``). See
      :attr:`Session.permanent <wsgisession.Session.permanent>`.
    - ``new``: :attr:`Session.is_new <wsgisession.Session.is_new>`.

    The wrapped session, with its whole API, is :attr:`wsgi_session`.
    """

    def __init__(
        self,
        session: Session,
        *,
        permanent: bool = True,
        middleware: SessionMiddleware | None = None,
        environ: WSGIEnvironment | None = None,
    ) -> None:
        """Present *session*; *permanent* is ``permanent``'s default.

        With *middleware* (and the request's *environ*), this object saves the
        session itself when Flask saves it: for a request that does not pass
        through the middleware, such as ``app.test_request_context()``.
        """
        #: The :class:`~wsgisession.Session` this object presents.
        self.wsgi_session = session
        self._default_permanent = permanent
        self._middleware = middleware
        self._environ = environ
        #: Values read back as new objects (they held tagged data), by key: an
        #: in-place change to one is written back when the session is saved.
        self._handed: dict[str, object] = {}
        self._flagged = False
        #: What ``modified`` says once the response is made.
        self._final: bool | None = None

    def __repr__(self) -> str:
        return f"<FlaskSession of {self.wsgi_session!r}>"

    # -- the mapping -------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        stored = super().__getitem__(key)
        if key == FLASH_KEY and type(stored) is list:
            # A fresh list: flask.flash() appends to it and stores it back.
            return _decode_flashes(stored)
        value = untag(stored)
        if value is not stored:
            self._handed[key] = value
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._handed.pop(key, None)
        flashes = key == FLASH_KEY and isinstance(value, list)
        data = _encode_flashes(value) if flashes else _encode(key, value)
        super().__setitem__(key, data)

    def __delitem__(self, key: str) -> None:
        self._handed.pop(key, None)
        super().__delitem__(key)

    def clear(self) -> None:
        """Remove every key; at the end of the request the emptied session is destroyed."""
        self._handed.clear()
        super().clear()

    def _write_back(self) -> None:
        """Store again the values handed out as new objects: the app may have changed them in place."""
        session = self.wsgi_session
        for key, value in self._handed.items():
            if key in session:
                session[key] = _encode(key, value)  # the same data writes nothing

    def _pending(self) -> bool:
        session = self.wsgi_session
        if session.modified:
            return True
        for key, value in self._handed.items():
            try:
                if key in session and session[key] != _encode(key, value):
                    return True
            except TypeError:
                return True  # changed into something that cannot be stored: saving says why
        return False

    def _finish(self, *, failed: bool) -> None:
        """End of request, before the save: write back in-place changes, destroy an emptied session.

        Nothing is destroyed for a *failed* (5xx) response: it saves nothing either.
        """
        if self._final is not None:
            return
        self._write_back()
        modified = self._flagged or self._pending()
        session = self.wsgi_session
        # Flask deletes the cookie of a session left empty. One bound to a user
        # is a login, not an empty session, and stays.
        if not failed and modified and session.state is State.LIVE and not len(session) and session.user_id is None:
            session.destroy()
        self._final = modified

    # -- SessionMixin ----------------------------------------------------------------

    @property
    def new(self) -> bool:
        """Whether the session did not exist before this request."""
        return self.wsgi_session.is_new

    @new.setter
    def new(self, value: bool) -> None:
        pass  # the session knows whether it is new

    @property
    def modified(self) -> bool:
        """Whether this request changed the session's data (still answered after the response)."""
        if self._final is not None:
            return self._final
        return self._flagged or self._pending()

    @modified.setter
    def modified(self, value: bool) -> None:
        # Changes are tracked by the session itself, nested ones included: the
        # flag only makes the property read what the application said.
        self._flagged = bool(value)

    @property
    def accessed(self) -> bool:
        """Whether the request used the session (the response then varies on Cookie)."""
        return self.wsgi_session.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self.wsgi_session.accessed = bool(value)

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser: ``True`` (``Max-Age``) or ``False`` (a browser-session cookie).

        Until set, the middleware's ``max_age`` decides (``None``: ``False``).
        Setting it is kept with the session, for every later response.
        """
        chosen = self.wsgi_session.permanent
        return self._default_permanent if chosen is None else chosen

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self.wsgi_session.permanent = bool(value)

    # -- the rest of wsgisession's API that a login view needs ---------------------------

    @property
    def id(self) -> str | None:
        """The session ID (a bearer credential: never log it), or ``None`` before the first save."""
        return self.wsgi_session.id

    def destroy(self) -> None:
        """Delete the session now, clear its data and expire the cookie; see :meth:`Session.destroy`."""
        self._handed.clear()
        self.wsgi_session.destroy()

    @property
    def csrf_token(self) -> str:
        """The session's CSRF token, made on first use."""
        return self.wsgi_session.csrf_token

    def new_csrf_token(self) -> str:
        """Replace the session's CSRF token with a fresh one and return it."""
        return self.wsgi_session.new_csrf_token()

    def check_csrf(self, token: object) -> bool:
        """Whether *token* is the session's CSRF token (constant-time)."""
        return self.wsgi_session.check_csrf(token)


def current_session() -> FlaskSession:
    """``flask.session``, typed as a :class:`FlaskSession` (for ``regenerate()``, ``csrf_token``...).

    Raises :class:`RuntimeError` outside a request, or when the application
    has no middleware (see :func:`init_app`).
    """
    session = flask.session
    if not isinstance(session, FlaskSession):
        raise RuntimeError("no wsgisession session here: outside a request, or init_app(app, ...) was not called")
    return session


class NoMiddlewareSession(NullSession):
    """The read-only empty session of a request that has no middleware to give it a session.

    Used when :class:`WSGISessionInterface` is installed without a middleware
    and the request did not pass through one; writing to it raises
    :class:`RuntimeError`.
    """

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            "no session in this request: it did not pass through SessionMiddleware "
            "(call wsgisession.integrations.flask.init_app(app, ...) and send requests to app or app.wsgi_app)"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


#: Set in a request's environ when the interface, not the middleware, opened its session.
_OPENED_HERE = "wsgisession.flask.opened_here"


class WSGISessionInterface(SessionInterface):
    """A Flask session interface that presents the middleware's session as ``flask.session``.

    A request through *middleware* (``app.wsgi_app``; :func:`init_app` sets
    both up) gets the session the middleware opened, which the middleware
    saves when the response starts. A request context that did not pass
    through it (``app.test_request_context()``, the test client's
    ``session_transaction()``) gets a session opened from its cookie by
    *middleware*, which :meth:`save_session` saves, setting the cookie on
    Flask's response. Without *middleware*, such a request gets a read-only
    empty :class:`NoMiddlewareSession`.
    """

    null_session_class = NoMiddlewareSession

    def __init__(self, middleware: SessionMiddleware | None = None) -> None:
        self.middleware = middleware

    def _permanent(self) -> bool:
        return self.middleware is None or self.middleware.max_age is not None

    def open_session(self, app: Flask, request: Request) -> FlaskSession | None:
        """The request's session; ``None`` (Flask's null session) if there is none and no middleware to open one."""
        environ = request.environ
        session = environ.get(ENVIRON_KEY)
        opened_here = environ.get(_OPENED_HERE) is True
        if isinstance(session, Session) and not opened_here:
            return FlaskSession(session, permanent=self._permanent())
        if self.middleware is None:
            return None
        if not isinstance(session, Session):
            # Published as the middleware does it, for get_session(environ).
            session = environ[ENVIRON_KEY] = self.middleware.open_session(environ)
            environ[_OPENED_HERE] = True
        return FlaskSession(session, permanent=self._permanent(), middleware=self.middleware, environ=environ)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """End the request's use of *session*; save it here if the middleware will not.

        An emptied session is destroyed (its cookie deleted). A session this
        interface opened itself is saved now and its ``Set-Cookie`` (with
        ``Vary: Cookie``) put on *response*. A 5xx response saves nothing.
        """
        if not isinstance(session, FlaskSession):
            return
        failed = response.status_code >= 500
        session._finish(failed=failed)
        middleware, environ = session._middleware, session._environ
        if middleware is None or environ is None or failed:
            return  # the middleware saves it, or a failed response saves nothing
        session._middleware = None  # saved once
        headers = middleware.commit_session(session.wsgi_session, environ, response.headers.items())
        response.headers.clear()
        response.headers.extend(headers)


#: Flask's defaults for the settings whose default is weaker than ours: each is
#: used only when the app's config gives it another value.
_FLASK_SECURE_DEFAULT = False
_FLASK_SAMESITE_DEFAULT = None
_FLASK_LIFETIME_DEFAULT = timedelta(days=31)


def _options_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The middleware options that Flask's session settings in *config* ask for."""
    options: dict[str, Any] = {
        "cookie_name": config.get("SESSION_COOKIE_NAME") or "session",
        "domain": config.get("SESSION_COOKIE_DOMAIN") or None,
        "path": config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/",
        "httponly": bool(config.get("SESSION_COOKIE_HTTPONLY", True)),
        "partitioned": bool(config.get("SESSION_COOKIE_PARTITIONED", False)),
        "rolling": bool(config.get("SESSION_REFRESH_EACH_REQUEST", True)),
    }
    secure = config.get("SESSION_COOKIE_SECURE", _FLASK_SECURE_DEFAULT)
    if secure != _FLASK_SECURE_DEFAULT:
        options["secure"] = secure
    samesite = config.get("SESSION_COOKIE_SAMESITE", _FLASK_SAMESITE_DEFAULT)
    if samesite != _FLASK_SAMESITE_DEFAULT:
        options["samesite"] = samesite
    lifetime = config.get("PERMANENT_SESSION_LIFETIME", _FLASK_LIFETIME_DEFAULT)
    if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool):
        lifetime = timedelta(seconds=lifetime)
    if not isinstance(lifetime, timedelta):
        raise ConfigurationError(f"PERMANENT_SESSION_LIFETIME must be a timedelta or seconds, not {lifetime!r}")
    if lifetime != _FLASK_LIFETIME_DEFAULT:
        seconds = lifetime.total_seconds()
        options["max_age"] = int(seconds) if seconds.is_integer() else seconds
    return options


def _secrets_from_config(config: Mapping[str, Any]) -> list[Any]:
    key = config.get("SECRET_KEY")
    if not key:
        raise ConfigurationError(
            "init_app() needs a secret: pass secret=... or set app.config['SECRET_KEY'] before calling it"
        )
    return [key, *(config.get("SECRET_KEY_FALLBACKS") or ())]


def init_app(
    app: Flask,
    secret: SecretLike | Secret | Sequence[SecretLike | Secret] | None = None,
    store: Store | str | None = None,
    **options: Any,
) -> SessionMiddleware:
    """Give a Flask application wsgisession sessions; return the middleware.

    Wraps ``app.wsgi_app`` in :class:`~wsgisession.SessionMiddleware` and
    sets ``app.session_interface``. Serve ``app`` as usual (``app`` calls
    ``app.wsgi_app``); Flask's test client goes through the middleware too.

    Without *secret*, ``app.config["SECRET_KEY"]`` signs the cookie and
    ``SECRET_KEY_FALLBACKS`` still verify it (a :class:`ConfigurationError`
    if neither is set). Flask's cookie settings in ``app.config``, as they are
    when this is called, give the middleware's options, and an option passed
    here wins: ``SESSION_COOKIE_NAME``, ``SESSION_COOKIE_DOMAIN``,
    ``SESSION_COOKIE_PATH`` (else ``APPLICATION_ROOT``),
    ``SESSION_COOKIE_HTTPONLY``, ``SESSION_COOKIE_PARTITIONED`` and
    ``SESSION_REFRESH_EACH_REQUEST`` (``rolling``) always;
    ``SESSION_COOKIE_SECURE``, ``SESSION_COOKIE_SAMESITE`` and
    ``PERMANENT_SESSION_LIFETIME`` (``max_age``) only when set to something
    other than Flask's default (``False``, ``None``, 31 days), which is weaker
    than the middleware's (``"auto"``, ``"Lax"``, one day). Invalid options
    raise :class:`~wsgisession.ConfigurationError` here.
    """
    config = app.config
    if secret is None:
        secret = _secrets_from_config(config)
    middleware = SessionMiddleware(app.wsgi_app, secret, store, **{**_options_from_config(config), **options})
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.session_interface = WSGISessionInterface(middleware)
    return middleware
