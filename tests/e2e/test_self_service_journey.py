"""Self-service in Chromium, through the real SMTP server, axe-core on every page and error path:
where you are signed in (another browser signed out at its next request), your activity, adding,
promoting and removing an address, changing the password, the last authenticator refused, help, and
the forgotten-password journey's refusals (unknown address, suspended person, wrong codes)."""

from __future__ import annotations

import re

from allauth.account.models import EmailAddress
from playwright.sync_api import Browser, Page, expect

from accounts.models import AllowedEmailDomain, User

from ..conftest import body
from .conftest import heading, sign_in
from .test_authenticator_app_journey import email_code


def add_address(page: Page, address: str) -> None:
    page.goto("/profile/email/add/")
    page.get_by_label("Email address").fill(address)
    page.get_by_role("button", name="Save").click()


def verification_link(mailbox, address: str, count: int = 1) -> str:
    """The link of the `count`th verification e-mail to `address`, through the real SMTP server."""
    message = body(mailbox.wait_for(address, "Verify", count=count))
    return re.search(r"https?://\S+/profile/email/confirm/\S+/", message).group(0)


def test_sessions_activity_addresses_password_and_authenticators(page: Page, browser: Browser, base_url,
                                                                 transactional_db, seeded_allow_list, make_person,
                                                                 mailbox, a11y):
    person = make_person(email="florence.nightingale@nhs.net")
    other = browser.new_context(base_url=base_url, bypass_csp=True, user_agent="Mozilla/5.0 Ward-PC-7")
    other_page = other.new_page()
    sign_in(other_page, person)
    sign_in(page, person)

    # Where you are signed in: sign the ward PC out.
    page.get_by_role("link", name="Where you are signed in").click()
    heading(page, "Where you are signed in")
    expect(page.get_by_text("This session")).to_be_visible()
    a11y.check(page, "where you are signed in")
    page.get_by_role("row").filter(has_text="Ward-PC-7").get_by_role("button", name=re.compile("^Sign out")).click()
    expect(page.get_by_text("That session is signed out.")).to_be_visible()
    other_page.goto("/profile/")
    heading(other_page, "CIS2 Authentication")  # signed out at its next request
    other.close()

    # Your activity: the sign-in just made.
    page.goto("/profile/activity/")
    heading(page, "Your activity")
    expect(page.get_by_role("cell", name="Signed in").first).to_be_visible()
    expect(page.get_by_role("cell", name="Sessions ended").first).to_be_visible()
    a11y.check(page, "your activity")

    # Add two addresses (each verified by its link through SMTP), make one the Care Identity email and
    # remove the other (the Care Identity email itself cannot be removed).
    for address in ("florence@nhs.net", "f.nightingale@nhs.net"):
        add_address(page, address)
        page.goto(verification_link(mailbox, address))
        page.get_by_role("button", name=re.compile("Verify|Confirm")).click()
    # An address whose link went astray: a new one from the profile, and that one verifies it.
    add_address(page, "flo@nhs.net")
    mailbox.wait_for("flo@nhs.net", "Verify")
    page.get_by_role("link", name=re.compile(r"^Send a new verification link\W+flo@nhs\.net$")).click()
    heading(page, "Verify flo@nhs.net")
    a11y.check(page, "send a new verification link")
    page.get_by_role("button", name="Send a new link").click()
    expect(page.get_by_text("We have sent an email to flo@nhs.net.")).to_be_visible()
    page.goto(verification_link(mailbox, "flo@nhs.net", count=2))
    page.get_by_role("button", name=re.compile("Verify|Confirm")).click()
    assert EmailAddress.objects.get(user=person.user, email="flo@nhs.net").verified
    page.goto("/profile/")
    page.get_by_role("link", name=re.compile(r"^Make this your Care Identity email\W+florence@nhs\.net$")).click()
    heading(page, "Make florence@nhs.net your Care Identity email address?")
    a11y.check(page, "make an address the Care Identity email")
    page.get_by_role("button", name="Make this my Care Identity email address").click()
    expect(page.get_by_text("florence@nhs.net is now your Care Identity email address.")).to_be_visible()
    assert User.objects.get(pk=person.user.pk).email == "florence@nhs.net"
    mailbox.wait_for("florence@nhs.net", "email address has changed")
    mailbox.wait_for("florence.nightingale@nhs.net", "The email address of your Care Identity has changed")
    page.get_by_role("link", name=re.compile(r"^Remove\W+f\.nightingale@nhs\.net$")).click()
    heading(page, "Remove f.nightingale@nhs.net?")
    a11y.check(page, "remove an address")
    page.get_by_role("button", name="Remove this address").click()
    expect(page.get_by_text("f.nightingale@nhs.net has been removed from your profile.")).to_be_visible()
    a11y.check(page, "profile with actions")

    # The only authenticator cannot be removed: the profile offers no Remove, its page says why and has no button.
    expect(page.get_by_role("link", name=re.compile(r"^Remove\W+Microsoft Authenticator$"))).to_have_count(0)
    expect(page.get_by_text("Your only authenticator you can sign in with")).to_be_visible()
    page.goto("/profile/authenticators/authenticator-app/remove/")
    heading(page, "You cannot remove Microsoft Authenticator")
    expect(page.get_by_text("You cannot remove your only authenticator")).to_be_visible()
    expect(page.get_by_role("button", name="Remove Microsoft Authenticator")).to_have_count(0)
    a11y.check(page, "last authenticator refused")

    # Change the password.
    page.goto("/profile/password/")
    heading(page, "Change your password")
    page.get_by_label("Password", exact=True).fill("password")
    page.get_by_label("Confirm password").fill("password")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("This password is too common.").first).to_be_visible()
    a11y.check(page, "change password: refused")
    page.get_by_label("Password", exact=True).fill("Night shift lanterns glow softly")
    page.get_by_label("Confirm password").fill("Night shift lanterns glow softly")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("Your password has been changed.")).to_be_visible()

    # A link whose address's domain left the allow list after it was sent: its page says so, with no button.
    AllowedEmailDomain.objects.create(domain="ward.example")
    add_address(page, "florence@ward.example")
    link = verification_link(mailbox, "florence@ward.example")
    AllowedEmailDomain.objects.filter(domain="ward.example").delete()
    page.goto(link)
    heading(page, "This email address cannot be verified")
    expect(page.get_by_text("This email domain is not on the Care Identity allow list")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Verify|Confirm"))).to_have_count(0)
    a11y.check(page, "verification link: domain no longer allowed")
    assert not EmailAddress.objects.get(user=person.user, email="florence@ward.example").verified

    # Help, and the public allow list.
    page.get_by_role("link", name="Help and contact").first.click()
    heading(page, "Help and contact")
    a11y.check(page, "help")
    page.goto("/allowed-email-domains/")
    heading(page, "Accepted email domains")
    a11y.check(page, "allowed domains")


def test_forgotten_password_refusals_look_the_same(page: Page, transactional_db, make_person, mailbox, a11y):
    person = make_person(email="florence.nightingale@nhs.net")
    suspended = make_person(email="mary.seacole@nhs.net")
    User.objects.filter(pk=suspended.user.pk).update(status=User.Status.SUSPENDED)

    pages = {}
    for address in ("nobody@nhs.net", suspended.user.email):
        page.goto("/login/authenticator-app/forgotten-password/")
        page.get_by_label("Email address").fill(address)
        page.get_by_role("button", name="Continue").click()
        heading(page, "Check your inbox")
        page.get_by_label("One Time Password").fill("12345678")
        page.get_by_role("button", name="Continue").click()
        pages[address] = page.locator("main").inner_text()
        a11y.check(page, f"reset: wrong code for {address}")
    assert pages["nobody@nhs.net"] == pages[suspended.user.email]
    assert "cannot be reset" in body(mailbox.wait_for(suspended.user.email, "cannot be reset"))

    page.goto("/login/authenticator-app/forgotten-password/")
    page.get_by_label("Email address").fill(person.user.email)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("One Time Password").fill(email_code(mailbox, person.user.email))
    page.get_by_role("button", name="Continue").click()
    heading(page, "Check your authenticator app")
    page.get_by_label("Enter verification code").fill(person.wrong_code())
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("The code is not correct.").first).to_be_visible()
    a11y.check(page, "reset: wrong app code")
