"""Run a WSGI app under a real server in a subprocess, and talk to it over a socket.

Used by the ``server``-marked tests. Everything here is bounded: a server that
does not answer within its start timeout is killed and its output is put in the
failure message; every request has a socket timeout; a stopped server's whole
process group is killed, so no gunicorn worker outlives its test.

Run as a script it is the ``wsgiref.simple_server`` launcher::

    python -m tests.liveserver --port 8000 tests.serverapp:app
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

HOST = "127.0.0.1"
#: The repository root: servers get it on PYTHONPATH so ``tests.serverapp`` imports.
ROOT = Path(__file__).resolve().parent.parent
APP = "tests.serverapp:app"
#: A secret of the recommended length (32 bytes or more), for test servers only.
TEST_SECRET = "wsgisession-live-server-test-secret-0123456789"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 20.0


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under ``WSGISESSION_REQUIRE_ALL=1`` (see :mod:`tests.servers`)."""
    # Imported here: the wsgiref launcher below runs without pytest.
    from tests.servers import unavailable

    unavailable(reason)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


# -- commands -------------------------------------------------------------------------


def gunicorn_command(port: int, *, workers: int = 2, worker_class: str = "sync", threads: int = 1) -> list[str]:
    """Run :data:`APP` under gunicorn on loopback."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--graceful-timeout",
        "2",
        "--timeout",
        "30",
        "--log-level",
        "warning",
    ]
    if worker_class == "gthread":
        command += ["--threads", str(threads)]
    return [*command, APP]


def waitress_command(port: int) -> list[str]:
    """Run :data:`APP` under waitress (its ``waitress-serve`` entry point) on loopback."""
    return [sys.executable, "-m", "waitress", f"--listen={HOST}:{port}", APP]


def wsgiref_command(port: int) -> list[str]:
    """Run :data:`APP` under ``wsgiref.simple_server`` (this module's launcher)."""
    return [sys.executable, "-m", "tests.liveserver", "--port", str(port), APP]


COMMANDS = {"gunicorn": gunicorn_command, "waitress": waitress_command, "wsgiref": wsgiref_command}
#: The module each server needs, to skip cleanly when it is missing.
SERVER_MODULES = {"gunicorn": "gunicorn", "waitress": "waitress", "wsgiref": "wsgiref"}


def server_env(store_url: str, **extra: str) -> dict[str, str]:
    """The environment for a server process running :mod:`tests.serverapp`."""
    env = dict(os.environ)
    paths = [str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["WSGISESSION_TEST_STORE"] = store_url
    env["WSGISESSION_TEST_SECRET"] = TEST_SECRET
    env["PYTHONUNBUFFERED"] = "1"
    # A warnings filter of the parent (pytest's -W error) must not leak into the server.
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


# -- the server process -----------------------------------------------------------------


@dataclass
class LiveServer:
    """A server subprocess in its own process group, listening on ``HOST:port``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    #: The app's WSGISESSION_TEST_MARKDIR (see :mod:`tests.serverapp`).
    markdir: Path
    _log: Any = field(repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def output(self, limit: int = 8000) -> str:
        """The tail of what the server wrote to stdout and stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no output: {exc})"
        return text[-limit:]

    def describe(self) -> str:
        """A failure message's worth of context: the command and the server's output."""
        return f"{self.name} on {self.address} (exit code {self.process.poll()}); output:\n{self.output()}"

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, a grace period, then SIGKILL to what is left."""
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)
        # Workers orphaned by a master that died first are still in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)
        self._log.close()

    def wait_for_mark(self, name: str, timeout: float = 10.0) -> None:
        """Wait until the app drops the file *name* in :attr:`markdir`."""
        deadline = time.monotonic() + timeout
        while not (self.markdir / name).exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no mark {name!r} from the app within {timeout:g} s\n{self.describe()}")
            time.sleep(0.01)


def _wait_ready(server: LiveServer, processes: int, deadline: float) -> str | None:
    """Poll ``GET /ping`` until it answers 200 and *processes* processes have loaded the app.

    Return why not, or None when ready. Without the second condition a test
    could start while three of four gunicorn workers are still importing, and
    one worker would answer everything.
    """
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return f"exited with code {server.process.returncode}"
        conn = http.client.HTTPConnection(HOST, server.port, timeout=2)
        try:
            conn.request("GET", "/ping")
            response = conn.getresponse()
            body = response.read()
            loaded = len(list(server.markdir.glob("ready-*")))
            if response.status == 200 and body == b"pong" and loaded >= processes:
                return None
            last = f"{loaded} of {processes} processes loaded the app"
            if response.status != 200 or body != b"pong":
                last = f"/ping answered {response.status} {body[:200]!r}"
        except OSError as exc:
            last = f"/ping failed: {exc!r}"
        finally:
            conn.close()
        time.sleep(0.1)
    return f"not ready within the start timeout ({last})"


def start_server(
    name: str,
    command: Sequence[str],
    port: int,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    processes: int = 1,
    timeout: float = START_TIMEOUT,
) -> LiveServer:
    """Start *command* (which must listen on *port*) and wait until it is ready.

    Ready: ``/ping`` answers and *processes* processes have loaded the app.
    The app's mark directory is made here and passed in the environment.
    Raises :class:`RuntimeError` with the server's output if it exits or is
    not ready within *timeout* seconds; the process group is killed first.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    markdir = log_dir / f"marks-{port}"
    markdir.mkdir()
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            list(command),
            env={**env, "WSGISESSION_TEST_MARKDIR": str(markdir)},
            cwd=str(log_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    server = LiveServer(name, port, process, log_path, markdir, log)
    problem = _wait_ready(server, processes, time.monotonic() + timeout)
    if problem is not None:
        server.stop()
        raise RuntimeError(f"{name} {problem}: {' '.join(command)}\n{server.describe()}")
    return server


def start(kind: str, store_url: str, log_dir: Path, *, attempts: int = 3, **options: Any) -> LiveServer:
    """Start a server of *kind* (``gunicorn``, ``waitress``, ``wsgiref``) serving :mod:`tests.serverapp`.

    *options* go to the command builder (gunicorn: ``workers``, ``worker_class``,
    ``threads``), except ``env``: extra environment variables. A port taken
    between choosing it and binding it is retried on another, up to *attempts* times.
    """
    extra_env: dict[str, str] = options.pop("env", {})
    env = server_env(store_url, **extra_env)
    processes = options.get("workers", 1) if kind == "gunicorn" else 1
    error: RuntimeError | None = None
    for _ in range(attempts):
        port = free_port()
        try:
            return start_server(kind, COMMANDS[kind](port, **options), port, env, log_dir, processes=processes)
        except RuntimeError as exc:
            error = exc
            if "address already in use" not in str(exc).lower():
                raise
    assert error is not None
    raise error


@contextlib.contextmanager
def running(kind: str, store_url: str, log_dir: Path, **options: Any) -> Iterator[LiveServer]:
    """:func:`start` a server for the duration of a ``with`` block; always stopped afterwards."""
    server = start(kind, store_url, log_dir, **options)
    try:
        yield server
    finally:
        server.stop()


# -- the client ---------------------------------------------------------------------------


@dataclass
class SetCookie:
    """One parsed ``Set-Cookie`` header."""

    name: str
    value: str
    attributes: dict[str, str]
    flags: set[str]
    raw: str

    @classmethod
    def parse(cls, header: str) -> SetCookie:
        first, *rest = header.split(";")
        name, _, value = first.partition("=")
        attributes: dict[str, str] = {}
        flags: set[str] = set()
        for part in rest:
            key, eq, val = part.strip().partition("=")
            if eq:
                attributes[key.lower()] = val
            elif key:
                flags.add(key.lower())
        return cls(name.strip(), value.strip(), attributes, flags, header)

    @property
    def deletes(self) -> bool:
        """Whether this header removes the cookie from the browser."""
        return self.value == "" or self.attributes.get("max-age") == "0"

    @property
    def session_id(self) -> str:
        """The session ID part of a ``<id>.<signature>`` value."""
        return self.value.partition(".")[0]


@dataclass
class Response:
    """What a request got back."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def set_cookies(self, name: str = "session") -> list[SetCookie]:
        cookies = [SetCookie.parse(v) for v in self.header_values("Set-Cookie")]
        return [c for c in cookies if c.name == name]


class Client:
    """A browser with one cookie jar, over plain ``http.client`` (a new connection per request).

    A 5xx answer raises :class:`AssertionError` with the server's output: the
    test app never fails on purpose, so it is always a bug worth its traceback.
    """

    def __init__(self, server: LiveServer, cookie_name: str = "session") -> None:
        self.server = server
        self.cookie_name = cookie_name
        #: The session cookie's value (``<id>.<signature>``), or None.
        self.cookie: str | None = None
        #: Every session ID this client was ever given (for cleanup).
        self.seen_ids: list[str] = []

    def request(self, method: str, path: str, *, cookie: str | bool | None = True) -> Response:
        """Send a request; *cookie* True sends the jar's cookie, a str sends that value, None/False none.

        The jar takes the response's ``Set-Cookie`` only when the jar's cookie was sent.
        """
        value = self.cookie if cookie is True else (cookie or None)
        headers = {"Connection": "close"}
        if value:
            headers["Cookie"] = f"{self.cookie_name}={value}"
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
            raw = conn.getresponse()
            response = Response(raw.status, raw.getheaders(), raw.read())
        except OSError as exc:
            raise AssertionError(f"{method} {path} failed: {exc!r}\n{self.server.describe()}") from exc
        finally:
            conn.close()
        if response.status >= 500:
            # The test app never fails on purpose: show why the server did.
            raise AssertionError(f"{method} {path} answered {response.status}\n{self.server.describe()}")
        for set_cookie in response.set_cookies(self.cookie_name):
            if not set_cookie.deletes:
                self.seen_ids.append(set_cookie.session_id)
            if cookie is True:
                self.cookie = None if set_cookie.deletes else set_cookie.value
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)


# -- the wsgiref launcher --------------------------------------------------------------------


def _load_app(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute or "app")


def main(argv: Sequence[str] | None = None) -> None:
    """Serve ``MODULE:APP`` with ``wsgiref.simple_server`` on loopback until killed."""
    from wsgiref.simple_server import make_server

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("app", help="MODULE:ATTRIBUTE of the WSGI application")
    args = parser.parse_args(argv)
    app = _load_app(args.app)
    with make_server(HOST, args.port, app) as httpd:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        httpd.serve_forever()


if __name__ == "__main__":
    main()
