"""Real-browser journeys: Debian's Chromium driven by Playwright against pytest-django's live server.

- The browser is the system Chromium (/usr/bin/chromium): Playwright cannot download its own here.
  Missing Chromium skips these tests, or fails them when CAREID_REQUIRE_SERVICES=1 (CI).
- The host is `localhost`, not 127.0.0.1: Chromium treats http://localhost as a secure context, so
  the production cookie settings (Secure, `__Host-` names) work unchanged over plain http.
- E-mailed links point at the live server (CAREID_BASE_URL), and the e-mail goes through the real
  SMTP server of tests/conftest.py.
- axe-core runs on every page; the site's strict Content-Security-Policy would block its injected
  script, so contexts are opened with bypass_csp=True (the policy itself is not changed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture
def page(page):
    page.set_default_timeout(15_000)
    page.set_default_navigation_timeout(15_000)
    return page


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
