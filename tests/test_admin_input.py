"""Bad input in the RA back office: refused with a clear message, never a 500, never a wrong answer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import User
from accounts.roles import RA_MANAGER
from audit.models import AuditEvent, Event, Outcome

USERS = "/admin/accounts/user/"
EVENTS = "/admin/audit/auditevent/"
DOMAINS = "/admin/accounts/allowedemaildomain/"


@pytest.fixture
def manager(ra_staff):
    return ra_staff(RA_MANAGER)


# --- list filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    # lookups no filter offers (NUL bytes and bad regular expressions used to reach PostgreSQL: 500s)
    f"{USERS}?status=%00", f"{USERS}?status__in=%00", f"{USERS}?status__regex=(", f"{USERS}?status=active",
    f"{EVENTS}?event__in=a,%00", f"{EVENTS}?method__regex=(", f"{EVENTS}?outcome__regex=(",
    f"{EVENTS}?actor_uid__regex=(", f"{DOMAINS}?include_subdomains=%00",
    # offered lookups with values the filter does not offer
    f"{USERS}?status__exact=%00", f"{USERS}?status__exact=bogus", f"{USERS}?authenticator=%00",
    f"{USERS}?locked=maybe", f"{USERS}?signed_in=%00", f"{EVENTS}?method=%00", f"{EVENTS}?event__exact=%00",
    f"{EVENTS}?outcome__exact=maybe", f"{EVENTS}?period=1y", f"{DOMAINS}?include_subdomains__exact=x",
])
def test_a_list_refuses_lookups_and_values_its_filters_do_not_offer(manager, query):
    _, client = manager
    response = client.get(query)
    assert response.status_code == 400
    page = response.content.decode()
    assert "This list cannot be filtered that way" in page and "Show the whole list" in page


def test_the_offered_filters_still_narrow_the_lists(manager, make_person):
    _, client = manager
    suspended = make_person(email="suspended@nhs.net", status=User.Status.SUSPENDED).user

    def users(query: str) -> set[int]:
        response = client.get(f"{USERS}?{query}")
        assert response.status_code == 200
        return {user.pk for user in response.context["cl"].result_list}

    assert users("status__exact=suspended") == {suspended.pk}
    assert users("status__exact=suspended&locked=no&signed_in=never&authenticator=authenticator-app") == {suspended.pk}
    assert client.get(f"{EVENTS}?event__exact=signin.succeeded&outcome__exact=success&method=authenticator-app"
                      f"&period=7d").status_code == 200
    assert client.get(f"{DOMAINS}?include_subdomains__exact=1").status_code == 200


@pytest.mark.parametrize("parameter", ["actor_uid", "subject_uid"])
@pytest.mark.parametrize("value", ["\x00", "12345", "abc", "0123456789012", "１２３４５６７８９０１２"])
def test_a_malformed_user_id_shows_no_events_and_says_why(manager, make_person, parameter, value):
    _, client = manager
    person = make_person(email="subject@nhs.net")
    AuditEvent.objects.create(event=Event.USER_CHANGED, subject=person.user, actor=person.user)
    response = client.get(EVENTS, {parameter: value})
    assert response.status_code == 400
    assert list(response.context["cl"].result_list) == []
    page = response.content.decode()
    assert "Enter a 12-digit user ID" in page and "Export these events as CSV" not in page


@pytest.mark.parametrize("query, message", [
    ("to=9999-12-31", "Enter a date from 1900 to 2999"),
    ("from=0001-01-01", "Enter a date from 1900 to 2999"),
    ("from=not-a-date", "Enter a real date, like 2025-03-31"),
    ("to=2025-02-30", "Enter a real date, like 2025-03-31"),
    ("from=%00", "Enter a real date, like 2025-03-31"),
])
def test_a_date_out_of_range_or_malformed_shows_no_events_and_says_why(manager, make_person, query, message):
    _, client = manager
    person = make_person(email="subject@nhs.net")
    AuditEvent.objects.create(event=Event.USER_CHANGED, subject=person.user)
    response = client.get(f"{EVENTS}?{query}")
    assert response.status_code == 400
    assert list(response.context["cl"].result_list) == []
    assert message in response.content.decode()


_LIST_PARAMETERS = {
    USERS: ["status", "status__exact", "status__in", "status__regex", "authenticator", "locked", "signed_in", "q",
            "o", "p"],
    EVENTS: ["event__exact", "event__in", "outcome__exact", "period", "from", "to", "method", "method__regex",
             "actor_uid", "subject_uid", "q", "o", "p"],
    DOMAINS: ["include_subdomains", "include_subdomains__exact", "q"],
}


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_query_string_gives_a_server_error(manager, data):
    _, client = manager
    path = data.draw(st.sampled_from(sorted(_LIST_PARAMETERS)))
    values = st.one_of(st.sampled_from(["\x00", "(", "a,\x00", "9999-12-31", "active", "1"]), st.text(max_size=20))
    query = data.draw(st.dictionaries(st.sampled_from(_LIST_PARAMETERS[path]), values, max_size=3))
    response = client.get(path, query)
    assert response.status_code in (200, 302, 400), (path, query)


# --- the export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["actor_uid=%00", "method__regex=(", "subject_uid=12345", "to=9999-12-31", "q=%00"])
def test_an_export_with_bad_filters_sends_no_file_and_is_audited_as_refused(transactional_db, seeded_allow_list,
                                                                            ra_staff, query):
    manager, client = ra_staff(RA_MANAGER)
    response = client.get(f"{EVENTS}export/?{query}")
    assert response.status_code == 400 and not response.streaming
    assert "Nothing was exported" in response.content.decode()
    refused = AuditEvent.objects.get(event=Event.AUDIT_EXPORTED)
    assert refused.outcome == Outcome.FAILURE and refused.actor == manager.user and refused.details["rows"] == 0
    assert not AuditEvent.objects.filter(event=Event.AUDIT_EXPORT_STARTED).exists()
