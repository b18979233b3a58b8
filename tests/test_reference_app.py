"""The reference app (examples/app.py) through WebTest: pages, the login form's token, the throttle."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest
import webtest

from examples import _common as common
from examples import app as reference
from wsgisession import SQLiteStore
from wsgisession.ids import store_key

from .conftest import SECRET


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "app.db")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(tmp_path: Path, clock: Clock) -> common.LoginThrottle:
    return common.LoginThrottle(tmp_path / "login-throttle.sqlite3", clock=clock)


@pytest.fixture
def app(store: SQLiteStore, throttle: common.LoginThrottle) -> object:
    return reference.make_app(secret=SECRET, store=store, throttle=throttle)


@pytest.fixture
def client(app: object) -> webtest.TestApp:
    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1"})


def session_id(client: webtest.TestApp) -> str:
    return str(client.cookies["session"]).split(".")[0]


def log_in(
    client: webtest.TestApp, password: str = "123", status: int | str = 303, username: str = "admin"
) -> webtest.TestResponse:
    form = client.get("/login").forms[0]
    form["username"] = username
    form["password"] = password
    return form.submit(status=status)


def csrf(res: webtest.TestResponse) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', res.text)
    assert match
    return match.group(1)


def set_cookies(res: webtest.TestResponse) -> dict[str, str]:
    """The response's Set-Cookie headers, by cookie name."""
    return {value.split("=", 1)[0]: value for name, value in res.headerlist if name == "Set-Cookie"}


def test_home_links(client: webtest.TestApp) -> None:
    res = client.get("/")
    assert 'href="/login"' in res.text and 'href="/dashboard"' in res.text
    assert "Set-Cookie" not in res.headers


def test_unknown_path_is_a_styled_404(client: webtest.TestApp) -> None:
    res = client.get("/nowhere", status=404)
    assert "<style>" in res.text and 'href="/"' in res.text


def test_wrong_password_is_401_with_the_form(client: webtest.TestApp) -> None:
    res = log_in(client, "wrong", status=401)
    assert "Invalid username or password" in res.text
    assert res.forms[0].action == "/login"


def test_unknown_user_is_401(client: webtest.TestApp) -> None:
    assert "Invalid username or password" in log_in(client, username="mallory", status=401).text


def test_demo_user_is_admin(client: webtest.TestApp, store: SQLiteStore) -> None:
    log_in(client)
    assert "<code>admin</code>" in client.get("/dashboard").text
    assert len(store.sessions_of("admin")) == 1, "`wsgisession list --user admin` finds the demo user's session"


# -- the login form: no session before a login ---------------------------------------------------


def test_the_login_page_stores_no_session(client: webtest.TestApp, store: SQLiteStore) -> None:
    for _ in range(30):
        res = client.get("/login")
        assert "session" not in set_cookies(res)
        assert res.headers["Cache-Control"] == "no-store"
    for password in ("wrong", "", "1234"):
        log_in(client, password, status=401)
    client.post("/login", {"username": "admin", "password": "x"}, status=403)
    client.post("/login", {"username": "admin", "password": "x", "csrf_token": "forged"}, status=403)
    assert "session" not in client.cookies
    assert store.count() == 0
    assert store.prune() == 0


def test_many_cookieless_visitors_store_nothing(app: object, store: SQLiteStore) -> None:
    statuses = []
    for n in range(50):
        visitor = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": f"198.51.100.{n}"})
        form = visitor.get("/login").forms[0]
        form["username"], form["password"] = "admin", "guess"
        statuses.append(form.submit(status="*").status_int)
    assert set(statuses) == {401, 429}, "wrong passwords, then a locked account"
    assert store.count() == 0


def test_the_form_cookie(client: webtest.TestApp) -> None:
    cookie = set_cookies(client.get("/login"))["login_csrf"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Max-Age=3600" in cookie
    assert "secure" not in cookie.lower()


def test_the_form_cookie_over_https_is_host_prefixed_and_secure(client: webtest.TestApp) -> None:
    https = {"wsgi.url_scheme": "https", "HTTP_HOST": "localhost:443"}
    page = client.get("/login", extra_environ=https)
    cookie = set_cookies(page)["__Host-login_csrf"]
    assert "secure" in cookie.lower() and "Path=/" in cookie and "Domain" not in cookie
    assert "login_csrf" not in set_cookies(page)
    nonce = cookie.split(";")[0].split("=", 1)[1]
    form = {"username": "admin", "password": "123", "csrf_token": csrf(page)}
    # The unprefixed cookie (one a subdomain or plain http could plant) is not read over https.
    client.cookiejar.clear()
    client.post("/login", form, headers={"Cookie": f"login_csrf={nonce}"}, extra_environ=https, status=403)
    res = client.post("/login", form, headers={"Cookie": f"__Host-login_csrf={nonce}"}, extra_environ=https)
    assert res.status_int == 303


def test_the_form_token_needs_its_cookie(app: object) -> None:
    alice = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1"})
    mallory = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.2"})
    token = csrf(mallory.get("/login"))
    alice.get("/login")  # alice has a cookie of her own, for another nonce
    res = alice.post("/login", {"username": "admin", "password": "123", "csrf_token": token}, status=403)
    assert "The form expired; please try again." in res.text
    # The refusal carries a fresh form that works.
    form = res.forms[0]
    form["username"], form["password"] = "admin", "123"
    form.submit(status=303)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), id="mac"),
        pytest.param(lambda t: ".".join([t.split(".")[0], str(int(t.split(".")[1]) + 1), t.split(".")[2]]), id="time"),
        pytest.param(lambda t: "A" * 43 + t[43:], id="nonce"),
        pytest.param(lambda t: t.rsplit(".", 1)[0], id="no-mac"),
        pytest.param(lambda t: t + ".x", id="extra-part"),
        pytest.param(lambda t: "é" * 43 + t[43:], id="non-ascii"),
    ],
)
def test_a_tampered_form_token_is_refused(client: webtest.TestApp, tamper: object) -> None:
    token = csrf(client.get("/login"))
    assert callable(tamper)
    res = client.post("/login", {"username": "admin", "password": "123", "csrf_token": tamper(token)}, status=403)
    assert "The form expired" in res.text


