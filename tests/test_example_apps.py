"""The four versions of the reference app (WebOb, Bottle, Pyramid, Flask): the same pages and flow in each.

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

from examples import _common as common
from wsgisession import MemoryStore, SQLiteStore
from wsgisession.stores.base import Store

from .conftest import SECRET
from .servers import require_module

ROOT = Path(__file__).resolve().parent.parent
# "webob": examples/app.py, the reference app.
FRAMEWORKS = ["webob", "bottle", "pyramid", "flask"]


def script(framework: str) -> str:
    return "app" if framework == "webob" else f"{framework}_app"


def import_example(framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module; its module-level app (made at first use) gets a secret and a database in tmp_path."""
    require_module(framework)
    monkeypatch.setenv("SESSION_SECRET", SECRET)
    monkeypatch.setenv("SESSION_DB", str(tmp_path / "module-level.sqlite3"))
    return importlib.import_module(f"examples.{script(framework)}")


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
def throttle(tmp_path: Path) -> common.LoginThrottle:
    return common.LoginThrottle(tmp_path / "login-throttle.sqlite3")


@pytest.fixture
def app(example: ModuleType, example_store: Store, throttle: common.LoginThrottle) -> object:
    return example.make_app(secret=SECRET, store=example_store, throttle=throttle)


@pytest.fixture
def client(app: object) -> webtest.TestApp:
    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1"})


def log_in(
    client: webtest.TestApp, password: str = "123", status: int | str = 303, username: str = "admin"
) -> webtest.TestResponse:
    form = client.get("/login").forms[0]
    form["username"] = username
    form["password"] = password
    return form.submit(status=status)


def count(store: Store) -> int:
    assert isinstance(store, MemoryStore | SQLiteStore)
    return store.count()


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
    log_in(client, "wrong", status=401)
    log_in(client)
    assert database.exists()
    assert (tmp_path / "login-throttle.sqlite3").exists(), "the throttle's file is beside the database"
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
    assert "The form expired; please try again." in page.text
    client.get("/login")
    client.post("/login", {"username": "admin", "password": "123", "csrf_token": "forged"}, status=403)
    client.get("/dashboard", status=401)


def test_undecodable_form_fields_are_refused_not_an_error(client: webtest.TestApp) -> None:
    client.get("/login")
    body = "csrf_token=%ff%fe.1.%ff&username=%ff&password=%ed%a0%80"
    page = client.post("/login", body, content_type="application/x-www-form-urlencoded", status=403)
    assert "The form expired" in page.text
    token = page.forms[0]["csrf_token"].value
    body = f"csrf_token={token}&username=%ff%ed%a0%80&password=%ed%a0%80"
    page = client.post("/login", body, content_type="application/x-www-form-urlencoded", status=401)
    assert "Invalid username or password." in page.text


def test_the_login_form_token_is_bound_to_its_cookie(app: object) -> None:
    mallory = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.66"})
    token = mallory.get("/login").forms[0]["csrf_token"].value
    victim = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1"})
    victim.post("/login", {"username": "admin", "password": "123", "csrf_token": token}, status=403)
    victim.get("/login")
    victim.post("/login", {"username": "admin", "password": "123", "csrf_token": token}, status=403)
    victim.get("/dashboard", status=401)


def test_no_session_is_stored_before_a_login(client: webtest.TestApp, example_store: Store) -> None:
    for _ in range(20):
        page = client.get("/login")
        assert not any(v.startswith("session=") for k, v in page.headerlist if k == "Set-Cookie")
    for password in ("wrong", "also wrong"):
        log_in(client, password, status=401)
    client.post("/login", {"username": "admin", "password": "123"}, status=403)
    client.get("/")
    client.get("/dashboard", status=401)
    assert "session" not in client.cookies
    assert count(example_store) == 0
    log_in(client)
    assert count(example_store) == 1


def test_failed_logins_are_throttled(app: object, client: webtest.TestApp) -> None:
    statuses = [log_in(client, f"guess-{n}", status="*").status_int for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    locked = log_in(client, status=429)
    assert "Too many failed logins; try again in 15 minutes." in locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    elsewhere = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "203.0.113.9"})
    log_in(elsewhere, username="nobody", status=401)  # another account, from another address: not locked


def test_anonymous_dashboard_is_refused(client: webtest.TestApp) -> None:
    page = client.get("/dashboard", status=401)
    assert "Please log in first" in page.text


