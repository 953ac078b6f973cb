"""RA actions in the admin: the change, the audit event (actor, subject, reason), the e-mail, the sessions."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
from urllib.parse import urlencode

import pytest
from django.contrib import messages
from django.test import Client

from accounts.models import User
from accounts.roles import AUDITOR, RA_AGENT, RA_MANAGER
from audit.models import AuditEvent, Event, Outcome
from authenticators.models import AuthenticatorApp, RegistrationLink

from .conftest import body, require, sign_in

USERS = "/admin/accounts/user/"


@pytest.fixture
def agent(transactional_db, seeded_allow_list, ra_staff):
    return ra_staff(RA_AGENT)


@pytest.fixture
def signed_in_person(make_person):
    person = make_person()
    browser = Client()
    sign_in(browser, person)
    assert browser.get("/profile/").status_code == 200
    return person, browser


def event_of(kind, subject):
    return AuditEvent.objects.filter(event=kind, subject=subject).latest("id")


def test_creating_a_user_sends_the_invitation(agent, mailbox):
    agent_person, client = agent
    response = client.post(f"{USERS}add/", {"email": "New.Starter@nhs.net", "title": "Mr", "first_name": "New",
                                            "last_name": "Starter"})
    assert response.status_code == 302
    user = User.objects.get(email="new.starter@nhs.net")
    assert event_of(Event.USER_CREATED, user).actor == agent_person.user
    assert event_of(Event.USER_INVITED, user).actor == agent_person.user
    assert "/register/" in body(mailbox.wait_for(user.email, "Set up your NHS Care Identity"))


@pytest.mark.parametrize("moment", ["before its save", "as it saves"])
def test_add_user_saved_twice_at_once_creates_the_person_once_and_says_so(agent, monkeypatch, mailbox, moment):
    """A double click on Save: both requests found the address free, and the first one committed before the second
    one's save checked the address again (a ValidationError) or inserted the person (an IntegrityError): the RA got
    the error page (500) for a person who had been created and invited after all."""
    import threading

    from django.db import connection

    from accounts import flows

    require(connection.vendor == "postgresql", "PostgreSQL (two requests' transactions at once)")
    _, client = agent
    client.raise_request_exception = False  # what the RA's browser gets
    clicked: list[str] = []

    def first_click_commits_meanwhile() -> None:
        if clicked:
            return
        clicked.append("first")

        def first_click() -> None:
            try:
                flows.invite_user(email="new.starter@nhs.net", first_name="New", last_name="Starter")
            finally:
                connection.close()

        request = threading.Thread(target=first_click)
        request.start()
        request.join()

    if moment == "before its save":  # once this request's form has found the address free
        create_user = flows.create_user
        monkeypatch.setattr(flows, "create_user", lambda **kwargs: (first_click_commits_meanwhile(),
                                                                     create_user(**kwargs))[1])
    else:  # once invite_user has found it free too, just before the INSERT
        validate_values = User.validate_values
        monkeypatch.setattr(User, "validate_values", lambda **values: (first_click_commits_meanwhile(),
                                                                       validate_values(**values))[1])
    response = client.post(f"{USERS}add/", {"email": "new.starter@nhs.net", "first_name": "New",
                                            "last_name": "Starter"})
    assert clicked
    assert response.status_code == 200
    assert "A Care Identity with this email address already exists" in response.content.decode()
    assert User.objects.filter(email="new.starter@nhs.net").count() == 1
    mailbox.wait_for("new.starter@nhs.net", "Set up your NHS Care Identity")
    assert len(mailbox.to("new.starter@nhs.net")) == 1


@pytest.mark.parametrize("email, message", [
    ("someone@example.com", "This email domain is not on the Care Identity allow list"),
    ("edith.cavell@nhs.net", "A Care Identity with this email address already exists"),
])
def test_creating_a_user_with_a_bad_email_says_why(agent, make_person, email, message):
    make_person()
    _, client = agent
    response = client.post(f"{USERS}add/", {"email": email, "first_name": "A", "last_name": "B"})
    assert response.status_code == 200 and message in response.content.decode()
    assert User.objects.count() == 2


def test_suspending_ends_every_session_and_tells_the_person(agent, signed_in_person, mailbox):
    agent_person, client = agent
    person, browser = signed_in_person
    response = client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": "Left the trust"})
    assert response.status_code == 302
    person.user.refresh_from_db()
    assert person.user.status == User.Status.SUSPENDED
    event = event_of(Event.USER_SUSPENDED, person.user)
    assert event.actor == agent_person.user and event.details["reason"] == "Left the trust"
    assert event.details["sessions_ended"] == 1
    assert browser.get("/profile/").status_code == 302
    assert "Left the trust" in body(mailbox.wait_for(person.user.email, "Your Care Identity has been suspended"))
    response = client.post(f"{USERS}{person.user.pk}/reinstate/", {"reason": "Back from leave"})
    person.user.refresh_from_db()
    assert person.user.status == User.Status.ACTIVE
    mailbox.wait_for(person.user.email, "Your Care Identity has been reinstated")


def test_an_action_without_a_reason_changes_nothing(agent, person):
    _, client = agent
    response = client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": ""})
    assert response.status_code == 400 and "Give a reason" in response.content.decode()
    person.user.refresh_from_db()
    assert person.user.status == User.Status.ACTIVE
    assert client.get(f"{USERS}{person.user.pk}/suspend/").status_code == 200  # GET only shows the form


def title_of(response) -> str:
    """The page title as a browser's tab shows it."""
    return " ".join(html.unescape(re.search(r"<title>(.*?)</title>", response.content.decode(), re.S).group(1)).split())


