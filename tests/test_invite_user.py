"""`manage.py invite_user`: how a first user starts."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from audit.models import AuditEvent, Event
from authenticators.models import RegistrationLink

from .conftest import body


def invite(**options) -> str:
    out = StringIO()
    call_command("invite_user", stdout=out, **options)
    return out.getvalue()


def test_it_creates_the_user_prints_the_uid_and_emails_a_24_hour_link(transactional_db, seeded_allow_list, mailbox):
    out = invite(email="Mary.Seacole@NHS.net", first_name="Mary", last_name="Seacole", title="Ms")
    user = User.objects.get()
    assert re.fullmatch(r"[1-9]\d{11}", user.uid)
    assert user.uid in out
    assert (user.email, user.title, user.first_name, user.last_name) == ("mary.seacole@nhs.net", "Ms", "Mary", "Seacole")
    assert not user.has_usable_password()
    link = RegistrationLink.objects.get(user=user)
    assert link.kind == "authenticator-app" and link.purpose == "invitation"
    assert abs((link.expires_at - link.created_at).total_seconds() - 24 * 3600) < 1
    message = mailbox.wait_for("mary.seacole@nhs.net", "Set up your NHS Care Identity")
    assert link.url in body(message)
    assert AuditEvent.objects.filter(event=Event.USER_INVITED, subject=user).exists()


def test_the_link_lifetime_comes_from_the_setting(transactional_db, seeded_allow_list, settings):
    from datetime import timedelta

    settings.CAREID_INVITATION_LINK_TTL = timedelta(hours=2)
    invite(email="a@nhs.net", first_name="A", last_name="B")
    link = RegistrationLink.objects.get()
    assert abs((link.expires_at - link.created_at).total_seconds() - 7200) < 1


def test_an_address_outside_the_allow_list_is_refused_and_nothing_is_created(db):
    with pytest.raises(CommandError, match="This email domain is not on the Care Identity allow list"):
        invite(email="someone@example.com", first_name="A", last_name="B")
    assert not User.objects.exists() and not AuditEvent.objects.exists()


def test_an_address_that_is_taken_is_refused(db, person):
    with pytest.raises(CommandError, match="already exists"):
        invite(email=person.user.email.upper(), first_name="A", last_name="B")
    assert User.objects.count() == 1


def test_empty_names_are_refused(db):
    with pytest.raises(CommandError, match="must not be empty"):
        invite(email="a@nhs.net", first_name=" ", last_name="B")
    assert not User.objects.exists()


def test_uids_are_unique_and_random(db):
    for n in range(20):
        invite(email=f"person{n}@nhs.net", first_name="A", last_name="B")
    uids = list(User.objects.values_list("uid", flat=True))
    assert len(set(uids)) == 20 and all(re.fullmatch(r"[1-9]\d{11}", uid) for uid in uids)


def test_demo_data_invites_the_demo_people_once_then_sends_fresh_links(db, settings):
    settings.DEBUG = True  # make run's
    out = StringIO()
    call_command("demo_data", stdout=out)
    assert out.getvalue().count("Registration link: http") == 2
    assert User.objects.get(email="mary.seacole@nhs.net").groups.filter(name="RA Manager").exists()
    out = StringIO()
    call_command("demo_data", stdout=out)
    assert out.getvalue().count("new registration link http") == 2
    assert User.objects.count() == 2 and RegistrationLink.objects.count() == 4


def test_grant_role_gives_and_takes_a_role(db, person):
    out = StringIO()
    call_command("grant_role", email=person.user.email, role="Auditor", stdout=out)
    person.user.refresh_from_db()
    assert person.user.is_staff and list(person.user.groups.values_list("name", flat=True)) == ["Auditor"]
    call_command("grant_role", email=person.user.email, role="Auditor", remove=True, stdout=out)
    person.user.refresh_from_db()
    assert not person.user.is_staff and not person.user.groups.exists()
    with pytest.raises(CommandError, match="No Care Identity"):
        call_command("grant_role", email="nobody@nhs.net", role="Auditor")


def test_an_invitation_that_cannot_be_delivered_yet_is_owed_not_lost(transactional_db, seeded_allow_list, settings):
    from accounts.flows import invite_user
    from accounts.models import OutgoingEmail

    settings.EMAIL_PORT = 9  # nothing listens: every send fails
    user, link = invite_user(email="undeliverable@nhs.net", first_name="A", last_name="B")
    assert User.objects.filter(pk=user.pk).exists()  # the Care Identity itself was created
    email = OutgoingEmail.objects.get(user=user, kind="invitation")
    assert email.state == OutgoingEmail.State.QUEUED and email.attempts == 1  # tried, and owed again
    # Given up only after CAREID_EMAIL_GIVE_UP_AFTER: then it counts as not sent (tests/test_outbox.py).


def test_it_refuses_control_and_invisible_characters_in_names(transactional_db, seeded_allow_list, mailbox):
    with pytest.raises(CommandError, match="First name must not contain control or invisible characters"):
        invite(email="mary.seacole@nhs.net", first_name="Ma\u202ery", last_name="Seacole")
    assert not User.objects.exists() and mailbox.messages == []


def test_demo_data_registers_the_demo_ers_once(db, settings):
    from audit.models import AuditEvent, Event
    from oidc.models import AuthMethod, RelyingService

    settings.DEBUG = True  # make run's

    call_command("demo_data", stdout=StringIO())
    service = RelyingService.objects.get(pk="demo-ers")
    assert service.auth_method == AuthMethod.PRIVATE_KEY_JWT
    assert service.jwks_uri == "http://127.0.0.1:8001/jwks.json"
    assert service.get_redirect_uris() == ["http://127.0.0.1:8001/callback"]
    assert service.get_post_logout_redirect_uris() == ["http://127.0.0.1:8001/"]
    assert service.backchannel_logout_uri == "http://127.0.0.1:8001/backchannel-logout"
    assert service.get_scopes() == ["openid", "profile", "email", "nhsperson"]
    out = StringIO()
    call_command("demo_data", stdout=out)
    assert "Demo eRS 'demo-ers' is registered" in out.getvalue()
    assert AuditEvent.objects.filter(event=Event.CLIENT_CHANGED).count() == 1


def test_demo_data_refuses_to_run_outside_local_development(db, settings):
    """It makes an RA Manager at a real NHSmail address, e-mails it an invitation and registers a service at
    loopback addresses: never into a production database (DEBUG off)."""
    settings.DEBUG = False
    with pytest.raises(CommandError, match="local development"):
        call_command("demo_data", stdout=StringIO())
    assert not User.objects.exists()
