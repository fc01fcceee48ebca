"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright): log in, submit
the bundled example, accept an offer and watch the session reach COMPLETED without reloading; and
/docs, whose Swagger UI renders from the broker's own files. Both under their Content-Security-Policy,
which must block nothing they need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debian import debian_program
from tests.e2e.helpers import ROOT
from tests.e2e.http_support import ALICE, HttpBroker, start_http_broker

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "test-output" / "dashboard.png"
# Chromium reports each resource or inline code the page's policy blocked: none may be.
WATCH_CSP = """
window.__blocked = [];
document.addEventListener("securitypolicyviolation",
    (event) => window.__blocked.push(event.violatedDirective + " " + event.blockedURI));
"""


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing (we run as root); never `playwright install`."""
    if not CHROMIUM.exists():
        debian_program("chromium", "chromium")
    return CHROMIUM


@pytest.fixture
def http(tmp_path: Path) -> Iterator[HttpBroker]:
    running = start_http_broker(tmp_path / "broker")
    try:
        yield running
    finally:
        running.broker.stop()


def test_dashboard_submit_accept_and_watch_to_completed(chromium: Path, http: HttpBroker) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.add_init_script(WATCH_CSP)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(http.base_url + "/")
            expect = sync_api.expect

            # A wrong password is refused in the page, without a browser dialog.
            page.fill("#username", ALICE[0])
            page.fill("#password", "wrong")
            page.click("#login-button")
            expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")

            page.fill("#password", ALICE[1])
            page.click("#login-button")
            expect(page.locator("#whoami")).to_contain_text("alice")
            expect(page.locator("#live")).to_have_text("live", timeout=10_000)

            page.click("#load-example")
            expect(page.locator("#request-text")).to_have_value(
                __import__("re").compile("jupyter-notebook"), timeout=10_000
            )
            page.click("#submit")
            expect(page.locator("#offerset-result")).to_have_text("YES", timeout=30_000)
            accept = page.locator("#offers button.accept").first
            session_id = accept.get_attribute("data-session")
            assert session_id
            accept.click()

            # The rest comes over server-sent events: no reload from here on.
            expect(page.locator("#detail-id")).to_have_text(session_id, timeout=15_000)
            expect(page.locator("#detail-phase")).to_have_text("COMPLETED", timeout=120_000)
            expect(page.locator(f'#sessions tr[data-session="{session_id}"] .phase')).to_have_text(
                "COMPLETED"
            )
            expect(page.locator("#timeline li").last).to_contain_text("COMPLETED", timeout=10_000)
            expect(page.locator("#connectors")).to_contain_text("notebook")
            expect(page.locator("#offers tbody tr").nth(1).locator(".phase")).to_have_text("REJECTED")
            assert page.locator("#trace-link").count() in (0, 1)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert not errors, errors
            assert page.evaluate("window.__blocked") == []
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


def test_docs_render_from_the_brokers_own_files(chromium: Path, http: HttpBroker) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.add_init_script(WATCH_CSP)
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(http.base_url + "/docs")
            expect = sync_api.expect
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "Execution Broker", timeout=15_000
            )
            expect(page.locator(".opblock-summary-path", has_text="/requests").first).to_be_visible()
            assert not errors, errors
            assert page.evaluate("window.__blocked") == []
            foreign = [url for url in requested if not url.startswith(http.base_url + "/")]
            assert foreign == [], foreign
            assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in requested)
        finally:
            browser.close()