def test_an_action_page_with_an_error_says_so_as_the_admins_own_forms_do(agent, make_person):
    """'Error: ' first in the title and 'Please correct the error below.' above the form, as Django's change form."""
    _, client = agent
    person = make_person(email="mary.seacole@nhs.net")
    AuthenticatorApp.objects.filter(user=person.user).delete()
    assert not title_of(client.get(f"{USERS}{person.user.pk}/suspend/")).startswith("Error")
    for response in [
        client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": ""}),
        client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "emailed"}),
        client.post(USERS, {"action": "suspend_selected", "apply": "1", "reason": "",
                            "_selected_action": [person.user.pk]}),
    ]:
        assert response.status_code == 400 and "Give a reason" in response.content.decode()
        assert title_of(response).startswith("Error: "), title_of(response)
        assert '<p class="errornote">Please correct the error below.</p>' in response.content.decode()


def test_closing_removes_every_authenticator_ends_sessions_and_keeps_the_audit(agent, signed_in_person, mailbox):
    _, client = agent
    person, browser = signed_in_person
    before = AuditEvent.objects.filter(subject=person.user).count()
    response = client.post(f"{USERS}{person.user.pk}/close/", {"reason": "Deceased"})
    assert response.status_code == 302
    person.user.refresh_from_db()
    assert person.user.status == User.Status.CLOSED and not person.user.has_usable_password()
    assert not AuthenticatorApp.objects.filter(user=person.user).exists()
    assert browser.get("/profile/").status_code == 302
    assert event_of(Event.USER_CLOSED, person.user).details["authenticators_removed"] == ["authenticator-app"]
    assert AuditEvent.objects.filter(subject=person.user).count() == before + 1
    mailbox.wait_for(person.user.email, "Your Care Identity has been closed")
    response = client.post(f"{USERS}{person.user.pk}/reinstate/", {"reason": "mistake"})
    assert response.status_code == 400 and "Reinstate does not apply: this Care Identity is closed" in response.content.decode()
    person.user.refresh_from_db()
    assert person.user.status == User.Status.CLOSED


def test_unlocking_clears_the_lock(agent, make_person, mailbox):
    from django.utils import timezone

    _, client = agent
    person = make_person()
    User.objects.filter(pk=person.user.pk).update(locked_at=timezone.now(), password_failures=30)
    assert client.post(f"{USERS}{person.user.pk}/unlock/", {"reason": "Identity checked by phone"}).status_code == 302
    person.user.refresh_from_db()
    assert person.user.locked_at is None and person.user.password_failures == 0
    mailbox.wait_for(person.user.email, "Your Care Identity has been unlocked")


def test_authenticators_are_removed_only_from_the_persons_page(transactional_db, make_person, seeded_roles, mailbox):
    """The generic authenticator admin deletes nothing (no reason, no audit event, no e-mail): a superuser
    removes a key through the person's page, as RA staff do."""
    from authenticators.models import SecurityKey

    operator = make_person(email="operator@nhs.net", is_staff=True, is_superuser=True)
    client = Client()
    assert sign_in(client, operator, goto="/admin/").url == "/admin/"
    person = make_person(email="key.holder@nhs.net")
    key = SecurityKey.objects.create(user=person.user, name="Security key", confirmed=True, credential_id=b"\x01" * 32,
                                     public_key=b"\x02", user_handle=b"\x03" * 32)

    assert client.post(f"/admin/authenticators/securitykey/{key.pk}/delete/", {"post": "yes"}).status_code == 403
    listing = client.get("/admin/authenticators/securitykey/")
    assert "delete_selected" not in listing.content.decode()
    client.post("/admin/authenticators/securitykey/", {"action": "delete_selected", "_selected_action": [key.pk],
                                                        "post": "yes"})
    assert SecurityKey.objects.filter(pk=key.pk).exists()
    assert not AuditEvent.objects.filter(event=Event.AUTHENTICATOR_REMOVED).exists()

    response = client.post(f"{USERS}{person.user.pk}/authenticators/security-key/remove/", {"reason": "Lost key"})
    assert response.status_code == 302 and not SecurityKey.objects.filter(pk=key.pk).exists()
    event = event_of(Event.AUTHENTICATOR_REMOVED, person.user)
    assert event.actor == operator.user and event.details["reason"] == "Lost key"
    assert "Lost key" in body(mailbox.wait_for(person.user.email, "was removed from your Care Identity"))


