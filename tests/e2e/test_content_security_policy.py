"""The Content-Security-Policy as a real Chromium applies it, configured through the environment.

careid runs here as in production: gunicorn in its own process, started with CAREID_CSP_REPORT_URI
pointing at a collector on loopback and a stricter CAREID_CSP_REPORT_ONLY policy to try out. The
browser must block what the enforced policy forbids and report it, and only report (not block)
what the report-only policy alone forbids. The context keeps the policy in force (no bypass_csp).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ..conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]
NHS_BLUE = "rgb(0, 94, 184)"  # the NHS.UK header's colour, from the stylesheet


class ReportCollector:
    """Violation reports as browsers POST them to a report-uri (application/csp-report)."""

    def __init__(self) -> None:
        self.reports: list[dict] = []
        self.arrived = threading.Condition()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                report = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["csp-report"]
                with collector.arrived:
                    collector.reports.append(report)
                    collector.arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/csp-report"

    def wait_for(self, matches: Callable[[dict], bool], timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                if found := [report for report in self.reports if matches(report)]:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"No such report in {timeout}s; received: {self.reports}")
                self.arrived.wait(remaining)


@pytest.fixture
def collector() -> Iterator[ReportCollector]:
    collector = ReportCollector()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    yield collector
    collector.server.shutdown()
    collector.server.server_close()


@pytest.fixture
def careid(collector: ReportCollector, tmp_path: Path) -> Iterator[str]:
    """careid under gunicorn with the production settings, its CSP configured only through the environment."""
    port = _free_port()
    env = {
        **os.environ,
        "CAREID_BIND": f"127.0.0.1:{port}",
        "CAREID_WORKERS": "1",
        "CAREID_CSP_REPORT_URI": collector.url,
        "CAREID_CSP_REPORT_ONLY": "default-src 'self'; style-src 'none'",
    }
    # A file, not a pipe: nobody reads a pipe while gunicorn runs, and a full one would block its logging.
    log = tmp_path / "gunicorn.log"
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "careid.wsgi"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    base_url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"gunicorn exited: {log.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail("gunicorn did not answer within 30 s")
                time.sleep(0.2)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def enforcing_page(careid: str, enforcing_page: Page) -> Page:
    """tests/e2e/conftest.py's, closed before careid stops (set up after it)."""
    return enforcing_page


def test_the_enforced_policy_blocks_and_reports_and_the_report_only_policy_only_reports(
    enforcing_page: Page, careid: str, collector: ReportCollector
):
    page = enforcing_page
    page.goto(f"{careid}/login/")
    expect(page.get_by_role("heading", level=1)).to_have_text("CIS2 Authentication")

    # Report-only: `style-src 'none'` would drop the NHS.UK stylesheet; the browser only reports it.
    header = page.locator(".nhsuk-header")
    expect(header).to_have_css("background-color", NHS_BLUE)
    report = collector.wait_for(lambda r: r.get("disposition") == "report")
    assert report["effective-directive"].startswith("style-src")
    assert report["blocked-uri"].startswith(f"{careid}/static/")

    # Enforced: an injected inline script does not run, and the browser says so to the report-uri.
    ran = page.evaluate(
        """() => { const script = document.createElement('script');
                   script.textContent = 'window.careidInjected = true';
                   document.body.append(script);
                   return window.careidInjected === true; }"""
    )
    assert ran is False
    report = collector.wait_for(lambda r: r.get("disposition") == "enforce")
    assert report["effective-directive"].startswith("script-src")
    assert report["blocked-uri"] == "inline"
    assert report["document-uri"] == f"{careid}/login/"
