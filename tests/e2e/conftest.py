"""Real-browser journeys: Debian's Chromium driven by Playwright against pytest-django's live server.

- The browser is the system Chromium (/usr/bin/chromium): Playwright cannot download its own here.
  Missing Chromium skips these tests, or fails them when CAREID_REQUIRE_SERVICES=1 (CI).
- The host is `localhost`, not 127.0.0.1: Chromium treats http://localhost as a secure context, so
  the production cookie settings (Secure, `__Host-` names) work unchanged over plain http.
- E-mailed links point at the live server (CAREID_BASE_URL), and the e-mail goes through the real
  SMTP server of tests/conftest.py.
- axe-core runs on every page; the site's strict Content-Security-Policy would block its injected
  script, so contexts are opened with bypass_csp=True (the policy itself is not changed). Tests of
  pages under the policy use `enforcing_page`, with a `BrowserConsole` that runs axe (injected with
  page.evaluate, through the DevTools protocol) and sets aside the reports axe itself causes.
- The helpers a journey shares: `heading()`, and signing in with the Authenticator app.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from ..conftest import require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """Every test under tests/e2e is an e2e test (`-m "not e2e"` leaves the browser out)."""
    for item in items:
        if E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


def localhost(url: str) -> str:
    return url.replace("://127.0.0.1", "://localhost")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    require(os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK), f"Chromium ({CHROMIUM})")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def base_url(live_server) -> str:
    """pytest-base-url's fixture, pointed at the live server (page.goto("/login/") works)."""
    return localhost(live_server.url)


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args, base_url):
    return {**browser_context_args, "base_url": base_url, "bypass_csp": True, "locale": "en-GB"}


@pytest.fixture(autouse=True)
def live_site(settings, base_url, fast_hashing):
    """The live server answers to `localhost` and e-mailed links point at it.

    Argon2 at full cost is the point in production and only slows the journey down.
    """
    if "localhost" not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    settings.CAREID_BASE_URL = base_url
    return base_url


def _timeouts(page: Page) -> Page:
    page.set_default_timeout(15_000)
    page.set_default_navigation_timeout(15_000)
    return page


@pytest.fixture
def page(page):
    return _timeouts(page)


@pytest.fixture
def enforcing_page(browser: Browser, browser_context_args) -> Iterator[Page]:
    """A page in a context with the site's Content-Security-Policy in force (the shared contexts bypass it
    for axe)."""
    context = browser.new_context(**{**browser_context_args, "bypass_csp": False})
    yield _timeouts(context.new_page())
    context.close()


# --- what a person sees, and signing in ------------------------------------------------------------


def heading(page: Page, text: str):
    return expect(page.get_by_role("heading", level=1)).to_have_text(text)


def choose_the_app(page: Page) -> None:
    """On "CIS2 Authentication", where /login/ and relying services send a person: the Authenticator app."""
    heading(page, "CIS2 Authentication")
    page.get_by_role("radio", name="Authenticator app").check()
    page.get_by_role("button", name="Continue").click()


def sign_in_with_the_app(page: Page, person, *, password: str | None = None, code: str | None = None) -> None:
    """On the Authenticator app's sign-in page: e-mail and password, then the app's code (by default one
    the replay guard takes). The caller checks where it leads."""
    heading(page, "Sign in with the Authenticator app")
    page.get_by_label("Email address").fill(person.user.email)
    page.get_by_label("Password", exact=True).fill(password or person.password)
    page.get_by_role("button", name="Continue").click()
    heading(page, "Check your authenticator app")
    page.get_by_label("Enter verification code").fill(code or person.fresh_code())
    page.get_by_role("button", name="Submit").click()


def sign_in(page: Page, person) -> None:
    """Straight to the Authenticator app's sign-in page, and home."""
    page.goto("/login/authenticator-app/")
    sign_in_with_the_app(page, person)
    heading(page, "Care Identity Management")


# --- axe, and what the browser's console says --------------------------------------------------------


class A11y:
    """axe-core on the page as it is now; the test fails with a readable list of violations."""

    def __init__(self):
        from axe_playwright_python.sync_playwright import Axe

        self.axe = Axe()
        self.checked: list[str] = []

    def check(self, page, name: str = "") -> None:
        label = name or page.url
        results = self.axe.run(page)
        self.checked.append(label)
        if results.violations_count:
            report = "\n".join(
                f"- {v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]\n"
                + "\n".join(f"    at {', '.join(map(str, node['target']))}: {node['html'][:300]}"
                            f"\n       {node.get('failureSummary', '').strip().replace(chr(10), chr(10) + '       ')}"
                            for node in v["nodes"])
                for v in results.response["violations"]
            )
            pytest.fail(f"axe found {results.violations_count} violation(s) on {label} ({page.url}):\n{report}",
                        pytrace=False)


@pytest.fixture
def a11y() -> A11y:
    return A11y()


@dataclass
class BrowserConsole:
    """CSP reports and uncaught script errors in a page. Those on the pages `counts` accepts (by address)
    are `problems`, the test's to fail on; those while axe runs are set aside: axe's CSSOM preload adds
    <style> elements for @import-ed sheets, which the policy refuses."""

    page: Page
    counts: Callable[[str], bool] = lambda url: True
    axe_running: bool = False
    problems: list[str] = field(default_factory=list)
    during_axe: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Besides Chromium's own console line, each violation as the page's event reports it.
        self.page.add_init_script("document.addEventListener('securitypolicyviolation', e => console.error("
                                  "'Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))")
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self._file(f"uncaught error: {error}", self.page.url))

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self._file(f"{message.type}: {message.text}", message.location.get("url") or self.page.url)

    def _file(self, text: str, url: str) -> None:
        if self.axe_running:
            self.during_axe.append(text)
        elif self.counts(url):
            self.problems.append(f"{text} (on {url})")
        else:
            self.elsewhere.append(text)

    def check(self, a11y: A11y, name: str) -> None:
        """axe on the page as it is now, its own reports set aside."""
        self.axe_running = True
        try:
            a11y.check(self.page, name)
        finally:
            self.axe_running = False
