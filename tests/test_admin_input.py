"""Bad input in the RA back office: refused with a clear message, never a 500, never a wrong answer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import AllowedEmailDomain, User
from accounts.roles import RA_MANAGER
from accounts.validators import BLANK_CHARACTERS
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


@pytest.mark.parametrize("path", [EVENTS, f"{EVENTS}export/"])
def test_a_refused_lookup_is_logged_as_a_security_event_by_the_list_and_the_export_alike(manager, path, caplog):
    _, client = manager
    response = client.get(f"{path}?method__regex=(")
    assert response.status_code == 400
    [logged] = [record for record in caplog.records if record.name.startswith("django.security")]
    assert logged.name == "django.security.DisallowedModelAdminLookup" and logged.levelname == "WARNING"
    assert logged.getMessage() == "This list has no filter called “method__regex”."


# --- free text people will read -------------------------------------------------------------------

HIDDEN = ["\r", "\n", "\x07", "\x1b", "\u202e", "\u200b", "\u00a0"]
NAME_FIELDS = [("title", "Title"), ("first_name", "First name"), ("last_name", "Last name")]


@pytest.mark.parametrize("character", HIDDEN, ids=ascii)
@pytest.mark.parametrize("field, label", NAME_FIELDS)
def test_creating_a_user_refuses_control_and_invisible_characters(manager, character, field, label, mailbox):
    _, client = manager
    details = {"email": "new.starter@nhs.net", "title": "Dr", "first_name": "New", "last_name": "Starter"}
    details[field] = f"Ne{character}w"
    response = client.post(f"{USERS}add/", details)
    assert response.status_code == 200
    assert f"{label} must not contain control or invisible characters" in response.content.decode()
    assert not User.objects.filter(email="new.starter@nhs.net").exists() and mailbox.messages == []


@pytest.mark.parametrize("character", HIDDEN, ids=ascii)
@pytest.mark.parametrize("field, label", NAME_FIELDS)
def test_changing_a_user_refuses_control_and_invisible_characters(manager, person, character, field, label):
    _, client = manager
    details = {"title": "", "first_name": "Edith", "last_name": "Cavell", "email": person.user.email,
               "reason": "name corrected"}
    details[field] = f"Ca{character}vell"
    response = client.post(f"{USERS}{person.user.pk}/change/", details)
    assert f"{label} must not contain control or invisible characters" in response.content.decode()
    person.user.refresh_from_db()
    assert (person.user.title, person.user.first_name, person.user.last_name) == ("", "Edith", "Cavell")
    assert not AuditEvent.objects.filter(event=Event.USER_CHANGED).exists()


@pytest.mark.parametrize("character", ["\x07", "\x1b", "\u202e", "\u200b", "\u2066"], ids=ascii)
def test_reasons_refuse_control_and_invisible_characters(manager, person, character):
    _, client = manager
    response = client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": f"asked by{character} HR"})
    assert response.status_code == 400
    assert "Reason must not contain control or invisible characters" in response.content.decode()
    person.user.refresh_from_db()
    assert person.user.status == User.Status.ACTIVE
    response = client.post(f"{USERS}{person.user.pk}/link/", {"kind": "authenticator-app", "purpose": "emailed",
                                                               "reason": f"phoned{character}"})
    assert response.status_code == 400
    assert "Reason must not contain control or invisible characters" in response.content.decode()
    assert not AuditEvent.objects.filter(event__in=[Event.USER_SUSPENDED, Event.LINK_ISSUED]).exists()


def test_line_breaks_in_a_reason_box_are_spacing(manager, person):
    _, client = manager
    response = client.post(f"{USERS}{person.user.pk}/suspend/", {"reason": "asked by HR\r\n\r\nticket 123\t"})
    assert response.status_code == 302
    assert AuditEvent.objects.get(event=Event.USER_SUSPENDED).details["reason"] == "asked by HR ticket 123"


@pytest.mark.parametrize("domain, message", [
    ("trust\u200b.nhs.uk", "Domain must not contain control or invisible characters"),
    ("trust\n.nhs.uk", "Domain must not contain control or invisible characters"),
    ("trust\x07.nhs.uk", "Domain must not contain control or invisible characters"),
    ("tru st.nhs.uk", "Enter a domain such as nhs.net"),
], ids=ascii)
def test_the_allow_list_refuses_control_and_invisible_characters(manager, domain, message):
    _, client = manager
    response = client.post(f"{DOMAINS}add/", {"domain": domain})
    assert message in response.content.decode()
    assert not AllowedEmailDomain.objects.filter(domain__startswith="tru").exists()


_HIDDEN_CHARACTERS = st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Co"], exclude_characters=" ")
_VISIBLE_NAME = st.text(st.characters(categories=["L", "M", "N", "P"], exclude_characters=BLANK_CHARACTERS) | st.just(" "),
                        min_size=1, max_size=100).filter(lambda name: name.strip() == name)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.text(max_size=5), hidden=_HIDDEN_CHARACTERS, after=st.text(max_size=5))
@example(before="", hidden="\x00", after="")
def test_no_hidden_character_gets_into_a_name(manager, person, before, hidden, after):
    _, client = manager
    name = f"A{before}{hidden}{after}Z"
    response = client.post(f"{USERS}{person.user.pk}/change/", {"first_name": "Edith", "last_name": name,
                                                                "email": person.user.email, "reason": "married"})
    # Django's own check refuses a NUL before the field's validators run, with its own message.
    refusal = "Null characters are not allowed" if "\x00" in name else "Last name must not contain control or invisible characters"
    assert response.status_code == 200 and refusal in response.content.decode()
    person.user.refresh_from_db()
    assert person.user.last_name == "Cavell"


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_VISIBLE_NAME)
def test_names_in_any_script_are_kept_as_typed(manager, person, name):
    _, client = manager
    response = client.post(f"{USERS}{person.user.pk}/change/", {"first_name": "Edith", "last_name": name,
                                                                "email": person.user.email, "reason": "married"})
    assert response.status_code == 302, response.content.decode()[-3000:]
    person.user.refresh_from_db()
    assert person.user.last_name == name
