"""The Authenticator app journey in a real Chromium, as a person would do it.

Invitation e-mail (real SMTP) → registration link → sole-access checkbox → e-mail address → 8-digit
code from the e-mail → password → QR page (secret read off the page) → 6-digit code → "Registration
successful" → sign in with the remembered method → profile → sign out → back to the remembered method.
axe-core checks every page; a second test does it with the keyboard alone.
"""

from __future__ import annotations

import re
import time

import pyotp
from playwright.sync_api import Page, expect

from ..conftest import body
from .conftest import heading

EMAIL = "mary.seacole@nhs.net"
PASSWORD = "Seven kettles whistle at dawn"


# --- what a person reads: the e-mails and the key on the QR page -----------------------------


def invitation_link(mailbox, email: str = EMAIL) -> str:
    message = mailbox.wait_for(email, "Set up your NHS Care Identity")
    return re.search(r"https?://\S+/register/\S+/", body(message)).group(0)


def email_code(mailbox, email: str = EMAIL, count: int = 1) -> str:
    message = mailbox.wait_for(email, "One Time Password", count=count)
    return re.search(r"\b(\d{8})\b", body(message)).group(1)


def shown_secret(page: Page) -> str:
    """The base32 key as the page shows it (groups of four), ready for an authenticator app."""
    text = page.get_by_test_id("totp-secret").inner_text()
    secret = re.sub(r"\s+", "", text)
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), text
    return secret


def app_code(secret: str, *, next_step: bool = False) -> str:
    """What the phone shows. The replay guard takes each 30-second step once, so a second sign-in
    within the same step uses the next step's code (still within the ±1 step tolerance)."""
    return pyotp.TOTP(secret).at(time.time() + (30 if next_step else 0))


# --- the journey with a pointer -----------------------------------------------------------------


