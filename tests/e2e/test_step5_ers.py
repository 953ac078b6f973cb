"""Step 5 of the seed guide, "Logging into eRS using your NHS Care Identity", end to end on the real
components: PostgreSQL, Redis and a Celery worker process, the real SMTP server, Chromium, careid on
the live server, and the demo e-Referral Service (demo_ers/, Authlib) as a gunicorn subprocess that
careid knows only by its registration (private_key_jwt with its jwks_uri, back-channel logout URI).

The journey: the demo's page → "Log in with your NHS Care Identity" → CIS2 Authentication →
Authenticator app (e-mail and password, then the code) → back at the demo with the claims it shows
only once Authlib verified the ID token against careid's JWKS → signing out at careid: the worker
POSTs a back-channel logout, which the demo verifies and acts on → in again → the demo's own "Log out"
ends the careid session (RP-initiated logout) → in again → an RA suspends the person: a second
back-channel logout. A second test shows the demo refusing logout tokens careid did not make.

Both careid's and the demo's Content-Security-Policy stay in force (no bypass_csp): axe is injected
with page.evaluate, as in test_ra_back_office.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import jwt
import pytest
from playwright.sync_api import Page, expect

from ..conftest import _free_port, body
from ..oidc_rp import new_key
from .conftest import BrowserConsole, choose_the_app, heading, sign_in_with_the_app

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "demo-ers"
DEMO_TITLE = "e-Referral Service (demo)"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass
class DemoErs:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _post(url: str, data: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=urlencode(data).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _register_demo(url: str):
    """As `manage.py demo_data` registers it for `make run`, with this run's address."""
    from oidc import flows
    from oidc.forms import RelyingServiceForm

    form = RelyingServiceForm(data={
        "name": DEMO_TITLE, "auth_method": "private_key_jwt", "redirect_uris": f"{url}/callback",
        "post_logout_redirect_uris": f"{url}/", "backchannel_logout_uri": f"{url}/backchannel-logout",
        "jwks_uri": f"{url}/jwks.json", "allowed_scopes": ["openid", "profile", "email", "nhsperson"],
    })
    form.instance.pk = CLIENT_ID
    assert form.is_valid(), form.errors
    return flows.save_relying_service(form, actor=None)[0]


@pytest.fixture
def demo_ers(live_site: str, transactional_db, tmp_path: Path) -> Iterator[DemoErs]:
    """`python -m demo_ers` (gunicorn) on a free port, its issuer the live server, its key and state
    in this test's directory; registered at careid."""
    port = _free_port()
    url = f"http://localhost:{port}"  # the host careid's live server answers to: cookie names must not clash
    env = {
        **os.environ, "DEMO_ERS_ISSUER": live_site, "DEMO_ERS_BASE_URL": url, "DEMO_ERS_BIND": f"127.0.0.1:{port}",
        "DEMO_ERS_CLIENT_ID": CLIENT_ID, "DEMO_ERS_KEY_FILE": str(tmp_path / "demo-ers-key.pem"),
        "DEMO_ERS_STATE_DIR": str(tmp_path / "demo-ers-state"),
    }
    log = tmp_path / "demo-ers.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "demo_ers"], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    demo = DemoErs(url, process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/jwks.json")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                pytest.fail(f"the demo eRS exited:\n{demo.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the demo eRS did not answer within 30 s:\n{demo.output()}")
            time.sleep(0.1)
        _register_demo(url)
        yield demo
    finally:
        process.terminate()
        process.wait(timeout=15)
        print(demo.output())


def claim(page: Page, label: str):
    """The value the demo shows for one verified claim (a row of its summary list)."""
    row = page.locator(".nhsuk-summary-list__row").filter(has=page.get_by_role("term").filter(
        has_text=re.compile(f"^{re.escape(label)}$")))
    return row.get_by_role("definition")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def log_in_through_the_demo(page: Page, demo: DemoErs, person) -> str:
    """The seed's Step 5 from the demo's page to its claims; returns the careid session's sid."""
    page.goto(demo.url)
    heading(page, DEMO_TITLE)
    page.get_by_role("button", name="Log in with your NHS Care Identity").click()
    choose_the_app(page)
    sign_in_with_the_app(page, person)

    expect(page).to_have_url(f"{demo.url}/")
    expect(page.get_by_text(f"You are logged in as {person.user.get_full_name()}.")).to_be_visible()
    expect(claim(page, "UID")).to_have_text(person.user.uid)
    return claim(page, "Session (sid)").inner_text()


