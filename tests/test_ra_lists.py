"""The RA lists make the same number of queries with 10 and with 1,000 rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from allauth.account.models import EmailAddress
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User, generate_uid
from accounts.roles import RA_MANAGER
from audit.models import AuditEvent, Event
from authenticators.models import AuthenticatorApp


def fill(count: int) -> None:
    users = User.objects.bulk_create(
        User(uid=generate_uid(), email=f"bulk{n}-{generate_uid()}@nhs.net", first_name="Bulk", last_name=f"User{n}",
             password="!", last_login=timezone.now() if n % 2 else None)
        for n in range(count)
    )
    EmailAddress.objects.bulk_create(EmailAddress(user=user, email=user.email, primary=True) for user in users)
    AuthenticatorApp.objects.bulk_create(
        AuthenticatorApp(user=user, name="Microsoft Authenticator", key="00" * 20, confirmed=True) for user in users[::3]
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(event=Event.SIGNIN_SUCCEEDED, subject=user, actor=user, method="authenticator-app", aal=2)
        for user in users
    )


def queries_for(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize("path", [
    "/admin/accounts/user/",
    "/admin/accounts/user/?authenticator=authenticator-app",
    "/admin/accounts/user/?locked=no&signed_in=never",
    "/admin/accounts/user/?q=Bulk",
    "/admin/accounts/user/?q=bulk.5%40nhs.net",
    "/admin/audit/auditevent/",
    "/admin/audit/auditevent/?event__exact=signin.succeeded&period=7d",
])
def test_the_lists_do_not_grow_with_the_rows(ra_staff, path):
    _, client = ra_staff(RA_MANAGER)
    fill(10)
    few = queries_for(client, path)
    fill(990)
    assert queries_for(client, path) == few


# 23:30 UTC in British Summer Time is already the next day in London, and so is the same time 40 days
# before: the date filters take days in the service's time zone, and so must the test.
LATE_IN_SUMMER = datetime(2025, 6, 15, 23, 30, tzinfo=UTC)


def test_audit_filters_narrow_the_list(ra_staff, make_person):
    with time_machine.travel(LATE_IN_SUMMER, tick=True):
        _, client = ra_staff(RA_MANAGER)
        person = make_person(email="subject@nhs.net")
        forty_days_ago = timezone.now() - timedelta(days=40)
        old = AuditEvent.objects.create(event=Event.USER_CHANGED, subject=person.user, at=forty_days_ago)
        new = AuditEvent.objects.create(event=Event.USER_CHANGED, subject=person.user)

        def shown(query: str) -> set[int]:
            return {event.pk for event in client.get(f"/admin/audit/auditevent/?{query}").context["cl"].result_list}

        assert shown(f"subject_uid={person.user.uid}") == {old.pk, new.pk}
        assert shown(f"subject_uid={person.user.uid}&period=30d") == {new.pk}
        day = timezone.localdate(forty_days_ago).isoformat()
        assert shown(f"subject_uid={person.user.uid}&from={day}&to={day}") == {old.pk}
        today = timezone.localdate().isoformat()
        assert shown(f"subject_uid={person.user.uid}&from={today}") == {new.pk}
        assert shown(f"subject_uid={person.user.uid}&to={today}") == {old.pk, new.pk}
        assert shown(f"subject_uid={person.user.uid}&from=not-a-date") == set()  # never as if unfiltered
        assert shown("q=subject@nhs.net&event__exact=user.changed") == {old.pk, new.pk}


def test_the_user_search_finds_by_uid_email_hr_number_and_name(ra_staff, make_person):
    _, client = ra_staff(RA_MANAGER)
    person = make_person(email="mary.jones@nhs.net", external_id="ESR-12345")
    User.objects.filter(pk=person.user.pk).update(first_name="Mary", last_name="Jones")
    make_person(email="someone.else@nhs.net")

    def found(term: str) -> set[int]:
        return {user.pk for user in client.get("/admin/accounts/user/", {"q": term}).context["cl"].result_list}

    for term in (person.user.uid, "MARY.JONES@nhs.net", "ESR-12345", "jon", "mary jo"):
        assert found(term) == {person.user.pk}, term
    assert found("nobody@nhs.net") == set()


def test_the_ra_finds_a_person_by_an_address_verified_on_their_profile(ra_staff, make_person):
    """An address verified on the profile is the person's as much as their Care Identity e-mail
    (User.objects.holding_email), yet the search found no one by it. An unverified one is nobody's yet."""
    from allauth.account.models import EmailAddress

    _, client = ra_staff(RA_MANAGER)
    person = make_person()
    EmailAddress.objects.create(user=person.user, email="edith.cavell@gmail.com", verified=True, primary=False)
    EmailAddress.objects.create(user=person.user, email="edith@hotmail.com", verified=False, primary=False)

    def found(term: str) -> set[int]:
        return {user.pk for user in client.get("/admin/accounts/user/", {"q": term}).context["cl"].result_list}

    assert found("Edith.Cavell@gmail.com") == {person.user.pk}
    assert found("EDITH.CAVELL@nhs.net") == {person.user.pk}
    assert found("edith@hotmail.com") == set()


def test_the_user_list_shows_each_persons_registered_types(ra_staff, make_person):
    _, client = ra_staff(RA_MANAGER)
    with_app = make_person(email="with.app@nhs.net")
    without = make_person(email="without.app@nhs.net")
    AuthenticatorApp.objects.filter(user=without.user).delete()
    page = client.get("/admin/accounts/user/")
    shown = {user.pk: [kind.name for kind in user.registered_types] for user in page.context["cl"].result_list}
    assert shown[with_app.user.pk] == ["Microsoft Authenticator"] and shown[without.user.pk] == []
    assert "Microsoft Authenticator" in page.content.decode()


def test_an_audit_event_page_names_its_time_in_the_service_time_zone(ra_staff, make_person):
    with time_machine.travel(LATE_IN_SUMMER, tick=False):
        _, client = ra_staff(RA_MANAGER)
        event = AuditEvent.objects.create(event=Event.USER_CHANGED, subject=make_person(email="subject@nhs.net").user)
        page = client.get(f"/admin/audit/auditevent/{event.pk}/change/").content.decode()
    assert "2025-06-16 00:30:00 Care Identity details changed" in page


def test_the_whole_trail_is_counted_from_postgresqls_estimate_not_by_a_full_count(ra_staff):
    """With millions of events, the list RAs open first must not COUNT(*) them all; leaving the sealer's
    heartbeats out of it is not a filter that makes it count."""
    from .conftest import require

    require(connection.vendor == "postgresql", "PostgreSQL (its row estimate)")
    _, client = ra_staff("Auditor")
    AuditEvent.objects.bulk_create(AuditEvent(event=Event.SIGNED_OUT, method="authenticator-app") for _ in range(10_050))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_auditevent")

    def counts(path: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper() and "audit_auditevent" in q["sql"]]

    assert counts("/admin/audit/auditevent/") == []
    assert counts("/admin/audit/auditevent/?p=2") == []
    assert counts(f"/admin/audit/auditevent/?event__exact={Event.SIGNED_OUT.value}") != []  # a filter: counted