def test_removing_a_lost_phone_lets_the_person_register_a_new_one(agent, signed_in_person, mailbox):
    agent_person, client = agent
    person, browser = signed_in_person
    page = client.get(f"{USERS}{person.user.pk}/change/").content.decode()
    assert "Remove Microsoft Authenticator" in page
    response = client.post(f"{USERS}{person.user.pk}/authenticators/authenticator-app/remove/", {"reason": "Lost phone"})
    assert response.status_code == 302
    assert not AuthenticatorApp.objects.filter(user=person.user).exists()
    event = event_of(Event.AUTHENTICATOR_REMOVED, person.user)
    assert event.actor == agent_person.user and event.details["reason"] == "Lost phone"
    assert "Lost phone" in body(mailbox.wait_for(person.user.email, "was removed from your Care Identity"))
    # The RA issues a link for a new phone in the person's presence.
    response = client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "presence",
                                                              "reason": "new phone, identity checked"})
    link = RegistrationLink.objects.filter(user=person.user).latest("id")
    assert link.url in response.content.decode()
    assert abs((link.expires_at - link.created_at).total_seconds() - 180) < 1
    assert len(mailbox.to(person.user.email)) == 1  # shown, not e-mailed


def test_removing_a_lost_authenticator_signs_out_the_sessions_it_signed_in(agent, make_person, webauthn_site):
    """The person reports their phone stolen; the RA removes the Authenticator app. A session signed in with
    that phone (the thief's, or one left open on a shared PC) must not go on; one signed in with their key does."""
    from authenticators.models import SecurityKey

    from .webauthn_steps import authenticator_for, register
    from .webauthn_steps import sign_in as sign_in_with_key

    _, ra = agent
    person = make_person()
    thief, own = Client(), Client()
    sign_in(thief, person)
    sign_in(own, person)
    key = authenticator_for("security-key", webauthn_site)
    assert register(own, "security-key", key).status_code == 302
    with_key = Client()
    assert sign_in_with_key(with_key, "security-key", key, person.user.email).status_code == 302
    response = ra.post(f"{USERS}{person.user.pk}/authenticators/authenticator-app/remove/", {"reason": "Phone stolen"},
                       follow=True)
    assert not AuthenticatorApp.objects.filter(user=person.user).exists()
    assert SecurityKey.objects.filter(user=person.user).exists()
    assert (f"Microsoft Authenticator removed from {person.user}. 2 sessions signed in with it were ended."
            in [str(message) for message in response.context["messages"]])
    for browser in (thief, own):
        after = browser.get("/profile/")
        assert after.status_code == 302 and after.url.startswith("/login/")
    assert with_key.get("/profile/").status_code == 200
    event = event_of(Event.AUTHENTICATOR_REMOVED, person.user)
    assert event.details["sessions_ended"] == 2 and event.details["reason"] == "Phone stolen"
    assert not AuditEvent.objects.filter(event=Event.SESSIONS_ENDED).exists()  # the removal's own event says it


def test_an_emailed_link_lasts_24_hours_and_arrives(agent, make_person, mailbox):
    _, client = agent
    person = make_person()
    AuthenticatorApp.objects.filter(user=person.user).delete()
    response = client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "emailed",
                                                              "reason": "new phone"})
    assert "It has been sent to" in response.content.decode()
    link = RegistrationLink.objects.get(user=person.user)
    assert abs((link.expires_at - link.created_at).total_seconds() - 24 * 3600) < 1
    assert link.url in body(mailbox.wait_for(person.user.email, "Your link to register"))


def test_a_registered_type_cannot_get_a_link(agent, person):
    _, client = agent
    response = client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "presence",
                                                              "reason": "new phone, identity checked"})
    assert response.status_code == 400
    assert not RegistrationLink.objects.exists()


def test_issuing_a_link_needs_a_reason_kept_in_the_trail(agent, make_person):
    """Whoever holds the link registers an authenticator on the profile (SECURITY.md: every RA action with
    actor, subject and reason)."""
    agent_person, client = agent
    person = make_person()
    AuthenticatorApp.objects.filter(user=person.user).delete()
    response = client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "emailed"})
    assert response.status_code == 400 and "Give a reason for issuing the link" in response.content.decode()
    assert not RegistrationLink.objects.exists()
    assert not AuditEvent.objects.filter(event=Event.LINK_ISSUED).exists()
    client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "emailed",
                                                   "reason": "lost phone, called the service desk"})
    issued = event_of(Event.LINK_ISSUED, person.user)
    assert issued.actor == agent_person.user and issued.details["reason"] == "lost phone, called the service desk"


def test_the_link_type_is_not_silently_preselected(agent, make_person):
    """An RA working through requests picks "Later", types a reason and sends an iPad link to someone with no
    iPad: the select had no empty choice, so its first type was always sent."""
    _, client = agent
    person = make_person()
    AuthenticatorApp.objects.filter(user=person.user).delete()
    page = client.get(f"{USERS}{person.user.pk}/link/").content.decode()
    select = re.search(r'<select name="kind".*?</select>', page, re.S).group(0)
    assert re.search(r'<option value="" selected>Select an authenticator type</option>', select), select
    response = client.post(f"{USERS}{person.user.pk}/link/", {"kind": "", "purpose": "emailed",
                                                              "reason": "request 42, identity checked"})
    assert response.status_code == 400 and title_of(response).startswith("Error: ")
    assert re.search(r'<ul class="errorlist"[^>]*><li>Select an authenticator type</li></ul>', response.content.decode())
    assert not RegistrationLink.objects.exists() and not AuditEvent.objects.filter(event=Event.LINK_ISSUED).exists()