def delivered_logouts() -> list:
    from oidc.models import BackchannelLogout

    return list(BackchannelLogout.objects.filter(client_id=CLIENT_ID, state=BackchannelLogout.State.DELIVERED)
                .order_by("pk"))


def test_step5_logging_into_ers_then_logging_out_every_way(enforcing_page: Page, demo_ers: DemoErs,
                                                           celery_worker_process, make_person, ra_staff, mailbox,
                                                           a11y, base_url):
    from audit.models import AuditEvent, Event
    from oidc.models import BackchannelLogout

    page, demo = enforcing_page, demo_ers
    # CSP reports and script errors on the demo's pages (fonts from assets.nhs.uk fail offline: not counted).
    console = BrowserConsole(page, counts=lambda url: url.startswith(demo.url))

    person = make_person(email="edith.cavell@nhs.net")
    callbacks: list[str] = []
    page.on("request", lambda request: callbacks.append(request.url) if "/callback?" in request.url else None)
    page.goto(demo.url)
    heading(page, DEMO_TITLE)
    expect(page.get_by_role("button", name="Log in with your NHS Care Identity")).to_be_visible()
    console.check(a11y, "demo eRS: log in")

    # 1. Step 5: in through CIS2 Authentication with the Authenticator app, back at eRS with the claims.
    first_sid = log_in_through_the_demo(page, demo, person)
    expect(claim(page, "Name")).to_have_text("Edith Cavell")
    expect(claim(page, "acr")).to_have_text("AAL2_OR_AAL3_ANY")
    expect(claim(page, "amr")).to_have_text("pwd, otp")
    expect(claim(page, "Authentication assurance level")).to_have_text("2")
    expect(claim(page, "Email")).to_have_text(person.user.email)
    # The key the demo verified the ID token with is the one careid publishes.
    careid_kid = json.loads(_get(f"{base_url}/.well-known/jwks.json")[1])["keys"][0]["kid"]
    expect(page.get_by_text(f"key {careid_kid}")).to_be_visible()
    console.check(a11y, "demo eRS: verified claims")
    token_issued = AuditEvent.objects.get(event=Event.OIDC_TOKEN_ISSUED)
    assert token_issued.details["client"] == CLIENT_ID and token_issued.details["acr"] == "AAL2_OR_AAL3_ANY"

    # The callback cannot be replayed: its state was used up (and so was the code).
    page.goto(callbacks[0])
    heading(page, "You were not logged in")
    expect(page.get_by_text("mismatching_state")).to_be_visible()
    console.check(a11y, "demo eRS: login refused")
    page.goto(demo.url)
    expect(claim(page, "UID")).to_have_text(person.user.uid)

    # An AAL3 step-up is refused at careid: the person has no AAL3 authenticator.
    page.get_by_role("button", name="Step up to AAL3 (smartcard or security key)").click()
    heading(page, f"{DEMO_TITLE} needs a stronger login method")
    page.goto(demo.url)
    expect(claim(page, "UID")).to_have_text(person.user.uid)  # still logged in at AAL2

    # 2. Signing out at careid: the worker POSTs a back-channel logout; the demo's session ends with it.
    page.goto(f"{base_url}/")
    page.get_by_role("button", name="Sign out").click()
    heading(page, "You have signed out")
    wait_until(lambda: len(delivered_logouts()) == 1, "the back-channel logout delivered by the worker")
    assert delivered_logouts()[0].sid == first_sid and celery_worker_process.poll() is None
    page.goto(demo.url)
    expect(page.get_by_text("NHS Care Identity told this service that your session ended")).to_be_visible()
    expect(page.get_by_role("button", name="Log in with your NHS Care Identity")).to_be_visible()
    logouts = page.get_by_role("table", name="Back-channel logouts received, newest first")
    expect(logouts.locator("tbody tr")).to_have_count(1)
    expect(logouts.locator("tbody tr").first).to_contain_text(person.user.uid)
    expect(logouts.locator("tbody tr").first).to_contain_text(first_sid)
    console.check(a11y, "demo eRS: logged out by the back channel")
    # Another browser is not shown whose session ended.
    stranger = page.context.browser.new_context().new_page()
    stranger.goto(demo.url)
    expect(stranger.get_by_text("None yet in this browser.")).to_be_visible()
    expect(stranger.get_by_text(person.user.uid)).to_have_count(0)
    stranger.context.close()

    # 3. In again; the demo's own "Log out" ends the careid session too (RP-initiated logout).
    second_sid = log_in_through_the_demo(page, demo, person)
    assert second_sid != first_sid
    logged_in_cookie = next(c for c in page.context.cookies(demo.url) if c["name"] == "demo-ers-session")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{demo.url}/")
    expect(page.get_by_text("NHS Care Identity has ended your session there too")).to_be_visible()
    console.check(a11y, "demo eRS: logged out")
    page.context.add_cookies([logged_in_cookie])  # a copy of the signed cookie taken before "Log out"
    page.goto(demo.url)
    expect(page.get_by_role("button", name="Log in with your NHS Care Identity")).to_be_visible()
    expect(page.get_by_text("told this service that your session ended")).to_have_count(0)
    assert AuditEvent.objects.filter(event=Event.OIDC_LOGOUT, details__client=CLIENT_ID).count() == 1
    page.goto(f"{base_url}/profile/")
    expect(page.get_by_role("heading", name="Your profile")).to_have_count(0)  # careid asks to sign in again
    # The service that asked is not told back: still one logout received.
    assert BackchannelLogout.objects.filter(client_id=CLIENT_ID).count() == 1

    # 4. In again; an RA Agent suspends the person in the back office: a second back-channel logout.
    third_sid = log_in_through_the_demo(page, demo, person)
    _agent, agent_client = ra_staff("RA Agent")
    response = agent_client.post(f"/admin/accounts/user/{person.user.pk}/suspend/", {"reason": "Left the trust"})
    assert response.status_code == 302
    wait_until(lambda: len(delivered_logouts()) == 2, "the second back-channel logout")
    assert delivered_logouts()[1].sid == third_sid and delivered_logouts()[1].reason == "suspended"
    assert "Left the trust" in body(mailbox.wait_for(person.user.email, "Your Care Identity has been suspended"))
    page.goto(demo.url)
    expect(page.get_by_text("NHS Care Identity told this service that your session ended")).to_be_visible()
    expect(logouts.locator("tbody tr")).to_have_count(2)
    expect(logouts.locator("tbody tr").first).to_contain_text(third_sid)  # newest first
    page.goto(f"{base_url}/profile/")
    expect(page.get_by_role("heading", name="Your profile")).to_have_count(0)

    assert not console.problems, "\n".join(console.problems)


