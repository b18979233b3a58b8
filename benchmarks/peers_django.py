"""Django peers: ``django.contrib.sessions``'s engines, each in a Django process of its own.

Django's settings can be configured once per process, so for every (store,
workload) compare.py starts this file as a worker: it configures Django in
code for that store's engine, builds two WSGI handlers and serves them:

* ``django-bare`` -- the same project without ``SessionMiddleware``, the view
  running the body on a dict;
* ``django`` -- ``SessionMiddleware`` (the only middleware) with
  ``SESSION_ENGINE`` ``db`` (SQLite, PostgreSQL, MySQL), ``file`` or ``cache``
  (``django.core.cache.backends.redis.RedisCache``).

On MySQL (MariaDB) Django's own backend runs on PyMySQL, installed in the
worker as ``MySQLdb`` (``pymysql.install_as_MySQLdb()``), in a database of its
own that compare.py drops afterwards. Django checks only
``MySQLdb.version_info`` against the mysqlclient it needs (1.4.3 for Django
5.2), and PyMySQL 1.1 and later report a version past it, so nothing is
patched; should a Django refuse the driver or the server
(``ImproperlyConfigured``, ``NotSupportedError``), the peer is skipped with
Django's reason.

The worker takes one command per line on stdin and answers one JSON line:
``prepare`` (log in for a cookie, check the workload, calibrate a batch) and
``run`` (serve a batch, return its seconds). compare.py waits for each answer,
so the two processes never run at once and the Django peers take their turns
in the rounds like any other peer.

    python benchmarks/peers_django.py '{"store": "sqlite", ...}'   # what compare.py runs
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import traceback
import types
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from _peer import (
    BASE_ENVIRON,
    MAX_AGE,
    MYSQL_URL,
    POSTGRES_URL,
    REDIS_URL,
    SECRET,
    Peer,
    Resources,
    Skipped,
    calibrate,
    check,
    drive,
    environ_for,
    fresh_dict,
    handle,
    mysql_params,
)

STORES = ("file", "sqlite", "redis", "postgres", "mysql")
#: The stores whose engine is ``db``: Django's tables are made by ``migrate``.
DATABASE_STORES = ("sqlite", "postgres", "mysql")
ENGINES = {
    "file": "django.contrib.sessions.backends.file",
    "sqlite": "django.contrib.sessions.backends.db",
    "postgres": "django.contrib.sessions.backends.db",
    "mysql": "django.contrib.sessions.backends.db",
    "redis": "django.contrib.sessions.backends.cache",
}
NOTES = {
    "file": "SESSION_ENGINE=file: a temp file renamed over the record, no fsync",
    "sqlite": "SESSION_ENGINE=db on SQLite (journal_mode=DELETE, synchronous=FULL: Django's defaults)",
    "postgres": "SESSION_ENGINE=db on PostgreSQL (psycopg 3)",
    "mysql": "SESSION_ENGINE=db on MySQL (django.db.backends.mysql, PyMySQL as MySQLdb), a database of its own",
    "redis": "SESSION_ENGINE=cache, CACHES RedisCache (django.core.cache.backends.redis)",
}


# -- compare.py's side ----------------------------------------------------------------------


class Worker:
    """A running worker process, one request-response exchange at a time."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        hello = self._read()
        if "skipped" in hello:
            self.close()
            raise Skipped(hello["skipped"])
        self.django_version: str = hello["django"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the Django worker exited ({code}); its stderr is above")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the Django worker failed:\n{answer['error']}")
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # end of input: the worker returns
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@dataclass
class DjangoPeer(Peer):
    """A peer served by a worker process."""

    worker: Worker | None = None

    def prepare(self, workload: str, target: float, min_n: int, max_n: int) -> int:
        assert self.worker is not None
        answer = self.worker.ask(
            op="prepare", peer=self.name, workload=workload, target=target, min_n=min_n, max_n=max_n
        )
        return int(answer["n"])

    def run(self, n: int) -> float:
        assert self.worker is not None
        return float(self.worker.ask(op="run", peer=self.name, n=n)["seconds"])


def peers(store: str, res: Resources) -> list[Peer]:
    """The Django peers of *store*, their worker started (Skipped when Django is missing)."""
    if store not in STORES:
        return []
    config: dict[str, Any] = {"store": store}
    if store == "file":
        config["dir"] = res.dir("django-file")
    elif store == "sqlite":
        config["path"] = os.path.join(res.dir("django-sqlite"), "dj.db")
    elif store == "postgres":
        config["schema"] = res.schema("django")
    elif store == "mysql":
        config["database"] = res.mysql_database("django")
    elif store == "redis":
        config["prefix"] = res.prefix("django")
    worker = Worker(config)
    note = f"Django {worker.django_version}, {NOTES[store]}"
    if store == "mysql":
        note += f" ({config['database']})"
    return [
        DjangoPeer("django-bare", "bare", "Django, no SessionMiddleware: the body on a dict", worker=worker),
        DjangoPeer(
            "django",
            "django",
            note,
            baseline="django-bare",
            versus="wsgisession",
            cleanup=[worker.close],
            worker=worker,
        ),
    ]