def test_the_form_token_expires(client: webtest.TestApp, clock: Clock) -> None:
    form = client.get("/login").forms[0]
    form["username"], form["password"] = "admin", "123"
    clock.now += 3601
    assert "The form expired; please try again." in form.submit(status=403).text
    log_in(client)  # a fresh form works


def test_login_without_csrf_token_is_refused(client: webtest.TestApp) -> None:
    client.get("/login")
    client.post("/login", {"username": "admin", "password": "123"}, status=403)
    client.get("/dashboard", status=401)


def test_login_replaces_the_form_cookie_with_the_session(client: webtest.TestApp) -> None:
    res = log_in(client)
    cookies = set_cookies(res)
    assert "Max-Age=0" in cookies["login_csrf"]
    assert cookies["session"].startswith("session=")
    assert "login_csrf" not in client.cookies


# -- logging in, out, and out of other devices --------------------------------------------------


def test_login_dashboard_visits_logout(client: webtest.TestApp, store: SQLiteStore) -> None:
    res = log_in(client)
    assert res.headers["Location"].endswith("/dashboard")
    dash = client.get("/dashboard")
    assert "Welcome, admin" in dash.text
    assert "<code>admin</code>" in dash.text
    assert '<strong id="visits">1</strong>' in dash.text
    assert dash.headers["Cache-Control"] == "no-store"
    dash = client.get("/dashboard")
    assert '<strong id="visits">2</strong>' in dash.text
    old_cookie = f"session={client.cookies['session']}"

    res = dash.forms[0].submit(status=303)
    assert res.headers["Location"].endswith("/login")
    assert store.count() == 0, "logout leaves nothing in the store, the flash included"
    login_page = res.follow()
    assert login_page.text.count("Logged out") == 1
    assert "Logged out" not in client.get("/login").text, "a flash shows once"
    assert store.count() == 0
    client.get("/dashboard", status=401)
    client.cookiejar.clear()
    client.get("/dashboard", headers={"Cookie": old_cookie}, status=401)


def test_the_logout_notice_cookie(client: webtest.TestApp) -> None:
    log_in(client)
    res = client.get("/dashboard").forms[0].submit(status=303)
    notice = set_cookies(res)["notice"]
    assert "Max-Age=60" in notice and "HttpOnly" in notice and "SameSite=Lax" in notice
    assert "Max-Age=0" in set_cookies(res.follow())["notice"]
    # The cookie names a message; it never carries text to show.
    client.cookiejar.clear()
    page = client.get("/login", headers={"Cookie": "notice=<script>alert(1)</script>"})
    assert "<script>" not in page.text and "alert" not in page.text


def test_a_second_login_changes_the_session_id(client: webtest.TestApp, store: SQLiteStore) -> None:
    log_in(client)
    before = session_id(client)
    log_in(client)
    after = session_id(client)
    assert after != before, "the session ID changes at login"
    assert store.load(store_key(before)) is None
    assert store.load(store_key(after)) is not None


def test_logout_without_csrf_is_refused(client: webtest.TestApp) -> None:
    log_in(client)
    client.post("/logout", status=403)
    client.post("/logout", {"csrf_token": "forged"}, status=403)
    assert "Welcome" in client.get("/dashboard").text


def test_logout_accepts_the_token_in_a_header(client: webtest.TestApp) -> None:
    log_in(client)
    token = csrf(client.get("/dashboard"))
    client.post("/logout", headers={"X-CSRF-Token": token}, status=303)
    client.get("/dashboard", status=401)


def test_dashboard_lists_other_devices_and_logs_them_out(app: object) -> None:
    phone = webtest.TestApp(app, extra_environ={"HTTP_USER_AGENT": "PhoneBrowser/1.0", "REMOTE_ADDR": "192.0.2.1"})
    laptop = webtest.TestApp(app, extra_environ={"HTTP_USER_AGENT": "LaptopBrowser/2.0", "REMOTE_ADDR": "192.0.2.2"})
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


# -- the throttle ----------------------------------------------------------------------------------


