"""The WebAuthn types in a real Chromium with the DevTools protocol's virtual authenticators (what
Keycloak's Selenium suite uses): register each type from "Add other authenticators" and sign in with it
through "Select your login method" (a passkey without an e-mail address); a security key from an RA's
registration link; the wrong kind of authenticator, and one that cannot verify the person, refused with
a clear message; a second registration of a type refused. axe-core checks every page.

A virtual authenticator is added before the click that starts a ceremony: with none attached the browser
would wait for the whole timeout. CAREID_WEBAUTHN_TIMEOUT is a few seconds where no authenticator of the
right kind is there, so those tests fail fast.
"""

from __future__ import annotations

import base64
import re

import pytest
from playwright.sync_api import Page, expect

from authenticators.models import IPad, Passkey, RegistrationLink, SecurityKey, WindowsHello

from ..conftest import body
from .conftest import BrowserConsole, heading, sign_in
from .test_authenticator_app_journey import email_code

TYPES = {  # key: (name on "Select authenticator type", label on "Select your login method", model, transport)
    "windows-hello": ("Windows Hello", "Windows Hello", WindowsHello, "internal"),
    "security-key": ("Security key", "Security key", SecurityKey, "usb"),
    "ipad": ("iPad", "iPad app", IPad, "internal"),
    "passkey": ("Passkey", "Passkey (private beta)", Passkey, "internal"),
}
CEREMONY_HEADINGS = {"windows-hello": "Set up Windows Hello", "security-key": "Register your security key",
                     "ipad": "Register your iPad", "passkey": "Create your passkey"}
USE_HEADINGS = {"windows-hello": "Use Windows Hello", "security-key": "Use your security key", "ipad": "Use your iPad"}


@pytest.fixture(autouse=True)
def webauthn_in_the_browser(passkey_beta, settings):
    """The RP ID is the live server's host (localhost) and its origin the only one; the passkey beta on."""
    settings.CAREID_WEBAUTHN_RP_ID = ""
    settings.CAREID_WEBAUTHN_ORIGINS = []


def virtual_authenticator(page: Page, *, transport: str, resident: bool = False, verified: bool = True):
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": transport, "hasResidentKey": resident, "hasUserVerification": True,
        "isUserVerified": verified, "automaticPresenceSimulation": True}})
    return cdp, added["authenticatorId"]


def credential_ids(cdp, authenticator_id: str) -> list[bytes]:
    """What the virtual authenticator holds (CDP gives ids in standard base64, not base64url)."""
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})["credentials"]
    return [base64.b64decode(credential["credentialId"]) for credential in credentials]


def error_summary(page: Page):
    summary = page.locator(".nhsuk-error-summary")
    expect(summary).to_be_visible()
    return summary


def run_ceremony(page: Page, button: str) -> None:
    """Press the ceremony page's button once its script has taken over the form (a click before that posts
    the form as a browser without JavaScript would)."""
    expect(page.locator("form[data-webauthn-ready]")).to_have_count(1)
    page.get_by_role("button", name=button).click()


def start_registration(page: Page, kind: str, a11y=None) -> None:
    """Home → Add other authenticators → the type → its page (what is needed, sole access) → Register."""
    name = TYPES[kind][0]
    page.get_by_role("link", name="Add other authenticators").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Select authenticator type")
    if a11y:
        a11y.check(page, "select authenticator type")
    page.get_by_role("radio", name=name, exact=True).check()
    page.get_by_role("button", name="Continue").click()
    heading(page, f"Register {name} with your Care Identity")
    if a11y:
        a11y.check(page, f"register {kind}: what is needed")
    page.get_by_label("I confirm only I will have access to").check()
    page.get_by_role("button", name=f"Register {name}").click()
    heading(page, CEREMONY_HEADINGS[kind])
    if a11y:
        a11y.check(page, f"register {kind}: ceremony")


# --- each type: register, then sign in through the method page -----------------------------------------


