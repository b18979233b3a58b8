"""The Bottle, Pyramid and Flask example apps: the reference app's login flow in each.

A framework that is not installed skips its example; with
``WSGISESSION_REQUIRE_ALL=1`` (CI) a missing framework fails instead.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import webtest

from wsgisession import MemoryStore, SQLiteStore
from wsgisession.stores.base import Store

from .conftest import SECRET
from .servers import require_module

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ["bottle", "pyramid", "flask"]


def import_example(framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module; its module-level app (made at first import) gets a secret and a database in tmp_path."""
    require_module(framework)
    monkeypatch.setenv("SESSION_SECRET", SECRET)
    monkeypatch.setenv("SESSION_DB", str(tmp_path / "module-level.sqlite3"))
    return importlib.import_module(f"examples.{framework}_app")


@pytest.fixture(params=FRAMEWORKS)
def example(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Each framework's example module in turn."""
    return import_example(request.param, tmp_path, monkeypatch)


@pytest.fixture(params=["memory", "sqlite"])
def example_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "sessions.sqlite3")
    yield store
    store.close()


@pytest.fixture
def client(example: ModuleType, example_store: Store) -> webtest.TestApp:
    return webtest.TestApp(example.make_app(secret=SECRET, store=example_store))


def log_in(client: webtest.TestApp, password: str = "123", status: int = 303) -> webtest.TestResponse:
    form = client.get("/login").forms[0]
    form["username"] = "admin"
    form["password"] = password
    return form.submit(status=status)


def test_module_level_app_is_built_on_first_use(
    example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "module-level.sqlite3"
    monkeypatch.setattr(example, "DATABASE", str(database))
    monkeypatch.delitem(vars(example), "app", raising=False)
    assert callable(example.app)
    assert example.app is example.app
    client = webtest.TestApp(example.app)
    client.get("/dashboard", status=401)
    log_in(client)
    assert database.exists()
    with pytest.raises(AttributeError):
        _ = example.no_such_thing


def test_login_form_has_a_csrf_field(client: webtest.TestApp) -> None:
    page = client.get("/login")
    form = page.forms[0]
    assert form.method.upper() == "POST"
    assert form.action == "/login"
    assert set(form.fields) >= {"username", "password", "csrf_token"}
    assert len(form["csrf_token"].value) >= 32


def test_wrong_password_is_refused(client: webtest.TestApp) -> None:
    page = log_in(client, password="wrong", status=401)
    assert "Invalid username or password." in page.text
    assert page.forms[0].action == "/login"
    client.get("/dashboard", status=401)


def test_unknown_user_is_refused(client: webtest.TestApp) -> None:
    form = client.get("/login").forms[0]
    form["username"] = "mallory"
    form["password"] = "123"
    assert "Invalid username or password." in form.submit(status=401).text


def test_login_needs_the_csrf_token(client: webtest.TestApp) -> None:
    page = client.post("/login", {"username": "admin", "password": "123"}, status=403)
    assert "The form expired" in page.text
    client.get("/login")
    client.post("/login", {"username": "admin", "password": "123", "csrf_token": "forged"}, status=403)
    client.get("/dashboard", status=401)


def test_anonymous_dashboard_is_refused(client: webtest.TestApp) -> None:
    page = client.get("/dashboard", status=401)
    assert "Please log in first" in page.text


def test_login_shows_the_dashboard(client: webtest.TestApp) -> None:
    response = log_in(client)
    assert response.headers["Location"].endswith("/dashboard")
    page = response.follow()
    assert "Welcome, admin" in page.text
    assert "User ID: admin123" in page.text
    assert "Visits this session: 1" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "Cookie" in page.headers["Vary"]


def test_session_id_changes_at_login(client: webtest.TestApp) -> None:
    client.get("/login")  # the CSRF token starts a session
    before = client.cookies["session"]
    log_in(client)
    after = client.cookies["session"]
    assert before.split(".")[0] != after.split(".")[0]
    client.get("/dashboard", status=200)
    # The pre-login ID is dead, not merely replaced.
    client.reset()  # drop the cookie jar, so only the replayed cookie is sent
    client.set_cookie("session", before)
    client.get("/dashboard", status=401)


def test_visit_counter_increments(client: webtest.TestApp) -> None:
    log_in(client)
    for visits in (1, 2, 3):
        assert f"Visits this session: {visits}" in client.get("/dashboard").text


def test_logout_needs_the_csrf_token(client: webtest.TestApp) -> None:
    log_in(client)
    client.post("/logout", status=403)
    client.post("/logout", {"csrf_token": "forged"}, status=403)
    assert "Welcome, admin" in client.get("/dashboard").text


def test_csrf_token_of_another_session_is_refused(example: ModuleType, example_store: Store) -> None:
    app = example.make_app(secret=SECRET, store=example_store)
    mallory = webtest.TestApp(app)
    log_in(mallory)
    token = mallory.get("/dashboard").forms[0]["csrf_token"].value
    victim = webtest.TestApp(app)
    log_in(victim)
    victim.post("/logout", {"csrf_token": token}, status=403)
    assert "Welcome, admin" in victim.get("/dashboard").text


def test_logout_ends_the_session_and_flashes_once(client: webtest.TestApp) -> None:
    log_in(client)
    dashboard = client.get("/dashboard")
    logged_in_cookie = client.cookies["session"]
    response = dashboard.forms[0].submit(status=303)
    assert response.headers["Location"].endswith("/login")
    page = response.follow()
    assert page.text.count("Logged out") == 1
    assert "Logged out" not in client.get("/login").text
    client.get("/dashboard", status=401)
    # Replaying the cookie from before the logout does not bring the session back.
    client.reset()
    client.set_cookie("session", logged_in_cookie)
    client.get("/dashboard", status=401)


def test_markup_in_the_username_is_escaped(
    example: ModuleType, example_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(example, "check_password", lambda username, password: "<b>id</b>")
    client = webtest.TestApp(example.make_app(secret=SECRET, store=example_store))
    form = client.get("/login").forms[0]
    form["username"] = "<script>x</script>"
    form["password"] = "p"
    form.submit(status=303)
    page = client.get("/dashboard").text
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.server
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_running_the_example_as_a_script_serves_it(framework: str, tmp_path: Path) -> None:
    require_module(framework)
    port = _free_port()
    env = {**os.environ, "SESSION_SECRET": SECRET, "SESSION_DB": str(tmp_path / "sessions.sqlite3")}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / f"{framework}_app.py"), str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as response:
                    body = response.read().decode()
                    cookie = response.headers["Set-Cookie"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    output = server.communicate(timeout=10)[0]
                    pytest.fail(f"{framework}_app.py did not serve on port {port}:\n{output}")
                time.sleep(0.2)
        assert re.search(r'name="csrf_token" value="[\w-]{32,}"', body)
        assert cookie.startswith("session=") and "HttpOnly" in cookie
    finally:
        server.terminate()
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate(timeout=10)
