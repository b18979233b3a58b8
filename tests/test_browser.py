"""The reference app in a real browser: Chromium, driven by Playwright, against gunicorn.

Needs Debian's Chromium at /usr/bin/chromium and the playwright package (no
browser download: Playwright drives the system's Chromium). Without them the
test skips, or fails under WSGISESSION_REQUIRE_ALL=1.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .liveserver import HOST, ROOT, free_port
from .servers import require_module, unavailable

CHROMIUM = os.environ.get("WSGISESSION_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference app under gunicorn, 2 workers, on the SQLite store."""
    require_module("gunicorn", "the browser test serves the reference app with gunicorn")
    workdir = tmp_path_factory.mktemp("browser-app")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SESSION_DB": str(workdir / "sessions.sqlite3"),
        "SESSION_SECRET": "browser-test-secret-" + "s" * 32,
    }
    log = (workdir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "--bind", f"{HOST}:{port}", "examples.app:app"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start:\n" + (workdir / "gunicorn.log").read_text()[-4000:])
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            try:
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
            finally:
                conn.close()
        yield f"http://{HOST}:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_module("playwright", "the browser test drives Chromium with Playwright")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except Error as exc:
            unavailable(f"Chromium at {CHROMIUM} did not start: {exc}")
        yield b
        b.close()


def test_login_dashboard_logout_in_a_browser(app_url: str, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()

    # Anonymous: the dashboard is refused.
    response = page.goto(f"{app_url}/dashboard")
    assert response.status == 401
    assert "Please log in first" in page.content()

    # The login page sets the form's own cookie, never a session cookie.
    response = page.goto(f"{app_url}/login")
    assert response.status == 200
    names = {c["name"] for c in context.cookies()}
    assert "session" not in names, "no session before a login"
    assert "login_csrf" in names
    form_cookie = next(c for c in context.cookies() if c["name"] == "login_csrf")
    assert form_cookie["httpOnly"] is True and form_cookie["sameSite"] == "Lax"

    # Wrong password, then the right one, through the form.
    page.fill("#username", "admin")
    page.fill("#password", "wrong")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "Invalid username or password" in page.content()
    assert "session" not in {c["name"] for c in context.cookies()}, "a failed login stores no session"
    page.fill("#username", "admin")
    page.fill("#password", "123")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == f"{app_url}/dashboard"
    assert "Welcome, admin" in page.content()
    assert page.inner_text("#visits") == "1"
    assert page.inner_text("code") == "admin"
    assert "login_csrf" not in {c["name"] for c in context.cookies()}, "the form's cookie goes at login"

    # The cookie as the browser holds it.
    cookies = [c for c in context.cookies() if c["name"] == "session"]
    assert len(cookies) == 1
    cookie = cookies[0]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert "session=" not in page.evaluate("document.cookie"), "HttpOnly: invisible to scripts"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Reload: the counter kept in the session goes up.
    page.reload()
    assert page.inner_text("#visits") == "2"

    # Log out with the button.
    with page.expect_navigation():
        page.click("button:text-is('Log out')")
    assert page.url == f"{app_url}/login"
    assert "Logged out" in page.content()
    assert "session" not in {c["name"] for c in context.cookies()}, "logout leaves no session cookie"
    page.reload()
    assert "Logged out" not in page.content(), "the notice shows once"

    # The Back button does not bring the dashboard back from a cache.
    page.go_back()
    assert page.url == f"{app_url}/dashboard"
    assert "Welcome, admin" not in page.content()
    assert "Please log in first" in page.content()

    response = page.goto(f"{app_url}/dashboard")
    assert response.status == 401
    context.close()
