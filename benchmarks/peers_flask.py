"""Flask peers: Flask-Session on its backends, and wsgisession in the same Flask app.

Three peers per store, each a Flask app with the same three views (the body of
``_peer.handle``), driven through ``app.wsgi_app``:

* ``flask-bare`` -- Flask with no session (no ``SECRET_KEY``: Flask's own
  cookie session stays a null session), the body on a dict;
* ``wsgisession-flask`` -- ``wsgisession.integrations.flask.init_app`` with
  the store wsgisession is measured on;
* ``flask-session`` -- Flask-Session 0.8 (``SESSION_TYPE`` redis, cachelib,
  or sqlalchemy: on SQLite, PostgreSQL through psycopg and MariaDB/MySQL
  through PyMySQL).

Both session peers' added time is over ``flask-bare``, so Flask's own cost
cancels out of the comparison.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from _peer import (
    MAX_AGE,
    POSTGRES_URL,
    REDIS_URL,
    SECRET,
    WORKLOADS,
    AppPeer,
    Peer,
    Resources,
    Skipped,
    fresh_dict,
    handle,
    mysql_sqlalchemy_url,
)

STORES = ("file", "sqlite", "redis", "postgres", "mysql")

#: Flask-Session's settings for every backend, all but the backend's own.
#: ``SESSION_REFRESH_EACH_REQUEST=False``: with Flask's default (True) and a
#: permanent session, every read-only request rewrites the session and sends
#: the cookie again, which wsgisession (not rolling) and the other peers do
#: not; the sessions still expire ``PERMANENT_SESSION_LIFETIME`` after their
#: last write. JSON, as wsgisession stores (msgpack is the default). No
#: signer: ``SESSION_USE_SIGNER`` is deprecated in 0.8, the cookie carries a
#: 256-bit random ID as it is.
FLASK_SESSION_CONFIG: dict[str, Any] = {
    "SESSION_PERMANENT": True,
    "SESSION_REFRESH_EACH_REQUEST": False,
    "SESSION_SERIALIZATION_FORMAT": "json",
    "PERMANENT_SESSION_LIFETIME": datetime.timedelta(seconds=MAX_AGE),
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
}


def _app(name: str, session: Callable[[str], Any]) -> Any:
    """A Flask app serving the three workloads, *session(path)* giving the view its session."""
    import flask

    app = flask.Flask(f"bench_{name.replace('-', '_')}")

    def view() -> Any:
        path = flask.request.path
        return flask.Response(handle(session(path), path), content_type="text/plain; charset=utf-8")

    for workload in WORKLOADS:
        app.add_url_rule(f"/{workload}", workload, view)
    return app


def _flask_session_peer(store: str, res: Resources) -> Peer:
    """Flask-Session on *store*, or Skipped when its library or backend library is missing."""
    try:
        return _configure(store, res)
    except ImportError as exc:
        raise Skipped(f"{exc.name or exc} is not installed (pip install -e '.[bench]')") from exc


def _configure(store: str, res: Resources) -> Peer:
    import flask
    from flask_session import Session

    app = _app("flask-session", lambda path: flask.session)
    app.config.update(FLASK_SESSION_CONFIG)
    cleanup: list[Callable[[], None]] = []
    if store == "file":
        from cachelib.file import FileSystemCache

        # threshold=0: no limit on the number of sessions. The default, 500,
        # deletes sessions once there are 500 of them, and from then on lists
        # the directory on every write.
        app.config.update(
            SESSION_TYPE="cachelib", SESSION_CACHELIB=FileSystemCache(res.dir("flask-session"), threshold=0)
        )
        note = "cachelib FileSystemCache(dir, threshold=0): a temp file renamed over the record, no fsync"
    elif store == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        cleanup.append(client.close)
        prefix = res.prefix("flask-session")
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix)
        note = f"SESSION_TYPE=redis, redis.Redis.from_url({REDIS_URL!r}): one GET, or one SET with EX"
    else:
        from flask_sqlalchemy import SQLAlchemy

        if store == "sqlite":
            uri = "sqlite:///" + res.dir("flask-session-sqlite") + "/fs.db"
            table = "sessions"
            note = "SESSION_TYPE=sqlalchemy on SQLite (pysqlite: journal_mode=DELETE, synchronous=FULL)"
        elif store == "mysql":
            import pymysql  # noqa: F401  (SQLAlchemy's mysql+pymysql driver; missing: the family is skipped)

            uri = mysql_sqlalchemy_url()
            table = res.mysql_table("flask_session")
            note = f"SESSION_TYPE=sqlalchemy on MySQL (PyMySQL), InnoDB table {table}"
        else:
            uri = "postgresql+psycopg://" + POSTGRES_URL.partition("://")[2]
            table = res.table("flask_session")
            note = f"SESSION_TYPE=sqlalchemy on PostgreSQL (psycopg), table {table}"
        app.config.update(SQLALCHEMY_DATABASE_URI=uri, SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY_TABLE=table)
        db = SQLAlchemy(app)
        app.config["SESSION_SQLALCHEMY"] = db

        def dispose() -> None:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()

        cleanup.append(dispose)
    Session(app)
    return AppPeer(
        "flask-session",
        "flask-session",
        note,
        baseline="flask-bare",
        versus="wsgisession-flask",
        cleanup=cleanup,
        app=app.wsgi_app,
    )


def peers(store: str, res: Resources, ours_store: Callable[[str], Any], ours_options: dict[str, Any]) -> list[Peer]:
    """The Flask peers of *store* (Skipped when Flask-Session or its backend's library is missing).

    *ours_store(label)* makes a fresh store of the kind wsgisession is
    measured on; *ours_options* are the middleware's options.
    """
    if store not in STORES:
        return []
    session_peer = _flask_session_peer(store, res)  # first: it says why the family cannot run
    import flask

    from wsgisession.integrations.flask import init_app

    bare = _app("flask-bare", fresh_dict)
    ours_app = _app("wsgisession-flask", lambda path: flask.session)
    store_ = ours_store("flask")
    init_app(ours_app, secret=SECRET, store=store_, **ours_options)
    return [
        AppPeer("flask-bare", "bare", "Flask, no session: the body on a dict", app=bare.wsgi_app),
        AppPeer(
            "wsgisession-flask",
            "wsgisession",
            f"wsgisession.integrations.flask.init_app, {type(store_).__name__}",
            baseline="flask-bare",
            cleanup=[store_.close],
            app=ours_app.wsgi_app,
        ),
        session_peer,
    ]