def test_register_sign_in_profile_and_sign_out(page: Page, invite, mailbox, a11y, base_url):
    invite(email=EMAIL, first_name="Mary", last_name="Seacole")
    link = invitation_link(mailbox)
    assert link.startswith(base_url + "/register/")

    # The registration link: confirm sole access.
    page.goto(link)
    heading(page, "Register Microsoft Authenticator with your Care Identity")
    a11y.check(page, "registration link: sole access")
    page.get_by_label("I confirm only I will have access to the device").check()
    page.get_by_role("button", name="Register Microsoft Authenticator").click()

    # The e-mail address.
    heading(page, "Enter your email address")
    a11y.check(page, "registration: email address")
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_role("button", name="Continue").click()

    # The 8-digit code, read from the real SMTP server.
    heading(page, "Check your inbox")
    expect(page).to_have_url(re.compile(r"/register/authenticator-app/code/$"))
    a11y.check(page, "registration: check your inbox")
    page.get_by_label("One Time Password").fill(email_code(mailbox))
    page.get_by_role("button", name="Continue").click()

    # The password.
    heading(page, "Create a password")
    a11y.check(page, "registration: create a password")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()

    # The QR code, and the key for those who cannot scan it.
    heading(page, "Scan the QR code")
    expect(page.locator(".careid-qr svg")).to_be_visible()
    a11y.check(page, "registration: QR code")
    secret = shown_secret(page)
    page.get_by_role("button", name="Next").click()

    # The first code from the app.
    heading(page, "Check your authenticator app")
    a11y.check(page, "registration: verification code")
    page.get_by_label("Enter verification code").fill(app_code(secret))
    page.get_by_role("button", name="Submit").click()

    expect(page.get_by_role("heading", name="Registration successful")).to_be_visible()
    expect(page.get_by_text("Your device is registered.")).to_be_visible()
    a11y.check(page, "registration successful")
    assert mailbox.wait_for(EMAIL, "A Microsoft Authenticator was added to your Care Identity")

    # Sign in: choose the Authenticator app and remember the choice.
    page.goto("/login/")
    heading(page, "CIS2 Authentication")
    a11y.check(page, "sign in: choose a login method")
    page.get_by_role("radio", name="Authenticator app").check()
    page.get_by_label("Remember my selection").check()
    page.get_by_role("button", name="Continue").click()

    expect(page).to_have_url(re.compile(r"/login/authenticator-app/(\?[^/]*)?$"))
    heading(page, "Sign in with the Authenticator app")
    a11y.check(page, "sign in: email and password")

    # A wrong password: said at the first field (where the summary's link leads), read out with both, and
    # the password typed is gone.
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill("not the password")
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_title("Error: Sign in with the Authenticator app - NHS Care Identity")
    said = re.compile(r"Error:\s+Enter a correct email address and password$")
    expect(page.get_by_label("Email address")).to_have_accessible_description(said)
    expect(page.get_by_label("Password", exact=True)).to_have_accessible_description(said)
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    page.get_by_role("link", name="Enter a correct email address and password").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Email address")).to_be_focused()
    a11y.check(page, "sign in: wrong email address or password")

    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()

    expect(page).to_have_url(re.compile(r"/login/authenticator-app/code/(\?[^/]*)?$"))
    heading(page, "Check your authenticator app")
    a11y.check(page, "sign in: verification code")
    page.get_by_label("Enter verification code").fill(app_code(secret, next_step=True))
    page.get_by_role("button", name="Submit").click()

    # Signed in: home, then the profile with the new authenticator.
    heading(page, "Care Identity Management")
    expect(page).to_have_url(base_url + "/")
    a11y.check(page, "home")
    page.get_by_role("link", name="View your profile").click()
    expect(page).to_have_url(re.compile(r"/profile/$"))
    heading(page, "Your profile")
    authenticators = page.get_by_role("table", name="Authenticators registered on your profile")
    expect(authenticators.get_by_role("cell", name="Microsoft Authenticator", exact=True)).to_be_visible()
    a11y.check(page, "profile")

    # The secure cookies were stored over http://localhost, with their production names.
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["__Host-careid-session"]["secure"] and cookies["__Host-careid-session"]["httpOnly"]
    assert cookies["__Host-careid-csrf"]["secure"]
    assert cookies["__Host-careid-login-method-AAL2_OR_AAL3_ANY"]["value"] == "authenticator-app"

    # The sign-out address opened (a bookmark) asks first; then sign out.
    page.goto("/logout/")
    heading(page, "Sign out")
    a11y.check(page, "sign out")
    page.get_by_role("main").get_by_role("button", name="Sign out").click()
    heading(page, "You have signed out")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    a11y.check(page, "signed out")
    page.goto("/profile/")  # the session has ended: the profile asks to sign in again
    expect(page.get_by_role("heading", name="Your profile")).to_have_count(0)

    # The remembered method: straight to its page, with a way back to the choice.
    page.goto("/login/")
    expect(page).to_have_url(re.compile(r"/login/authenticator-app/(\?[^/]*)?$"))
    heading(page, "Sign in with the Authenticator app")
    choose_another = page.get_by_role("link", name="Choose another login method")
    expect(choose_another).to_be_visible()
    a11y.check(page, "sign in: remembered method")
    choose_another.click()
    heading(page, "CIS2 Authentication")
    expect(page.get_by_role("radio", name="Authenticator app")).to_be_checked()
    a11y.check(page, "sign in: choose another method")


# --- the same journey with the keyboard alone ------------------------------------------------------


def focused(page: Page) -> dict:
    return page.evaluate(
        """() => { const el = document.activeElement;
            return {tag: el.tagName.toLowerCase(), type: el.type || '', id: el.id || '',
                    text: (el.innerText || el.value || '').trim(),
                    label: el.labels && el.labels[0] ? el.labels[0].innerText.trim() : ''}; }"""
    )