def test_the_link_page_says_how_long_each_link_lasts_as_configured(agent, make_person, settings):
    from datetime import timedelta

    _, client = agent
    person = make_person()
    settings.CAREID_REGISTRATION_LINK_TTL, settings.CAREID_INVITATION_LINK_TTL = timedelta(minutes=5), timedelta(hours=48)
    page = client.get(f"{USERS}{person.user.pk}/link/").content.decode()
    assert "the link lasts 5 minutes and is shown here" in page and "the link lasts 48 hours" in page


def test_changing_a_persons_email_or_name_needs_a_reason_kept_in_the_trail(agent, make_person, mailbox):
    """A new Care Identity e-mail and then a link hand the profile to whoever holds the new address."""
    agent_person, client = agent
    person = make_person(email="nurse@nhs.net")
    details = {"title": "", "first_name": "Edith", "last_name": "Cavell", "email": "someone.else@nhs.net"}
    response = client.post(f"{USERS}{person.user.pk}/change/", details)
    assert response.status_code == 200 and "Give a reason for changing the email address" in response.content.decode()
    response = client.post(f"{USERS}{person.user.pk}/change/", {**details, "email": "nurse@nhs.net", "last_name": "Smith"})
    assert response.status_code == 200 and "Give a reason for the change" in response.content.decode()
    person.user.refresh_from_db()
    assert (person.user.email, person.user.last_name) == ("nurse@nhs.net", "Cavell")
    assert not AuditEvent.objects.filter(event=Event.USER_CHANGED).exists()

    response = client.post(f"{USERS}{person.user.pk}/change/", {**details, "reason": "new job, HR ticket 42"})
    assert response.status_code == 302
    changed = event_of(Event.USER_CHANGED, person.user)
    assert changed.actor == agent_person.user and changed.details["reason"] == "new job, HR ticket 42"


