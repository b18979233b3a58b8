"""The reference app (examples/app.py) through WebTest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import webtest

from examples import app as reference
from wsgisession import SQLiteStore
from wsgisession.ids import store_key

from .conftest import SECRET


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "app.db")


@pytest.fixture
def client(store: SQLiteStore) -> webtest.TestApp:
    return webtest.TestApp(reference.make_app(secret=SECRET, store=store))


def session_id(client: webtest.TestApp) -> str:
    return str(client.cookies["session"]).split(".")[0]


def log_in(client: webtest.TestApp, password: str = "123", status: int = 303) -> webtest.TestResponse:
    form = client.get("/login").forms[0]
    form["username"] = "admin"
    form["password"] = password
    return form.submit(status=status)


def csrf(res: webtest.TestResponse) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', res.text)
    assert match
    return match.group(1)


def test_home_links(client: webtest.TestApp) -> None:
    res = client.get("/")
    assert 'href="/login"' in res.text
    assert "Set-Cookie" not in res.headers


def test_wrong_password_is_401_with_the_form(client: webtest.TestApp) -> None:
    res = log_in(client, "wrong", status=401)
    assert "Invalid username or password" in res.text
    assert res.forms[0].action == "/login"


def test_unknown_user_is_401(client: webtest.TestApp) -> None:
    form = client.get("/login").forms[0]
    form["username"], form["password"] = "mallory", "123"
    form.submit(status=401)


def test_login_without_csrf_token_is_refused(client: webtest.TestApp) -> None:
    client.get("/login")
    client.post("/login", {"username": "admin", "password": "123"}, status=403)


def test_anonymous_dashboard_is_refused(client: webtest.TestApp) -> None:
    res = client.get("/dashboard", status=401)
    assert "Please log in first" in res.text
    assert 'href="/login"' in res.text


def test_login_dashboard_visits_logout(client: webtest.TestApp, store: SQLiteStore) -> None:
    client.get("/login")
    before = session_id(client)
    res = log_in(client)
    assert res.headers["Location"].endswith("/dashboard")
    after = session_id(client)
    assert after != before, "the session ID changes at login"
    assert store.load(store_key(before)) is None
    dash = client.get("/dashboard")
    assert "Welcome, admin" in dash.text
    assert "admin123" in dash.text
    assert '<strong id="visits">1</strong>' in dash.text
    assert dash.headers["Cache-Control"] == "no-store"
    dash = client.get("/dashboard")
    assert '<strong id="visits">2</strong>' in dash.text
    old_cookie = f"session={client.cookies['session']}"

    res = dash.forms[0].submit(status=303)
    assert res.headers["Location"].endswith("/login")
    login_page = res.follow()
    assert "Logged out" in login_page.text
    assert "Logged out" not in client.get("/login").text, "a flash shows once"
    client.get("/dashboard", status=401)
    client.cookiejar.clear()
    client.get("/dashboard", headers={"Cookie": old_cookie}, status=401)


def test_logout_without_csrf_is_refused(client: webtest.TestApp) -> None:
    log_in(client)
    client.post("/logout", status=403)
    client.post("/logout", {"csrf_token": "forged"}, status=403)
    assert "Welcome" in client.get("/dashboard").text


def test_passwords_are_hashed() -> None:
    _, salt, digest = reference.USERS["admin"]
    assert b"123" not in digest
    assert len(salt) == 16
    assert reference.check_password("admin", "123") == "admin123"
    assert reference.check_password("admin", "1234") is None


def test_add_user() -> None:
    reference.add_user("carol", "correct horse", "c-1")
    try:
        assert reference.check_password("carol", "correct horse") == "c-1"
    finally:
        del reference.USERS["carol"]


def test_secret_file_is_made_once_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSION_SECRET", raising=False)
    db = str(tmp_path / "x.db")
    with pytest.warns(UserWarning, match="SESSION_SECRET is not set"):
        first = reference.load_secret(db)
    assert reference.load_secret(db) == first
    assert len(first) == 64
    assert (tmp_path / "session-secret.txt").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("SESSION_SECRET", "from-env-" + "e" * 32)
    assert reference.load_secret(db) == "from-env-" + "e" * 32


def test_dashboard_lists_other_devices_and_logs_them_out(store: SQLiteStore) -> None:
    mw = reference.make_app(secret=SECRET, store=store)
    phone = webtest.TestApp(mw, extra_environ={"HTTP_USER_AGENT": "PhoneBrowser/1.0"})
    laptop = webtest.TestApp(mw, extra_environ={"HTTP_USER_AGENT": "LaptopBrowser/2.0"})
    log_in(phone)
    assert "No other active sessions" in phone.get("/dashboard").text
    log_in(laptop)
    dash = laptop.get("/dashboard")
    assert "PhoneBrowser/1.0" in dash.text
    assert "LaptopBrowser/2.0" not in dash.text, "the current session is not among the others"
    laptop.post("/logout-others", status=403)
    res = dash.forms[1].submit(status=303)
    assert "Logged out 1 other session" in res.follow().text
    phone.get("/dashboard", status=401)
    assert "Welcome" in laptop.get("/dashboard").text