def guess(client: webtest.TestApp, password: str, username: str = "admin") -> webtest.TestResponse:
    return log_in(client, password, status="*", username=username)


def test_forty_wrong_guesses_are_throttled(client: webtest.TestApp, app: object, clock: Clock) -> None:
    statuses = [guess(client, f"guess-{n}").status_int for n in range(40)]
    assert statuses == [401] * 5 + [429] * 35
    locked = guess(client, "123")
    assert locked.status_int == 429, "even the right password is refused while the account is locked"
    assert "Too many failed logins; try again in 15 minutes." in locked.text
    assert 890 <= int(locked.headers["Retry-After"]) <= 900
    assert locked.forms[0].action == "/login"

    # Another account, from another address, is unaffected.
    common.add_user("bob", "bob's password")
    try:
        other = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "203.0.113.9"})
        assert guess(other, "bob's password", username="bob").status_int == 303
    finally:
        del common.USERS["bob"]

    clock.now += 10 * 60
    assert "try again in 5 minutes" in guess(client, "123").text
    clock.now += 5 * 60 + 1
    assert guess(client, "123").status_int == 303, "the lock ends with the window"


def test_a_locked_account_computes_no_hash(client: webtest.TestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(5):
        guess(client, f"guess-{n}")
    calls: list[str] = []
    real = common._hash_password
    monkeypatch.setattr(common, "_hash_password", lambda password, salt: calls.append(password) or real(password, salt))
    assert guess(client, "123").status_int == 429
    assert calls == []


def test_an_address_is_throttled_across_accounts(app: object, clock: Clock) -> None:
    attacker = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "198.51.100.7"})
    statuses = [guess(attacker, "123", username=f"user{n}").status_int for n in range(22)]
    assert statuses == [401] * 20 + [429] * 2
    assert guess(attacker, "123").status_int == 429, "the address is locked, whatever the account"
    # X-Forwarded-For is not trusted: it does not change the address.
    spoofed = webtest.TestApp(
        app, extra_environ={"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "203.0.113.50"}
    )
    assert guess(spoofed, "123").status_int == 429
    elsewhere = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "198.51.100.8"})
    assert guess(elsewhere, "123").status_int == 303
    clock.now += 901
    assert guess(attacker, "123").status_int == 303


def test_a_successful_login_clears_the_accounts_count(client: webtest.TestApp) -> None:
    for n in range(4):
        guess(client, f"guess-{n}")
    assert guess(client, "123").status_int == 303
    for n in range(4):
        assert guess(client, f"again-{n}").status_int == 401, "the count started again at the login"


def test_refusals_before_the_password_do_not_count(client: webtest.TestApp) -> None:
    for _ in range(10):
        client.post("/login", {"username": "admin", "password": "x", "csrf_token": "forged"}, status=403)
    log_in(client)


def test_the_throttle_is_shared_by_two_apps_on_one_file(store: SQLiteStore, tmp_path: Path, clock: Clock) -> None:
    # Two worker processes: two apps, two throttles, one file.
    first, second = (
        webtest.TestApp(
            reference.make_app(
                secret=SECRET, store=store, throttle=common.LoginThrottle(tmp_path / "shared.sqlite3", clock=clock)
            ),
            extra_environ={"REMOTE_ADDR": "192.0.2.1"},
        )
        for _ in range(2)
    )
    statuses = [guess(worker, f"guess-{n}").status_int for n in range(3) for worker in (first, second)]
    assert statuses == [401] * 5 + [429]
    assert guess(first, "123").status_int == 429
    with sqlite3.connect(tmp_path / "shared.sqlite3") as db:
        rows = dict(db.execute("SELECT key, failures FROM login_failures"))
    assert rows == {"account:admin": 5, "address:192.0.2.1": 5}


def test_the_default_throttle_lives_beside_the_database(tmp_path: Path) -> None:
    database = str(tmp_path / "sessions.sqlite3")
    gate = common.login_gate(SECRET, None, database)
    assert gate.throttle.path == tmp_path / "login-throttle.sqlite3"
    gate.throttle.failed("admin", "192.0.2.1")
    assert (tmp_path / "login-throttle.sqlite3").exists()


# -- users and the secret ----------------------------------------------------------------------


def test_passwords_are_hashed() -> None:
    _, salt, digest = common.USERS["admin"]
    assert b"123" not in digest
    assert len(salt) == 16
    assert common.check_password("admin", "123") == "admin"
    assert common.check_password("admin", "1234") is None


def test_add_user() -> None:
    common.add_user("carol", "correct horse", "c-1")
    try:
        assert common.check_password("carol", "correct horse") == "c-1"
    finally:
        del common.USERS["carol"]


def test_secret_file_is_made_once_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSION_SECRET", raising=False)
    db = str(tmp_path / "x.db")
    with pytest.warns(UserWarning, match="SESSION_SECRET is not set"):
        first = common.load_secret(db)
    assert common.load_secret(db) == first
    assert len(first) == 64
    assert (tmp_path / "session-secret.txt").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("SESSION_SECRET", "from-env-" + "e" * 32)
    assert common.load_secret(db) == "from-env-" + "e" * 32