def test_a_change_refused_shows_the_persons_saved_name_above_what_the_ra_typed(agent, make_person):
    """The heading, the title and the breadcrumbs name the person as stored, not the refused change."""
    _, client = agent
    person = make_person(email="nurse@nhs.net")
    response = client.post(f"{USERS}{person.user.pk}/change/", {
        "title": "Dr", "first_name": "Florence", "last_name": "Nightingale", "email": "nurse@nhs.net"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Give a reason for the change" in page
    saved = f"Edith Cavell ({person.user.uid})"
    assert f"<h2>{saved}</h2>" in page
    assert re.search(r"<title>[^<]*Edith Cavell", page) and "Nightingale" not in re.search(r"<title>([^<]*)</title>", page).group(1)
    assert "Dr Florence Nightingale" not in page
    assert 'name="first_name" value="Florence"' in page and 'name="last_name" value="Nightingale"' in page
    person.user.refresh_from_db()
    assert (person.user.title, person.user.first_name, person.user.last_name) == ("", "Edith", "Cavell")


def test_saving_a_person_unchanged_needs_no_reason_and_records_nothing(agent, person):
    _, client = agent
    response = client.post(f"{USERS}{person.user.pk}/change/", {
        "title": "", "first_name": "Edith", "last_name": "Cavell", "email": person.user.email})
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(event=Event.USER_CHANGED).exists()


def test_bulk_suspend_asks_for_a_reason_then_suspends_each(agent, make_person):
    _, client = agent
    people = [make_person(email=f"bulk{n}@nhs.net") for n in range(3)]
    ids = [str(person.user.pk) for person in people]
    response = client.post(USERS, {"action": "suspend_selected", "_selected_action": ids})
    assert response.status_code == 200 and "Reason" in response.content.decode()
    assert User.objects.filter(status=User.Status.SUSPENDED).count() == 0
    response = client.post(USERS, {"action": "suspend_selected", "_selected_action": ids, "apply": "1",
                                   "reason": "Agency contract ended"})
    assert response.status_code == 302
    assert User.objects.filter(status=User.Status.SUSPENDED).count() == 3
    assert AuditEvent.objects.filter(event=Event.USER_SUSPENDED, details__reason="Agency contract ended").count() == 3



def test_a_bulk_action_says_whom_it_left_as_they_were_and_why(agent, make_person):
    _, client = agent
    people = [make_person(email=f"bulk{n}@nhs.net") for n in range(3)]
    User.objects.filter(pk__in=[people[1].user.pk, people[2].user.pk]).update(status=User.Status.SUSPENDED)
    response = client.post(USERS, {"action": "suspend_selected", "apply": "1", "reason": "Agency contract ended",
                                   "_selected_action": [person.user.pk for person in people]}, follow=True)
    done, left = response.context["messages"]
    assert (done.level, str(done)) == (messages.INFO, "Suspend: done for 1 Care Identity.")
    assert left.level == messages.WARNING and str(left).startswith("Suspend: 2 Care Identities left as they were (not active): ")
    assert str(people[1].user) in str(left) and str(people[2].user) in str(left)
    assert '<li class="warning">Suspend: 2 Care Identities left as they were (not active)' in response.content.decode()

def test_a_bulk_action_on_everyone_the_list_matches_does_it_for_everyone_its_page_listed(agent, make_person,
                                                                                         monkeypatch):
    """"Select all 3 users" on a list longer than a page: the reason page listed all three, but its form posted only
    the people ticked on the page shown, so the action was done for them alone ("done for 2 Care Identities")."""
    from django.contrib import admin

    monkeypatch.setattr(admin.site._registry[User], "list_per_page", 2)
    _, client = agent
    people = [make_person(email=f"bulk{n}@nhs.net").user for n in range(3)]
    User.objects.filter(pk__in=[user.pk for user in people]).update(status=User.Status.SUSPENDED)
    listed = f"{USERS}?status__exact=suspended"
    page = client.get(listed).content.decode()
    ticked = re.findall(r'name="_selected_action" value="(\d+)"', page)
    assert len(ticked) == 2 and "Select all 3 users" in page
    # What the list's script posts once "Select all 3 users" is clicked: the boxes on the page, and select_across.
    page = client.post(listed, {"action": "reinstate_selected", "index": "0", "select_across": "1",
                                "_selected_action": ticked}).content.decode()
    assert "Reinstate this Care Identity (3 selected)" in page and all(user.uid in page for user in people)
    apply = page.index('name="apply"')  # the reason page's form, as the browser posts it
    form = page[page.rindex("<form", 0, apply):page.index("</form>", apply)]
    posted: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form):
        posted.setdefault(name, []).append(html.unescape(value))
    response = client.post(listed, {**posted, "reason": "Back from the agency"}, follow=True)
    assert [str(message) for message in response.context["messages"]] == ["Reinstate: done for 3 Care Identities."]
    assert User.objects.filter(pk__in=[user.pk for user in people], status=User.Status.ACTIVE).count() == 3
    assert AuditEvent.objects.filter(event=Event.USER_REINSTATED, details__reason="Back from the agency").count() == 3


@pytest.mark.parametrize("action", ["suspend_selected", "reinstate_selected", "unlock_selected"])
def test_the_bulk_reason_box_is_described_by_its_help_text_and_its_error(agent, person, action):
    _, client = agent
    for data in ({}, {"apply": "1", "reason": ""}):
        page = client.post(USERS, {"action": action, "_selected_action": [person.user.pk], **data}).content.decode()
        textarea = re.search(r"<textarea[^>]*>", page).group(0)
        described_by = re.search(r'aria-describedby="([^"]*)"', textarea).group(1).split()
        assert "id_reason_helptext" in described_by
        assert all(f'id="{id_}"' in page for id_ in described_by), (textarea, described_by)


def test_changing_the_email_tells_both_addresses(agent, make_person, mailbox):
    _, client = agent
    person = make_person()
    response = client.post(f"{USERS}{person.user.pk}/change/", {
        "first_name": "Edith", "last_name": "Cavell", "email": "edith.new@nhs.net", "reason": "new job at the trust"})
    assert response.status_code == 302
    person.user.refresh_from_db()
    assert person.user.email == "edith.new@nhs.net"
    assert event_of(Event.USER_CHANGED, person.user).details["reason"] == "new job at the trust"
    mailbox.wait_for("edith.cavell@nhs.net", "The email address of your Care Identity has changed")
    mailbox.wait_for("edith.new@nhs.net", "The email address of your Care Identity has changed")


def test_the_audit_trail_is_found_by_an_address_the_person_had_before(agent, ra_staff, make_person):
    """A request quotes the address the person used then: the trail finds their events by it after the RA
    changed it, and after the person changed it themselves, and no one else's."""
    from audit.record import record

    _, client = agent
    person, other = make_person(), make_person(email="mary.seacole@nhs.net")
    asked = record(Event.PASSWORD_RESET_STARTED, subject=person.user)  # at edith.cavell@nhs.net
    record(Event.PASSWORD_RESET_STARTED, subject=other.user)
    assert client.post(f"{USERS}{person.user.pk}/change/", {
        "first_name": "Edith", "last_name": "Cavell", "email": "e.cavell@nhs.net", "reason": "REQ-2 new address"},
    ).status_code == 302
    record(Event.EMAIL_PRIMARY_CHANGED, subject=other.user, before="mary.seacole@nhs.net", after="m.seacole@nhs.net")
    other.user.email = "m.seacole@nhs.net"
    other.user.save(update_fields=["email"])
    _, manager = ra_staff(RA_MANAGER, email="ra.manager@nhs.net")

    def found(address: str) -> set[int]:
        return {event.pk for event in manager.get("/admin/audit/auditevent/", {"q": address}).context["cl"].result_list}

    edith = set(AuditEvent.objects.filter(subject=person.user).values_list("pk", flat=True))
    mary = set(AuditEvent.objects.filter(subject=other.user).values_list("pk", flat=True))
    assert asked.pk in edith and found("Edith.Cavell@nhs.net") == edith == found("e.cavell@nhs.net")
    assert found("mary.seacole@nhs.net") == mary == found("m.seacole@nhs.net")
    assert found("nobody@nhs.net") == set()


# --- what can hand a profile to someone else needs the RA's sign-in at most 5 minutes old ------------------


def _sign_in_minutes_ago(client, minutes: int) -> None:
    session = client.session
    session["careid_auth"] = {**session["careid_auth"], "at": time.time() - minutes * 60}
    session["careid_last_seen"] = time.time()
    session.save()


@pytest.fixture
def stale_agent(db, seeded_allow_list, ra_staff):
    """An RA Agent who signed in 20 minutes ago and is still signed in (the idle timeout is 30 minutes)."""
    agent_person, client = ra_staff(RA_AGENT)
    _sign_in_minutes_ago(client, 20)
    assert client.get(USERS).status_code == 200
    return agent_person, client


def sign_in_again_url(path: str) -> str:
    return f"/login/?{urlencode({'goto': path, 'reauth': '1'})}"


def sign_in_again(client, agent_person, path: str) -> None:
    """Through the real pages, as the RA does from the page that sent them; back to that page."""
    assert "For your security, sign in again to continue." in client.get(f"{sign_in_again_url(path)}&choose=1").content.decode()
    assert sign_in(client, agent_person, goto=path).url == path


def refusal_of(agent_person, subject) -> AuditEvent:
    return AuditEvent.objects.get(event=Event.RA_REFUSED, actor=agent_person.user, subject=subject)


def test_an_ra_whose_sign_in_is_old_changes_a_name_while_a_colleague_changed_the_email(stale_agent, make_person,
                                                                                      ra_staff):
    """The RA left the e-mail as their page showed it: the colleague's new address, which landed meanwhile, is not
    this RA's change, so it needs no recent sign-in, is not checked again, and stays."""
    from accounts import flows as account_flows

    from .forms import form_fields

    agent_person, client = stale_agent
    colleague, _ = ra_staff(RA_AGENT, email="colleague@nhs.net")
    person = make_person(email="nurse@nhs.net")
    page = f"{USERS}{person.user.pk}/change/"
    shown = form_fields(client.get(page).content.decode(), "user_form")
    account_flows.change_user_details(user=User.objects.get(pk=person.user.pk), actor=colleague.user,
                                      changes={"email": "nurse.new@nhs.net"}, reason="new address")

    response = client.post(page, {**shown, "last_name": "Smith", "reason": "married", "_save": "Save"})

    assert response.status_code == 302, response.content.decode()[-3000:]
    person.user.refresh_from_db()
    assert (person.user.email, person.user.last_name) == ("nurse.new@nhs.net", "Smith")
    assert not AuditEvent.objects.filter(event=Event.RA_REFUSED, actor=agent_person.user).exists()
    change = AuditEvent.objects.filter(event=Event.USER_CHANGED, actor=agent_person.user).get()
    assert change.details["fields"] == ["last_name"]


def test_an_ra_changes_a_persons_email_only_after_a_recent_sign_in(stale_agent, make_person):
    agent_person, client = stale_agent
    person = make_person(email="nurse@nhs.net")
    page = f"{USERS}{person.user.pk}/change/"
    details = {"title": "", "first_name": "Edith", "last_name": "Smith", "email": "someone.else@nhs.net",
               "reason": "new job"}
    response = client.post(page, details)
    assert response.status_code == 200
    error = re.search(r'<ul class="errorlist" id="id_email_error">(.*?)</ul>', response.content.decode(), re.S).group(1)
    assert "Sign in again to change the email address: your last sign-in was more than 5 minutes ago." in error
    assert f'<a href="{html.escape(sign_in_again_url(page))}">Sign in again</a>' in error
    # What the RA typed is still there; nothing is saved, and the refusal is in the trail.
    assert re.search(r'<input type="email" name="email" value="someone.else@nhs.net"[^>]* aria-describedby="id_email_error"',
                     response.content.decode())
    assert ">\nnew job</textarea>" in response.content.decode()
    person.user.refresh_from_db()
    assert (person.user.email, person.user.last_name) == ("nurse@nhs.net", "Cavell")
    assert not AuditEvent.objects.filter(event=Event.USER_CHANGED, subject=person.user).exists()
    refused = refusal_of(agent_person, person.user)
    assert refused.outcome == Outcome.FAILURE and refused.details["attempted"] == "change the email address"
    assert refused.details["email"] == "someone.else@nhs.net"

    sign_in_again(client, agent_person, page)
    assert client.post(page, details).status_code == 302
    person.user.refresh_from_db()
    assert (person.user.email, person.user.last_name) == ("someone.else@nhs.net", "Smith")
    assert event_of(Event.USER_CHANGED, person.user).details["reason"] == "new job"


def test_an_ra_removes_a_persons_authenticator_only_after_a_recent_sign_in(stale_agent, make_person):
    agent_person, client = stale_agent
    person = make_person(email="nurse@nhs.net")
    page = f"{USERS}{person.user.pk}/authenticators/authenticator-app/remove/"
    assert client.get(page).url == sign_in_again_url(page)  # before anything is typed
    response = client.post(page, {"reason": "Lost phone"})
    assert response.status_code == 302 and response.url == sign_in_again_url(page)
    assert AuthenticatorApp.objects.filter(user=person.user).exists()
    assert refusal_of(agent_person, person.user).details["attempted"] == "remove an authenticator"

    sign_in_again(client, agent_person, page)
    assert client.get(page).status_code == 200
    assert client.post(page, {"reason": "Lost phone"}).status_code == 302
    assert not AuthenticatorApp.objects.filter(user=person.user).exists()


def test_an_ra_issues_a_registration_link_only_after_a_recent_sign_in(stale_agent, make_person):
    agent_person, client = stale_agent
    person = make_person(email="nurse@nhs.net")
    AuthenticatorApp.objects.filter(user=person.user).delete()
    page = f"{USERS}{person.user.pk}/link/"
    details = {"kind": "authenticator-app", "purpose": "emailed", "reason": "new phone"}
    assert client.get(page).url == sign_in_again_url(page)
    response = client.post(page, details)
    assert response.status_code == 302 and response.url == sign_in_again_url(page)
    assert not RegistrationLink.objects.filter(user=person.user).exists()
    assert refusal_of(agent_person, person.user).details["attempted"] == "issue a registration link"

    sign_in_again(client, agent_person, page)
    assert client.get(page).status_code == 200
    assert "It has been sent to" in client.post(page, details).content.decode()
    assert RegistrationLink.objects.filter(user=person.user).exists()


def test_what_hands_no_profile_over_needs_no_recent_sign_in(stale_agent, make_person):
    """RA staff handle hundreds of requests: names, suspension and unlocking go on as before."""
    agent_person, client = stale_agent
    person = make_person(email="nurse@nhs.net")
    response = client.post(f"{USERS}{person.user.pk}/change/", {
        "title": "", "first_name": "Edith", "last_name": "Smith", "email": "nurse@nhs.net", "reason": "married"})
    assert response.status_code == 302
    assert client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": "Left the trust"}).status_code == 302
    assert client.post(f"{USERS}{person.user.pk}/reinstate/", {"reason": "Back"}).status_code == 302
    person.user.refresh_from_db()
    assert (person.user.last_name, person.user.status) == ("Smith", User.Status.ACTIVE)
    assert not AuditEvent.objects.filter(event=Event.RA_REFUSED).exists()


def test_the_export_is_filtered_streamed_and_formula_safe(transactional_db, seeded_allow_list, ra_staff, make_person):
    from audit.record import record

    _, client = ra_staff(RA_MANAGER)
    person = make_person()
    record(Event.USER_CHANGED, subject=person.user, reason="=HYPERLINK(\"http://evil\")")
    record(Event.USER_CHANGED, subject=person.user, reason="+1", note="@SUM(1)")
    response = client.get(f"/admin/audit/auditevent/export/?event__exact=user.changed&q={person.user.uid}")
    assert response.status_code == 200 and response.streaming
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert lines[0][0] == "time" and len(lines) == 3
    details = [line[lines[0].index("details")] for line in lines[1:]]
    assert all(not cell.startswith(("=", "+", "-", "@")) for line in lines for cell in line)
    assert any("HYPERLINK" in cell for cell in details)


def test_the_export_details_column_is_json(transactional_db, seeded_allow_list, ra_staff, make_person):
    from audit.record import record

    _, client = ra_staff(RA_MANAGER)
    person = make_person()
    record(Event.USER_CHANGED, subject=person.user, reason="REQ-1 new surname", notified=True, previous=None)
    response = client.get(f"/admin/audit/auditevent/export/?event__exact=user.changed&q={person.user.uid}")
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    cell = lines[1][lines[0].index("details")]
    assert json.loads(cell)["reason"] == "REQ-1 new surname", cell
    assert cell == '{"notified":true,"previous":null,"reason":"REQ-1 new surname"}'


EXPORT = "/admin/audit/auditevent/export/"


def exported_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))[1:]