def tab_to(page: Page, target, limit: int = 40) -> None:
    """Press Tab until `target` (a locator) has the focus, as a sighted keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"{target} never got the focus in {limit} Tab presses (last: {focused(page)})")


def first_tab_is_the_skip_link(page: Page) -> None:
    # NHS.UK frontend's skip link moves the focus into <main> once its script has set it up (it marks the
    # link): before that, Enter only follows the anchor.
    expect(page.locator("a.nhsuk-skip-link")).to_have_attribute("data-nhsuk-skip-link-init", "")
    page.keyboard.press("Tab")
    now = focused(page)
    assert now["tag"] == "a" and now["text"] == "Skip to main content", now


def test_register_and_sign_in_with_the_keyboard_alone(page: Page, invite, mailbox, base_url):
    invite(email=EMAIL, first_name="Mary", last_name="Seacole")
    page.goto(invitation_link(mailbox))  # opening the link from the e-mail
    heading(page, "Register Microsoft Authenticator with your Care Identity")

    # The skip link is the first Tab stop on every page (used at the end, on the home page: following
    # it here would carry #maincontent into the next page's URL and start its Tab order in <main>).
    first_tab_is_the_skip_link(page)
    checkbox = page.get_by_label("I confirm only I will have access to the device")
    tab_to(page, checkbox)
    page.keyboard.press("Space")
    expect(checkbox).to_be_checked()
    tab_to(page, page.get_by_role("button", name="Register Microsoft Authenticator"))
    page.keyboard.press("Enter")

    heading(page, "Enter your email address")
    first_tab_is_the_skip_link(page)
    tab_to(page, page.get_by_label("Email address"))
    page.keyboard.type(EMAIL)
    page.keyboard.press("Enter")

    heading(page, "Check your inbox")
    first_tab_is_the_skip_link(page)
    tab_to(page, page.get_by_label("One Time Password"))
    page.keyboard.type(email_code(mailbox))
    page.keyboard.press("Enter")

    heading(page, "Create a password")
    first_tab_is_the_skip_link(page)
    tab_to(page, page.get_by_label("Password", exact=True))
    page.keyboard.type(PASSWORD)
    tab_to(page, page.get_by_label("Confirm password"), limit=3)  # past the "Show" button
    page.keyboard.type(PASSWORD)
    tab_to(page, page.get_by_role("button", name="Continue"), limit=3)
    page.keyboard.press("Space")

    heading(page, "Scan the QR code")
    first_tab_is_the_skip_link(page)
    secret = shown_secret(page)
    tab_to(page, page.get_by_role("button", name="Next"))
    page.keyboard.press("Enter")

    heading(page, "Check your authenticator app")
    first_tab_is_the_skip_link(page)
    tab_to(page, page.get_by_label("Enter verification code"))
    page.keyboard.type(app_code(secret))
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Registration successful")).to_be_visible()
    first_tab_is_the_skip_link(page)

    # Sign in, still with the keyboard alone (the address typed into the address bar).
    page.goto("/login/")
    heading(page, "CIS2 Authentication")
    first_tab_is_the_skip_link(page)
    radio = page.get_by_role("radio", name="Authenticator app")
    for _ in range(40):  # Tab into the group, then the arrow keys within it
        page.keyboard.press("Tab")
        if focused(page)["type"] == "radio":
            break
    for _ in range(10):
        if radio.evaluate("el => el === document.activeElement"):
            break
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Space")
    expect(radio).to_be_checked()
    tab_to(page, page.get_by_role("button", name="Continue"))
    page.keyboard.press("Enter")

    heading(page, "Sign in with the Authenticator app")
    first_tab_is_the_skip_link(page)
    tab_to(page, page.get_by_label("Email address"))
    page.keyboard.type(EMAIL)
    tab_to(page, page.get_by_label("Password", exact=True), limit=3)
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")

    heading(page, "Check your authenticator app")
    tab_to(page, page.get_by_label("Enter verification code"))
    page.keyboard.type(app_code(secret, next_step=True))
    page.keyboard.press("Enter")

    heading(page, "Care Identity Management")
    first_tab_is_the_skip_link(page)
    page.keyboard.press("Enter")  # past the header (its profile link and "Sign out")
    assert page.evaluate("document.activeElement.id") == "maincontent"
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "View your profile", focused(page)
    page.keyboard.press("Enter")
    heading(page, "Your profile")
    expect(page.get_by_role("cell", name="Microsoft Authenticator", exact=True)).to_be_visible()

    tab_to(page, page.get_by_role("button", name="Sign out"))
    page.keyboard.press("Enter")
    heading(page, "You have signed out")


def test_a_code_typed_after_send_a_new_code_was_refused_is_checked(page: Page, invite, mailbox, a11y):
    """The e-mail is slow, the person selects "Send a new code" within the minute and is told to wait; the
    code that then arrives, typed on that page, is checked (not posted to "Send a new code" again)."""
    invite(email=EMAIL, first_name="Mary", last_name="Seacole")
    page.goto(invitation_link(mailbox))
    page.get_by_label("I confirm only I will have access to the device").check()
    page.get_by_role("button", name="Register Microsoft Authenticator").click()
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_role("button", name="Continue").click()
    heading(page, "Check your inbox")

    page.get_by_role("button", name="Send a new code").click()
    expect(page.get_by_text("You can ask for a new code in")).to_be_visible()
    a11y.check(page, "check your inbox: no new code yet")

    page.get_by_label("One Time Password").fill(email_code(mailbox))
    page.get_by_role("button", name="Continue").click()
    heading(page, "Create a password")
