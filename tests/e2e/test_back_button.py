"""Back in a real Chromium shows the server's answer now, never a secret or a profile from the cache.

Without `Cache-Control: no-store`, Chromium keeps each page in its HTTP cache and shows it again on
Back without asking the server. On a shared NHS workstation the next person could then press Back
and read the TOTP key of someone's QR page, or a profile whose session has ended.

(Pressing Back straight after "Next" on the QR page happened to ask the server even before: the
form posts to the page's own address, and a POST to an address drops the browser's cached copy of
it. Leaving the page any other way, by a link or by typing an address, did not.)
"""

from __future__ import annotations

import re

from django.utils import timezone
from playwright.sync_api import Page, expect

from .conftest import choose_the_app, heading, sign_in_with_the_app
from .test_authenticator_app_journey import EMAIL, PASSWORD, email_code, invitation_link, shown_secret


def test_back_to_the_qr_page_after_the_journey_has_ended_shows_no_key(page: Page, invite, mailbox, a11y):
    from authenticators.models import RegistrationLink

    invite(email=EMAIL, first_name="Mary", last_name="Seacole")
    page.goto(invitation_link(mailbox))
    page.get_by_label("I confirm only I will have access to the device").check()
    page.get_by_role("button", name="Register Microsoft Authenticator").click()
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("One Time Password").fill(email_code(mailbox))
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    heading(page, "Scan the QR code")
    secret = shown_secret(page)

    # The person leaves the page by a link and walks away; their 30 minutes run out.
    page.get_by_role("link", name="Terms and Conditions").click()
    heading(page, "Terms and Conditions")
    assert RegistrationLink.objects.filter(step="qr").update(journey_expires_at=timezone.now()) == 1

    back = page.go_back()
    assert back is not None and back.url.endswith("/register/authenticator-app/qr/")
    # 410 is the server's answer now; the cached copy of the QR page was a 200.
    assert back.status == 410, f"Back showed a {back.status} for the QR page, not the server's answer now"
    heading(page, "Your registration has ended")
    expect(page.locator(".careid-qr svg")).to_have_count(0)
    expect(page.get_by_test_id("totp-secret")).to_have_count(0)
    assert secret not in re.sub(r"\s+", "", page.content())
    a11y.check(page, "back to the QR page: registration ended")


def test_back_to_the_profile_after_the_session_was_ended_shows_nothing(page: Page, transactional_db, make_person,
                                                                      a11y):
    from accounts.flows import suspend_user

    person = make_person(email=EMAIL)
    ra_agent = make_person(email="ra.agent@nhs.net", is_staff=True).user
    uid = person.user.uid
    page.goto("/login/")
    choose_the_app(page)
    sign_in_with_the_app(page, person)
    heading(page, "Care Identity Management")
    page.get_by_role("link", name="View your profile").click()
    heading(page, "Your profile")
    expect(page.get_by_text(uid, exact=True)).to_be_visible()

    # The person moves on; an RA suspends them, which ends their sessions on the server at once.
    page.get_by_role("link", name="Cookies").click()
    heading(page, "Cookies")
    assert suspend_user(user=person.user, actor=ra_agent, reason="Left the trust") == 1

    back = page.go_back()
    assert back is not None
    # Asked again, the server sends a visitor without a session to sign in; the cached profile stayed put.
    assert back.request.redirected_from is not None, f"Back showed {back.url} ({back.status}) from the cache"
    expect(page).to_have_url(re.compile(r"/login/\?next=/profile/$"))
    heading(page, "CIS2 Authentication")
    assert uid not in page.content()
    a11y.check(page, "back to the profile: sign in again")