def test_the_demo_refuses_logout_tokens_careid_did_not_make(demo_ers: DemoErs, live_site: str, op_signing_key: str):
    """What the demo checks before it ends anyone's session (Back-Channel Logout 1.0, 2.6): tokens
    signed with another key, for another audience or issuer, without the event or sid, with a nonce,
    stale, or replayed are refused, and none of them is recorded."""
    from allauth.core.internal import jwkkit

    jwk, op_key = jwkkit.load_jwk_from_pem(op_signing_key)
    now = int(time.time())
    good = {"iss": live_site, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": "j-1", "sub": "123456789012",
            "sid": "s-1", "events": {BACKCHANNEL_EVENT: {}}}

    def token(claims: dict, key=op_key, kid: str = jwk["kid"], typ: str = "logout+jwt") -> str:
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": typ})

    endpoint = f"{demo_ers.url.replace('localhost', '127.0.0.1')}/backchannel-logout"
    refused = {
        "another key, careid's kid": token(good, key=new_key()),
        "another audience": token({**good, "aud": "someone-else"}),
        "another issuer": token({**good, "iss": "https://evil.example"}),
        "no event": token({k: v for k, v in good.items() if k != "events"}),
        "no sid": token({k: v for k, v in good.items() if k != "sid"}),
        "a nonce": token({**good, "nonce": "n"}),
        "issued long ago": token({**good, "iat": now - 3600, "exp": now + 60}),
        "expired": token({**good, "iat": now - 200, "exp": now - 100}),
        "an ID token": token(good, typ="JWT"),
        "not a JWT": "not-a-jwt",
    }
    for what, value in refused.items():
        status, answer = _post(endpoint, {"logout_token": value})
        assert status == 400 and answer["error"] == "invalid_request", (what, status, answer)
    assert _post(endpoint, {"logout_token": token(good)})[0] == 200
    status, answer = _post(endpoint, {"logout_token": token(good)})
    assert status == 400 and "replay" in answer["error_description"]
    # Only the genuine one was recorded (the demo's page lists a browser's own sessions' logouts only).
    received = (demo_ers.log.parent / "demo-ers-state" / "backchannel-logouts.jsonl").read_text().splitlines()
    assert [(logout["sid"], logout["jti"]) for logout in map(json.loads, received)] == [("s-1", "j-1")]