def test_the_export_is_recorded_when_it_starts_and_with_the_rows_it_sent(transactional_db, seeded_allow_list,
                                                                        ra_staff, make_person):
    from audit.record import record

    manager, client = ra_staff(RA_MANAGER)
    person = make_person()
    for n in range(3):
        record(Event.USER_CHANGED, subject=person.user, n=n)
    response = client.get(f"{EXPORT}?event__exact=user.changed")
    chunks = iter(response.streaming_content)
    received = [next(chunks)]  # the header and the first row
    started = AuditEvent.objects.get(event=Event.AUDIT_EXPORT_STARTED)
    assert started.actor == manager.user and started.details["filters"] == "event__exact=user.changed"
    assert not AuditEvent.objects.filter(event=Event.AUDIT_EXPORTED).exists()
    received += list(chunks)
    assert len(list(csv.reader(io.StringIO(b"".join(received).decode())))) == 1 + 3
    finished = AuditEvent.objects.get(event=Event.AUDIT_EXPORTED)
    assert finished.outcome == Outcome.SUCCESS and finished.actor == manager.user
    assert finished.details["rows"] == 3 and finished.details["started_event"] == started.pk


def test_the_export_file_is_named_with_the_local_date_and_time(transactional_db, seeded_allow_list, ra_staff):
    from datetime import UTC, datetime

    import time_machine

    with time_machine.travel(datetime(2025, 6, 15, 23, 30, tzinfo=UTC), tick=False):  # 00:30 BST on the 16th
        _, client = ra_staff(RA_MANAGER)
        response = client.get(EXPORT)
        exported_rows(response)
    assert response["Content-Disposition"] == 'attachment; filename="audit-20250616-003000.csv"'