def test_home_page_links_and_sets_no_cookie(client: webtest.TestApp) -> None:
    page = client.get("/")
    assert 'href="/login"' in page.text and 'href="/dashboard"' in page.text
    assert "<style>" in page.text, "the reference app's styled page"
    assert "Set-Cookie" not in page.headers


def test_unknown_path_is_a_styled_404(client: webtest.TestApp) -> None:
    page = client.get("/no/such/page", status=404)
    assert "<style>" in page.text and "Not found" in page.text


def test_login_shows_the_dashboard(client: webtest.TestApp) -> None:
    response = log_in(client)
    assert response.headers["Location"].endswith("/dashboard")
    page = response.follow()
    assert "Welcome, admin" in page.text
    assert "User ID: <code>admin</code>" in page.text
    assert '<strong id="visits">1</strong>' in page.text
    assert "<style>" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "Cookie" in page.headers["Vary"]


def test_session_id_changes_at_login(client: webtest.TestApp) -> None:
    log_in(client)
    before = client.cookies["session"]
    log_in(client)  # a second login, over the first session
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
        assert f'<strong id="visits">{visits}</strong>' in client.get("/dashboard").text


def test_logout_needs_the_csrf_token(client: webtest.TestApp) -> None:
    log_in(client)
    client.post("/logout", status=403)
    client.post("/logout", {"csrf_token": "forged"}, status=403)
    assert "Welcome, admin" in client.get("/dashboard").text


def test_csrf_token_of_another_session_is_refused(app: object) -> None:
    mallory = webtest.TestApp(app)
    log_in(mallory)
    token = mallory.get("/dashboard").forms[0]["csrf_token"].value
    victim = webtest.TestApp(app)
    log_in(victim)
    victim.post("/logout", {"csrf_token": token}, status=403)
    assert "Welcome, admin" in victim.get("/dashboard").text


def test_logout_ends_the_session_and_flashes_once(client: webtest.TestApp, example_store: Store) -> None:
    log_in(client)
    dashboard = client.get("/dashboard")
    logged_in_cookie = client.cookies["session"]
    response = dashboard.forms[0].submit(status=303)
    assert response.headers["Location"].endswith("/login")
    assert count(example_store) == 0, "the flash after logout stores no session"
    page = response.follow()
    assert page.text.count("Logged out") == 1
    assert count(example_store) == 0
    assert "Logged out" not in client.get("/login").text
    client.get("/dashboard", status=401)
    # Replaying the cookie from before the logout does not bring the session back.
    client.reset()
    client.set_cookie("session", logged_in_cookie)
    client.get("/dashboard", status=401)


def test_other_devices_are_listed_and_logged_out(app: object) -> None:
    phone = webtest.TestApp(app, extra_environ={"HTTP_USER_AGENT": "PhoneBrowser/1.0"})
    laptop = webtest.TestApp(app, extra_environ={"HTTP_USER_AGENT": "LaptopBrowser/2.0"})
    log_in(phone)
    assert "No other active sessions" in phone.get("/dashboard").text
    log_in(laptop)
    dashboard = laptop.get("/dashboard")
    assert "PhoneBrowser/1.0" in dashboard.text and "LaptopBrowser/2.0" not in dashboard.text
    laptop.post("/logout-others", status=403)
    laptop.post("/logout-others", {"csrf_token": "forged"}, status=403)
    page = dashboard.forms[1].submit(status=303).follow()
    assert page.text.count("Logged out 1 other session") == 1
    assert "No other active sessions" in page.text
    assert "Logged out 1 other session" not in laptop.get("/dashboard").text, "a flash shows once"
    phone.get("/dashboard", status=401)


def test_markup_in_the_username_is_escaped(client: webtest.TestApp) -> None:
    common.add_user("<script>x</script>", "p", "<b>id</b>")
    try:
        log_in(client, "p", username="<script>x</script>")
    finally:
        del common.USERS["<script>x</script>"]
    page = client.get("/dashboard").text
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;id&lt;/b&gt;" in page


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
        [sys.executable, str(ROOT / "examples" / f"{script(framework)}.py"), str(port)],
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
                    pytest.fail(f"{script(framework)}.py did not serve on port {port}:\n{output}")
                time.sleep(0.2)
        assert re.search(r'name="csrf_token" value="[\w.-]{32,}"', body)
        assert cookie.startswith("login_csrf=") and "HttpOnly" in cookie, "the form's cookie, not a session"
    finally:
        server.terminate()
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate(timeout=10)
