"""The registration authority back office in a real Chromium, as an RA Agent uses it.

An RA Agent signs in through CIS2 Authentication (/login/?goto=/admin/, "Authenticator app", e-mail
and password, 6-digit code), creates a Care Identity with "Add user" (the invitation goes out through
the real SMTP server), signs in again (the sign-in is more than 5 minutes old by then) to issue a
registration link to use in the person's presence, and suspends the person with a reason. axe-core
checks every admin page on the way.

Unlike the journey tests, this page's context keeps the site's Content-Security-Policy in force (no
bypass_csp), so the admin is exercised under the real policy: a CSP report in the browser console on
an admin page, or an uncaught script error there, fails the test. axe is injected with
page.evaluate (DevTools protocol, not governed by the policy); its own CSSOM preload then adds
<style> elements for @import-ed sheets (the admin's forms.css imports widgets.css), which the policy
refuses: those reports come from axe, not from the admin, and are set aside while axe runs.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from ..conftest import body
from .conftest import BrowserConsole, choose_the_app, heading, sign_in_with_the_app

USERS = "/admin/accounts/user/"
NEW_EMAIL = "florence.nightingale@nhs.net"
REASON = "Left the trust"
LINK_REASON = "Identity checked in person"


def age_the_sign_in(page: Page, minutes: int) -> None:
    """As if this browser had signed in `minutes` ago (and been in use since)."""
    from importlib import import_module

    from django.conf import settings

    key = next(cookie["value"] for cookie in page.context.cookies() if cookie["name"] == settings.SESSION_COOKIE_NAME)
    session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    session["careid_auth"] = {**session["careid_auth"], "at": time.time() - minutes * 60}
    session.save()


@pytest.fixture
def agent(transactional_db, seeded_roles, seeded_allow_list, make_person):
    """An RA Agent (staff, RA Agent role) with a password and an Authenticator app; not signed in."""
    from django.contrib.auth.models import Group

    from accounts.roles import RA_AGENT

    person = make_person(email="ra.agent@nhs.net", is_staff=True)
    person.user.groups.add(Group.objects.get(name=RA_AGENT))
    return person


def test_ra_agent_creates_a_user_issues_a_link_and_suspends(enforcing_page: Page, agent, mailbox, a11y, base_url):
    from accounts.models import User
    from audit.models import AuditEvent, Event
    from authenticators.models import RegistrationLink

    page = enforcing_page
    console = BrowserConsole(page, counts=lambda url: urlsplit(url).path.startswith("/admin/"))

    # Sign in as a person does, through CIS2 Authentication, and land on the admin.
    page.goto("/login/?goto=/admin/")
    choose_the_app(page)
    sign_in_with_the_app(page, agent)

    expect(page).to_have_url(base_url + "/admin/")
    heading(page, "Registration authority")
    console.check(a11y, "admin index")

    # The user list, then "Add user".
    page.get_by_role("link", name="Users", exact=True).first.click()
    expect(page).to_have_url(base_url + USERS)
    heading(page, "Select user to change")
    console.check(a11y, "user list")
    page.get_by_role("link", name="Add user").click()
    heading(page, "Add user")
    console.check(a11y, "add user form")
    page.get_by_label("Email").fill(NEW_EMAIL)
    page.get_by_label("First name").fill("Florence")
    page.get_by_label("Last name").fill("Nightingale")
    page.get_by_role("button", name="Save", exact=True).click()

    # Saved: back on the list, with the new Care Identity in it.
    heading(page, "Select user to change")
    expect(page).to_have_url(base_url + USERS)
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    user = User.objects.get(email=NEW_EMAIL)
    row = page.get_by_role("row").filter(has_text=NEW_EMAIL)
    expect(row).to_contain_text("Florence Nightingale")
    expect(row).to_contain_text("Active")
    row.get_by_role("link", name=user.uid).click()

    # The person's page, with the RA actions.
    heading(page, "Change user")
    expect(page).to_have_url(base_url + f"{USERS}{user.pk}/change/")
    console.check(a11y, "change user page")

    # A link hands the profile to whoever opens it: the RA signed in 20 minutes ago signs in again first, and
    # comes back to the page.
    age_the_sign_in(page, 20)
    page.get_by_role("link", name="Issue a registration link").click()
    heading(page, "CIS2 Authentication")
    expect(page.get_by_text("For your security, sign in again to continue.")).to_be_visible()
    choose_the_app(page)
    sign_in_with_the_app(page, agent)
    expect(page).to_have_url(base_url + f"{USERS}{user.pk}/link/")

    # A link for the Authenticator app, to open now, in front of the RA: shown on the page.
    heading(page, "Issue a registration link")
    console.check(a11y, "issue a registration link form")
    page.get_by_label("Authenticator type").select_option(label="Microsoft Authenticator")
    page.get_by_role("radio", name=re.compile(r"^Now, in front of me")).check()
    page.get_by_label("Reason").fill(LINK_REASON)
    page.get_by_role("button", name="Issue the link").click()

    heading(page, "Registration link issued")
    link = RegistrationLink.objects.get(user=user, purpose=RegistrationLink.Purpose.PRESENCE)
    assert link.url.startswith(base_url + "/register/")
    expect(page.locator("#registration-link")).to_have_text(link.url)
    expect(page.get_by_role("link", name=link.url)).to_have_attribute("href", link.url)
    console.check(a11y, "registration link issued page")

    # Suspend, with a reason.
    page.get_by_role("link", name="Back to Florence Nightingale").click()
    heading(page, "Change user")
    page.get_by_role("link", name="Suspend", exact=True).click()
    heading(page, "Suspend this Care Identity")
    console.check(a11y, "suspend form")
    page.get_by_role("button", name="Suspend", exact=True).click()  # no reason yet: said as the admin's forms say it
    expect(page).to_have_title(re.compile(r"^Error: Suspend this Care Identity"))
    expect(page.locator(".errornote")).to_have_text("Please correct the error below.")
    expect(page.locator("#id_reason_error")).to_have_text("Give a reason")
    console.check(a11y, "suspend form, no reason")
    page.get_by_label("Reason").fill(REASON)
    page.get_by_role("button", name="Suspend", exact=True).click()

    heading(page, "Change user")
    expect(page).to_have_url(base_url + f"{USERS}{user.pk}/change/")
    expect(page.locator(".messagelist .success")).to_contain_text("Suspend: done for")
    expect(page.locator(".field-status .readonly")).to_have_text("Suspended")
    expect(page.get_by_role("link", name="Reinstate", exact=True)).to_be_visible()
    console.check(a11y, "change user page, suspended")

    page.get_by_role("link", name="Users", exact=True).first.click()
    heading(page, "Select user to change")
    expect(page.get_by_role("row").filter(has_text=NEW_EMAIL)).to_contain_text("Suspended")
    console.check(a11y, "user list, suspended")

    # The database: the Care Identity, the link and the audit trail, all by this RA Agent.
    user.refresh_from_db()
    assert (user.first_name, user.last_name, user.status) == ("Florence", "Nightingale", User.Status.SUSPENDED)
    assert (link.kind, link.issued_by, link.used_at) == ("authenticator-app", agent.user, None)
    events = {event.event: event for event in AuditEvent.objects.filter(subject=user)}
    assert {Event.USER_CREATED, Event.USER_INVITED, Event.LINK_ISSUED, Event.USER_SUSPENDED} <= set(events)
    for kind in (Event.USER_CREATED, Event.USER_INVITED, Event.USER_SUSPENDED):
        assert events[kind].actor == agent.user, kind
    assert AuditEvent.objects.filter(event=Event.LINK_ISSUED, subject=user, actor=agent.user,
                                     details__purpose="presence", details__reason=LINK_REASON).exists()
    assert events[Event.USER_SUSPENDED].details["reason"] == REASON

    # The mailbox: the invitation (with its own link, not the one shown), then the suspension notice.
    invitation = body(mailbox.wait_for(NEW_EMAIL, "Set up your NHS Care Identity"))
    assert re.search(re.escape(base_url) + r"/register/\S+/", invitation)
    assert link.url not in invitation
    assert REASON in body(mailbox.wait_for(NEW_EMAIL, "Your Care Identity has been suspended"))

    # Suspend selected: Florence (suspended already) and the RA Agent (their own Care Identity). The Reason box
    # is read with its hint; neither is suspended, and the list says whom it left and why.
    page.get_by_role("row").filter(has_text=NEW_EMAIL).get_by_role("checkbox").check()
    page.get_by_role("row").filter(has_text=agent.user.email).get_by_role("checkbox").check()
    page.get_by_role("combobox", name="Action").select_option(label="Suspend selected Care Identities")
    page.get_by_role("button", name="Go").click()
    heading(page, "Suspend this Care Identity (2 selected)")
    expect(page.get_by_label("Reason")).to_have_accessible_description(re.compile(r"^Kept in the audit trail"))
    console.check(a11y, "bulk suspend: reason")
    page.get_by_role("button", name="Suspend", exact=True).click()
    expect(page).to_have_title(re.compile(r"^Error: Suspend this Care Identity \(2 selected\)"))
    expect(page.get_by_label("Reason")).to_have_accessible_description(re.compile(r"^Kept in the audit trail.*Give a reason$"))
    console.check(a11y, "bulk suspend: no reason")
    page.get_by_label("Reason").fill(REASON)
    page.get_by_role("button", name="Suspend", exact=True).click()
    heading(page, "Select user to change")
    expect(page.locator(".messagelist .info")).to_have_text("Suspend: done for 0 Care Identities.")
    expect(page.locator(".messagelist .warning")).to_have_text([
        re.compile(r"^Suspend: 1 Care Identity left as it was \(you may not act on .*\): " + re.escape(str(agent.user))),
        re.compile(r"^Suspend: 1 Care Identity left as it was \(not active\): Florence Nightingale"),
    ])
    console.check(a11y, "user list, after a bulk action that left everyone as they were")
    assert User.objects.get(pk=agent.user.pk).status == User.Status.ACTIVE

    # The audit trail of the RA's own actions, and one event: read-only, labels a person reads, no "History".
    page.goto(base_url + "/admin/audit/auditevent/?event__exact=user.suspended")
    heading(page, "Select audit event to view")
    console.check(a11y, "audit events")
    page.locator("#result_list tbody th a").first.click()
    heading(page, "View audit event")
    expect(page.get_by_text("IP address:")).to_be_visible()
    expect(page.get_by_text("Authentication assurance level (AAL):")).to_be_visible()
    expect(page.get_by_role("link", name="History")).to_have_count(0)
    console.check(a11y, "audit event")

    # The admin worked under the real Content-Security-Policy.
    assert not console.problems, "\n".join(console.problems)