def test_an_export_cut_short_is_recorded_as_a_failure_with_the_rows_sent(transactional_db, seeded_allow_list,
                                                                        ra_staff, make_person):
    from audit.record import record

    _, client = ra_staff(RA_MANAGER)
    person = make_person()
    for n in range(10):
        record(Event.USER_CHANGED, subject=person.user, n=n)
    response = client.get(f"{EXPORT}?event__exact=user.changed")
    chunks = iter(response.streaming_content)
    received = [next(chunks) for _ in range(3)]  # the header and the first row come as one chunk
    response.close()  # what the web server does when the person's connection drops
    assert len(list(csv.reader(io.StringIO(b"".join(received).decode())))) == 4
    finished = AuditEvent.objects.get(event=Event.AUDIT_EXPORTED)
    assert finished.outcome == Outcome.FAILURE and finished.details["rows"] == 3
    assert finished.details["reason"] == "the download stopped before the end"


def _unreadable_event(subject: User) -> None:
    """An event whose time the driver cannot read (before year 1): a real failure of the database read,
    standing in for a restart or a timeout in the middle of an export. PostgreSQL's: SQLite reads it back as
    nothing rather than failing."""
    from django.db import connection

    require(connection.vendor == "postgresql", "PostgreSQL (a row its driver cannot read)")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO audit_auditevent (at, event, outcome, subject_id, user_agent, method, details) "
                       "VALUES ('0001-01-01 00:00:00+00 BC', 'user.changed', 'success', %s, '', '', '{}')",
                       [subject.pk])


