"""Flask integration: ``flask.session`` backed by wsgisession's stores.

Call :func:`init_app` once; it wraps ``app.wsgi_app`` in
:class:`~wsgisession.SessionMiddleware` and installs :class:`WSGISessionInterface`::

    app = flask.Flask(__name__)
    init_app(app, secret=os.environ["SESSION_SECRET"], store="sqlite:///sessions.sqlite3")

``flask.session`` is then a :class:`FlaskSession` over the request's
:class:`~wsgisession.Session`; the middleware loads it lazily and saves it
before the response headers go out, so Flask's ``SECRET_KEY`` and
``SESSION_COOKIE_*`` settings play no part (configure the middleware instead).
``flask.flash()`` and ``flask.get_flashed_messages()`` work, and share their
messages with :meth:`Session.flash <wsgisession.Session.flash>`. In typed
code, :func:`current_session` is ``flask.session`` with its type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import flask
from flask.sessions import NullSession, SessionInterface, SessionMixin

from ..middleware import ENVIRON_KEY, SessionMiddleware
from ..session import FLASH_KEY, Session
from ..signing import Secret, SecretLike
from ..stores.base import Store
from ._view import SessionView

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flask import Flask
    from flask.wrappers import Request, Response

__all__ = ["FlaskSession", "NoMiddlewareSession", "WSGISessionInterface", "current_session", "init_app"]


class FlaskSession(SessionView, SessionMixin):
    """``flask.session``: Flask's ``SessionMixin`` over a :class:`~wsgisession.Session`.

    Values must be JSON data. The one exception is Flask's flash storage:
    ``flask.flash()`` stores ``(category, message)`` tuples under
    ``"_flashes"``, which are kept as two-item lists and read back as tuples.
    ``modified`` is the wrapped session's own change tracking (setting it does
    nothing: changes inside lists and dicts are detected without it);
    ``permanent`` has no effect (the cookie's lifetime is the middleware's
    ``max_age``); ``new`` is :attr:`Session.is_new <wsgisession.Session.is_new>`.
    The wrapped session, with its whole API, is :attr:`wsgi_session`.
    """

    def __init__(self, session: Session, *, permanent: bool = True) -> None:
        #: The :class:`~wsgisession.Session` this object presents.
        self.wsgi_session = session
        self._permanent = permanent

    def __repr__(self) -> str:
        return f"<FlaskSession of {self.wsgi_session!r}>"

    # -- the mapping -------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if key == FLASH_KEY and type(value) is list:
            # A fresh list: flask.flash() appends to it and stores it back.
            return [tuple(item) if type(item) is list else item for item in value]
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if key == FLASH_KEY and type(value) is list:
            value = [list(item) if type(item) is tuple else item for item in value]
        super().__setitem__(key, value)

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
        """Whether this request changed the session's data."""
        return self.wsgi_session.modified

    @modified.setter
    def modified(self, value: bool) -> None:
        pass  # changes are tracked by the session itself, nested ones included

    @property
    def accessed(self) -> bool:
        """Whether the request used the session (the response then varies on Cookie)."""
        return self.wsgi_session.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        if value:
            self.wsgi_session.accessed = True

    @property
    def permanent(self) -> bool:
        """Whether the cookie outlives the browser (the middleware's ``max_age`` decides; setting this does nothing)."""
        return self._permanent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        pass  # the cookie's lifetime is the middleware's max_age

    # -- the rest of wsgisession's API that a login view needs ---------------------------

    @property
    def id(self) -> str | None:
        """The session ID (a bearer credential: never log it), or ``None`` before the first save."""
        return self.wsgi_session.id

    def destroy(self) -> None:
        """Delete the session now, clear its data and expire the cookie; see :meth:`Session.destroy`."""
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

    Raises :class:`RuntimeError` outside a request, or when the request did
    not pass through the middleware (see :func:`init_app`).
    """
    session = flask.session
    if not isinstance(session, FlaskSession):
        raise RuntimeError("no wsgisession session here: outside a request, or init_app(app, ...) was not called")
    return session


class NoMiddlewareSession(NullSession):
    """The read-only empty session of a request that did not pass through the middleware.

    Flask uses it in ``app.test_request_context()`` and the like; writing to
    it raises :class:`RuntimeError`.
    """

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            "no session in this request: it did not pass through SessionMiddleware "
            "(call wsgisession.integrations.flask.init_app(app, ...) and send requests to app or app.wsgi_app)"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


class WSGISessionInterface(SessionInterface):
    """A Flask session interface that presents the middleware's session as ``flask.session``.

    The application must be wrapped in :class:`~wsgisession.SessionMiddleware`
    (:func:`init_app` does both). :meth:`save_session` does nothing: the
    middleware saves the session when the response starts. *permanent* is what
    ``session.permanent`` reports (``True`` when the middleware's ``max_age`` is set).
    """

    null_session_class = NoMiddlewareSession

    def __init__(self, *, permanent: bool = True) -> None:
        self.permanent = permanent

    def open_session(self, app: Flask, request: Request) -> FlaskSession | None:
        """The request's session, or ``None`` (Flask then uses a read-only empty one) without the middleware."""
        session = request.environ.get(ENVIRON_KEY)
        if not isinstance(session, Session):
            return None
        return FlaskSession(session, permanent=self.permanent)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Do nothing: :class:`~wsgisession.SessionMiddleware` saves the session and sets the cookie."""


def init_app(
    app: Flask,
    secret: SecretLike | Secret | Sequence[SecretLike | Secret],
    store: Store | str | None = None,
    **options: Any,
) -> SessionMiddleware:
    """Give a Flask application wsgisession sessions; return the middleware.

    Wraps ``app.wsgi_app`` in :class:`~wsgisession.SessionMiddleware` (with
    *secret*, *store* and *options*, as documented there: invalid ones raise
    :class:`~wsgisession.ConfigurationError` here) and sets
    ``app.session_interface``. Serve ``app`` as usual (``app`` calls
    ``app.wsgi_app``); Flask's test client goes through the middleware too.
    """
    middleware = SessionMiddleware(app.wsgi_app, secret, store, **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.session_interface = WSGISessionInterface(permanent=middleware.max_age is not None)
    return middleware
