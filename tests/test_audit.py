"""The audit trail: written with each change, append-only, read-only in the admin, no secrets."""

from __future__ import annotations

import pytest
from django.db import transaction

from audit.models import AuditEvent, Event, Outcome
from audit.record import record

from .conftest import sign_in


def test_record_keeps_request_facts_and_neutralises_crlf(rf, person):
    request = rf.post("/", HTTP_USER_AGENT="Evil\r\nInjected: yes", REMOTE_ADDR="10.1.2.3")
    request.user = person.user
    event = record(Event.SIGNIN_FAILED, request=request, subject=person.user, outcome=Outcome.FAILURE,
                   method="authenticator-app", reason="wrong\npassword")
    event.refresh_from_db()
    assert event.ip == "10.1.2.3" and event.actor == person.user
    assert "\r" not in event.user_agent and "\n" not in event.user_agent
    assert event.details == {"reason": "wrong password"}


@pytest.mark.parametrize("name", ["password", "otp_code", "secret", "token", "new_password"])
def test_record_refuses_secret_looking_details(db, name):
    with pytest.raises(ValueError):
        record(Event.PASSWORD_SET, **{name: "x"})
    assert not AuditEvent.objects.exists()


def test_events_are_append_only(db):
    event = record(Event.SIGNED_OUT)
    event.event = Event.SIGNIN_SUCCEEDED
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    assert AuditEvent.objects.get().event == Event.SIGNED_OUT


def test_an_event_is_rolled_back_with_its_change(db, person):
    with pytest.raises(RuntimeError), transaction.atomic():
        record(Event.PASSWORD_SET, subject=person.user)
        raise RuntimeError("the change failed")
    assert not AuditEvent.objects.exists()


@pytest.fixture
def staff_client(client, make_person):
    staff = make_person(email="auditor@nhs.net", is_staff=True, is_superuser=True)
    sign_in(client, staff, goto="/admin/")
    return client


def test_the_admin_shows_events_read_only(staff_client):
    event = AuditEvent.objects.filter(event=Event.SIGNIN_SUCCEEDED).first()
    assert staff_client.get("/admin/audit/auditevent/").status_code == 200
    page = staff_client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    # Labels a person reads, and no "History" of changes for an event that never changes.
    assert "IP address:" in page.content.decode() and "Authentication assurance level (AAL):" in page.content.decode()
    assert ">History<" not in page.content.decode() and "Ip:" not in page.content.decode()
    assert staff_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert staff_client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"event": "signout"}).status_code == 403
    assert staff_client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk, event=Event.SIGNIN_SUCCEEDED).exists()


def test_the_allow_list_is_editable_in_the_admin(staff_client):
    response = staff_client.post("/admin/accounts/allowedemaildomain/add/",
                                 {"domain": "Example.ORG.", "include_subdomains": "on", "reason": "new trust"})
    assert response.status_code == 302
    from accounts.models import AllowedEmailDomain

    assert AllowedEmailDomain.objects.get(domain="example.org").include_subdomains


def test_authenticators_appear_in_the_admin_without_their_secrets(staff_client):
    from authenticators.models import AuthenticatorApp

    device = AuthenticatorApp.objects.first()
    page = staff_client.get(f"/admin/authenticators/authenticatorapp/{device.pk}/change/").content.decode()
    assert device.user.email in page or str(device.user.uid) in page
    assert device.key not in page
    assert staff_client.get("/admin/authenticators/authenticatorapp/").status_code == 200