# -- the worker -------------------------------------------------------------------------------


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """Django's settings for the store in *config*: SessionMiddleware alone, the engine's own settings."""
    store = config["store"]
    settings: dict[str, Any] = {
        "DEBUG": False,
        "SECRET_KEY": SECRET,
        "ALLOWED_HOSTS": ["127.0.0.1"],
        "INSTALLED_APPS": ["django.contrib.sessions"],
        "MIDDLEWARE": ["django.contrib.sessions.middleware.SessionMiddleware"],
        "ROOT_URLCONF": "bench_urls",
        "USE_TZ": True,
        "SESSION_ENGINE": ENGINES[store],
        "SESSION_COOKIE_AGE": MAX_AGE,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "DATABASES": {},
    }
    # CONN_MAX_AGE=None keeps the connection open across requests, as
    # wsgisession's pool does; Django's default (0) reconnects on every request.
    if store == "sqlite":
        settings["DATABASES"] = {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": config["path"], "CONN_MAX_AGE": None}
        }
    elif store == "postgres":
        url = urlsplit(POSTGRES_URL)
        settings["DATABASES"] = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": unquote(url.path.lstrip("/")),
                "USER": unquote(url.username or ""),
                "PASSWORD": unquote(url.password or ""),
                "HOST": url.hostname or "",
                "PORT": str(url.port or ""),
                "CONN_MAX_AGE": None,
                "OPTIONS": {"options": f"-c search_path={config['schema']}"},
            }
        }
    elif store == "mysql":
        params = mysql_params(MYSQL_URL)
        settings["DATABASES"] = {
            "default": {
                "ENGINE": "django.db.backends.mysql",
                "NAME": config["database"],
                "USER": params["user"] or "",
                "PASSWORD": params["password"],
                "HOST": params["host"],
                "PORT": str(params["port"]),
                "CONN_MAX_AGE": None,
                "OPTIONS": {"charset": "utf8mb4"},
            }
        }
    elif store == "file":
        settings["SESSION_FILE_PATH"] = config["dir"]
    elif store == "redis":
        settings["CACHES"] = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": config["prefix"],
            }
        }
    return settings


class Refused(Exception):
    """Django will not run on this store's server or driver; the message says why."""


def _handlers(config: dict[str, Any]) -> dict[str, Any]:
    """Configure Django once, for this process; return the two WSGI handlers by peer name."""
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse
    from django.test.utils import override_settings
    from django.urls import path

    def view(request: Any) -> HttpResponse:
        session = getattr(request, "session", None)  # absent without SessionMiddleware
        if session is None:
            session = fresh_dict(request.path_info)
        return HttpResponse(handle(session, request.path_info), content_type="text/plain; charset=utf-8")

    urls = types.ModuleType("bench_urls")
    urls.urlpatterns = [path(workload, view) for workload in ("login", "read", "update")]  # type: ignore[attr-defined]
    sys.modules["bench_urls"] = urls

    if config["store"] == "mysql":
        import pymysql

        pymysql.install_as_MySQLdb()
    settings.configure(**_settings(config))
    django.setup()
    if config["store"] in DATABASE_STORES:
        from django.core.exceptions import ImproperlyConfigured
        from django.core.management import call_command
        from django.db import NotSupportedError

        try:
            call_command("migrate", run_syncdb=True, verbosity=0)
        except (ImproperlyConfigured, NotSupportedError) as exc:
            raise Refused(f"Django {django.get_version()} refuses this database or driver: {exc}") from exc
    with override_settings(MIDDLEWARE=[]):
        bare = WSGIHandler()  # the middleware chain is built here, once
    return {"django-bare": bare, "django": WSGIHandler(), "version": django.get_version()}


def serve(config: dict[str, Any], commands: IO[str], answers: IO[str]) -> None:
    def say(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    try:
        handlers = _handlers(config)
    except ImportError as exc:
        say({"skipped": f"{exc.name or exc} is not installed (pip install -e '.[bench]')"})
        return
    except Refused as exc:
        say({"skipped": str(exc)})
        return
    except Exception:
        say({"error": traceback.format_exc()})
        return
    say({"ready": True, "django": handlers.pop("version")})
    environs: dict[str, dict[str, Any]] = {}
    # Django's request wraps wsgi.input when it is made; the other peers never look at it.
    base = dict(BASE_ENVIRON, **{"wsgi.input": io.BytesIO()})
    for line in commands:
        command = json.loads(line)
        try:
            name = command["peer"]
            app = handlers[name]
            kind = "bare" if name == "django-bare" else "django"
            if command["op"] == "prepare":
                workload = command["workload"]
                environ = environ_for(name, kind, app, workload, base)
                check(name, kind, app, workload, environ)
                environs[name] = environ
                n = calibrate(
                    lambda n, app=app, environ=environ: drive(app, environ, n),
                    command["target"],
                    command["min_n"],
                    command["max_n"],
                )
                say({"n": n})
            elif command["op"] == "run":
                gc.collect()
                say({"seconds": drive(app, environs[name], command["n"])})
            else:
                say({"error": f"unknown command {command!r}"})
        except Exception:
            say({"error": traceback.format_exc()})


def main() -> None:
    # The answers go to the real stdout; anything else printed goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(json.loads(sys.argv[1]), sys.stdin, answers)


if __name__ == "__main__":
    main()