@pytest.mark.parametrize("kind", list(TYPES))
def test_register_and_sign_in(page: Page, make_person, kind, a11y, mailbox):
    name, label, model, transport = TYPES[kind]
    person = make_person()
    sign_in(page, person)
    cdp, authenticator_id = virtual_authenticator(page, transport=transport, resident=kind == "passkey")

    start_registration(page, kind, a11y)
    run_ceremony(page, "Continue")
    expect(page.get_by_role("heading", name="Registration successful")).to_be_visible()
    expect(page.get_by_text("Your device is registered.")).to_be_visible()
    a11y.check(page, f"register {kind}: successful")
    credential = model.objects.get(user=person.user)
    assert credential_ids(cdp, authenticator_id) == [bytes(credential.credential_id)]
    assert credential.attachment == ("cross-platform" if transport == "usb" else "platform")
    article = "An" if kind == "ipad" else "A"
    assert mailbox.wait_for(person.user.email, f"{article} {name} was added to your Care Identity")

    # A second one of the same type: listed as registered, not a choice, and its page says so.
    page.goto("/authenticators/")
    expect(page.get_by_role("radio", name=name, exact=True)).to_have_count(0)
    expect(page.get_by_test_id("registered-types")).to_contain_text(f"{name}:")
    a11y.check(page, "select authenticator type with registered types")
    page.goto(f"/authenticators/{kind}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(rf"You already have an? {name} registered"))
    a11y.check(page, f"{kind} already registered")

    page.goto("/")
    page.get_by_role("button", name="Sign out").click()
    heading(page, "You have signed out")

    page.goto("/login/")
    page.get_by_role("radio", name=label, exact=True).check()
    page.get_by_role("button", name="Continue").click()
    if kind == "passkey":  # no e-mail address: the browser finds the passkey
        heading(page, "Sign in with a passkey")
        expect(page.get_by_label("Email address")).to_have_count(0)
    else:
        a11y.check(page, f"sign in with {kind}: email address")
        page.get_by_label("Email address").fill(person.user.email)
        page.get_by_role("button", name="Continue").click()
        heading(page, USE_HEADINGS[kind])
    a11y.check(page, f"sign in with {kind}: ceremony")
    run_ceremony(page, "Sign in")
    heading(page, "Care Identity Management")
    credential.refresh_from_db()
    assert credential.last_used_at is not None and credential.sign_count >= 1


def test_a_security_key_is_the_first_authenticator_from_an_ra_link(page: Page, invite, mailbox, a11y):
    from authenticators.flows import issue_registration_link

    user, _ = invite(email="mary.seacole@nhs.net")
    link = issue_registration_link(user=user, kind="security-key", purpose=RegistrationLink.Purpose.EMAILED)
    url = re.search(r"https?://\S+/register/\S+/", body(mailbox.wait_for(user.email, "Your link to register"))).group(0)
    assert url == link.url
    page.goto(url)
    heading(page, "Register Security key with your Care Identity")
    expect(page.get_by_text(re.compile(r"^The register link will expire at \d+:\d\d[ap]m on \d+ \w+ \d{4}$"))).to_be_visible()
    page.get_by_label("I confirm only I will have access to this security key").check()
    page.get_by_role("button", name="Register Security key").click()
    heading(page, "Enter your email address")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_role("button", name="Continue").click()
    heading(page, "Check your inbox")
    page.get_by_label("One Time Password").fill(email_code(mailbox, user.email, count=1))
    page.get_by_role("button", name="Continue").click()
    heading(page, "Register your security key")
    virtual_authenticator(page, transport="usb")
    run_ceremony(page, "Continue")
    expect(page.get_by_role("heading", name="Registration successful")).to_be_visible()
    expect(page.get_by_text("You can now close this page.")).to_be_visible()
    a11y.check(page, "registered from a link")

    page.goto("/login/")
    page.get_by_role("radio", name="Security key", exact=True).check()
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Email address").fill(user.email)
    page.get_by_role("button", name="Continue").click()
    run_ceremony(page, "Sign in")
    heading(page, "Care Identity Management")  # no password was ever set


# --- the wrong kind of authenticator, and one that cannot verify the person -------------------------------


@pytest.mark.parametrize("kind, transport, message", [
    ("windows-hello", "usb", "Windows Hello did not respond, could not check it was you, or you cancelled."),
    ("security-key", "internal", "Your security key did not respond, could not check it was you"),
])
def test_the_wrong_kind_of_authenticator_fails_with_a_clear_message(page: Page, make_person, settings, kind, transport,
                                                                    message, a11y):
    settings.CAREID_WEBAUTHN_TIMEOUT = 3  # no authenticator of the kind asked for: the browser gives up
    person = make_person()
    sign_in(page, person)
    virtual_authenticator(page, transport=transport)  # only the other kind is attached
    start_registration(page, kind)
    run_ceremony(page, "Continue")
    expect(error_summary(page)).to_contain_text(message)
    heading(page, CEREMONY_HEADINGS[kind])  # still on the ceremony page, ready to try again
    a11y.check(page, f"{kind} answered by the wrong kind")
    assert not TYPES[kind][2].objects.exists()


def test_an_authenticator_that_cannot_verify_the_person_is_refused(page: Page, make_person, a11y):
    person = make_person()
    sign_in(page, person)
    virtual_authenticator(page, transport="usb", verified=False)
    start_registration(page, "security-key")
    run_ceremony(page, "Continue")
    expect(error_summary(page)).to_contain_text("could not check it was you")
    a11y.check(page, "user verification refused")
    assert not SecurityKey.objects.exists()


# --- under the Content-Security-Policy as served (the other tests bypass it for axe) ------------------


def test_the_ceremonies_run_under_the_strict_content_security_policy(enforcing_page: Page, base_url, make_person):
    """The options are json_script data and the script a static module: the policy blocks nothing."""
    page = enforcing_page
    console = BrowserConsole(page)
    person = make_person()
    sign_in(page, person)
    assert "script-src 'self'" in page.context.request.get(base_url + "/").headers["content-security-policy"]
    virtual_authenticator(page, transport="usb")
    start_registration(page, "security-key")
    run_ceremony(page, "Continue")
    expect(page.get_by_role("heading", name="Registration successful")).to_be_visible()
    page.goto("/")
    page.get_by_role("button", name="Sign out").click()
    page.goto("/login/security-key/")
    page.get_by_label("Email address").fill(person.user.email)
    page.get_by_role("button", name="Continue").click()
    run_ceremony(page, "Sign in")
    heading(page, "Care Identity Management")
    assert console.problems == []


# --- a browser without JavaScript, or without WebAuthn -------------------------------------------------


def as_without_javascript(html: str) -> str:
    """A page as a browser without JavaScript has it: no script has run or will, <noscript> content shown."""
    html = re.sub(r"<script\b.*?</script>", "", html, flags=re.S | re.I)
    return re.sub(r"</?noscript>", "", html, flags=re.I)


def test_without_javascript_the_page_says_what_to_do(browser, base_url, make_person, page: Page, a11y):
    context = browser.new_context(base_url=base_url, locale="en-GB", java_script_enabled=False, bypass_csp=True)
    no_javascript = context.new_page()
    person = make_person()
    no_javascript.goto("/login/security-key/")
    no_javascript.get_by_label("Email address").fill(person.user.email)
    no_javascript.get_by_role("button", name="Continue").click()
    heading(no_javascript, "Use your security key")
    expect(no_javascript.get_by_text("This step needs JavaScript to talk to your security key.")).to_be_visible()
    no_javascript.get_by_role("button", name="Sign in").click()
    expect(error_summary(no_javascript)).to_contain_text("Switch on JavaScript in your browser")
    url, html = no_javascript.url, as_without_javascript(no_javascript.content())
    context.close()
    # axe is JavaScript: it checks that page, from its own address, in a browser where axe can run.
    page.route(url, lambda route: route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html))
    page.goto(url)
    expect(error_summary(page)).to_contain_text("Switch on JavaScript in your browser")
    expect(page.get_by_text("This step needs JavaScript to talk to your security key.")).to_be_visible()  # no script ran
    a11y.check(page, "no JavaScript: the error page")


def test_a_browser_without_webauthn_is_told_so(page: Page, make_person, a11y):
    page.add_init_script("delete window.PublicKeyCredential")
    person = make_person()
    page.goto("/login/security-key/")
    page.get_by_label("Email address").fill(person.user.email)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("This step needs JavaScript to talk to your security key.")).to_be_hidden()  # it runs
    run_ceremony(page, "Sign in")
    expect(error_summary(page)).to_contain_text("This browser cannot use a security key.")
    a11y.check(page, "no WebAuthn in this browser")
