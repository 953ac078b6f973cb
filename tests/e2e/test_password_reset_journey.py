"""A stranger's wrong passwords lock a Care Identity at the 100th; its owner lifts the lock in Chromium
by resetting the password (e-mailed One Time Password, authenticator app code, new password), then signs
in. axe-core checks every page."""

from __future__ import annotations

import re

from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import User

from .conftest import choose_the_app, heading, sign_in_with_the_app
from .test_authenticator_app_journey import email_code

NEW_PASSWORD = "Lanterns hum along the night corridor"


def test_a_locked_person_resets_their_password_and_signs_in(page: Page, transactional_db, make_person, mailbox, a11y):
    person = make_person(email="florence.nightingale@nhs.net")
    email = person.user.email
    User.objects.filter(pk=person.user.pk).update(password_failures=99, last_signin_failure_at=timezone.now())

    page.goto("/login/authenticator-app/")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill("a stranger's guess")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("Your Care Identity is locked after too many failed sign-in attempts.").first).to_be_visible()
    a11y.check(page, "sign in: locked")

    page.get_by_role("link", name="Forgotten your password?").click()
    heading(page, "Reset your password")
    a11y.check(page, "reset: email address")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Continue").click()

    heading(page, "Check your inbox")
    a11y.check(page, "reset: check your inbox")
    page.get_by_label("One Time Password").fill("00000000")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("The One Time Password is not correct.").first).to_be_visible()
    a11y.check(page, "reset: wrong code")
    page.get_by_label("One Time Password").fill(email_code(mailbox, email))
    page.get_by_role("button", name="Continue").click()

    heading(page, "Check your authenticator app")
    a11y.check(page, "reset: authenticator app")
    page.get_by_label("Enter verification code").fill(person.fresh_code())
    page.get_by_role("button", name="Submit").click()

    heading(page, "Create a new password")
    a11y.check(page, "reset: new password")
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", name="Your password has been changed")).to_be_visible()
    a11y.check(page, "reset: done")
    assert mailbox.wait_for(email, "Your Care Identity password has been changed")

    page.get_by_role("link", name="Sign in").click()
    choose_the_app(page)
    sign_in_with_the_app(page, person, password=NEW_PASSWORD, code=person.code(offset_steps=1))
    heading(page, "Care Identity Management")
    expect(page).to_have_url(re.compile(r"/$"))


def test_the_reset_code_typed_after_a_refused_resend_is_checked(page: Page, transactional_db, seeded_allow_list,
                                                                  make_person, mailbox):
    """As on registration's "Check your inbox": after "You can ask for a new code once a minute", the code
    from the e-mail, typed on that page, is checked."""
    email = make_person(email="florence.nightingale@nhs.net").user.email
    page.goto("/login/authenticator-app/forgotten-password/")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Continue").click()
    heading(page, "Check your inbox")

    page.get_by_role("button", name="Send a new code").click()
    expect(page.get_by_text("You can ask for a new code once a minute")).to_be_visible()

    page.get_by_label("One Time Password").fill(email_code(mailbox, email))
    page.get_by_role("button", name="Continue").click()
    heading(page, "Check your authenticator app")