def test_a_database_failure_before_the_first_byte_gets_an_error_page_not_a_file(transactional_db, seeded_allow_list,
                                                                               ra_staff, make_person, live_server,
                                                                               settings):
    """Through a real WSGI server (the live server's): it sends the status with the first chunk, and
    the first chunk comes only once the query has run."""
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    _, client = ra_staff(RA_MANAGER)
    person = make_person()
    _unreadable_event(person.user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    request = Request(f"{live_server.url}{EXPORT}?subject_uid={person.user.uid}",
                      headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"})
    with pytest.raises(HTTPError) as failed:
        urlopen(request, timeout=30)
    assert failed.value.code == 500
    assert not failed.value.headers.get("Content-Type", "").startswith("text/csv")
    assert b"time,event" not in failed.value.read()
    finished = AuditEvent.objects.get(event=Event.AUDIT_EXPORTED)
    assert finished.outcome == Outcome.FAILURE and finished.details["rows"] == 0
    assert finished.details["reason"].startswith("the database failed")


def test_a_database_failure_mid_stream_is_recorded_with_the_rows_sent(transactional_db, seeded_allow_list, ra_staff,
                                                                      make_person):
    from django.db import DatabaseError

    _, client = ra_staff(RA_MANAGER)
    person = make_person()
    AuditEvent.objects.bulk_create(AuditEvent(event=Event.USER_CHANGED, subject=person.user) for _ in range(2001))
    _unreadable_event(person.user)  # the oldest: read in the second batch of 2,000
    response = client.get(f"{EXPORT}?subject_uid={person.user.uid}")
    assert response.status_code == 200
    received = []
    with pytest.raises(DatabaseError):
        for chunk in response.streaming_content:
            received.append(chunk)
    assert len(list(csv.reader(io.StringIO(b"".join(received).decode())))) == 1 + 2000
    finished = AuditEvent.objects.get(event=Event.AUDIT_EXPORTED)
    assert finished.outcome == Outcome.FAILURE and finished.details["rows"] == 2000
    assert finished.details["reason"].startswith("the database failed")


def test_the_user_page_shows_authenticators_and_the_last_50_events(ra_staff, signed_in_person):
    _, client = ra_staff(AUDITOR)
    person, _ = signed_in_person
    _, agent_client = ra_staff(RA_AGENT, email="agent2@nhs.net")
    page = agent_client.get(f"{USERS}{person.user.pk}/change/").content.decode()
    assert "Microsoft Authenticator" in page and "Last 50 audit events" in page and "Signed in" in page
