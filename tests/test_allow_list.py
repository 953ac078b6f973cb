"""The Care Identity e-mail domain allow list: seeded, editable, parsed properly."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.emails import NOT_ON_ALLOW_LIST
from accounts.models import AllowedEmailDomain
from accounts.roles import RA_MANAGER
from audit.models import AuditEvent, Event

DOMAINS = "/admin/accounts/allowedemaildomain/"

SEEDED = [
    "nhs.net", "nhs.uk", "gov.uk", "ac.uk", "mod.uk", "gmail.com", "googlemail.com", "hotmail.com",
    "hotmail.co.uk", "yahoo.com", "yahoo.co.uk", "live.com", "live.co.uk", "outlook.com", "icloud.com",
]


def test_the_data_migration_seeds_the_list(db):
    assert set(AllowedEmailDomain.objects.values_list("domain", flat=True)) == set(SEEDED)
    assert set(AllowedEmailDomain.objects.filter(include_subdomains=True).values_list("domain", flat=True)) == {
        "nhs.uk", "gov.uk", "ac.uk",
    }


@pytest.mark.parametrize(
    "email, normalised",
    [
        ("Florence@NHS.NET", "florence@nhs.net"),
        ("  florence@nhs.net  ", "florence@nhs.net"),
        ("florence@nhs.net.", "florence@nhs.net"),
        ("a@leedsth.nhs.uk", "a@leedsth.nhs.uk"),
        ("a@deep.trust.nhs.uk", "a@deep.trust.nhs.uk"),
        ("a@digital.gov.uk", "a@digital.gov.uk"),
        ("a@ucl.ac.uk", "a@ucl.ac.uk"),
        ("a@nhs.uk", "a@nhs.uk"),
    ],
)
def test_allowed_addresses(db, email, normalised):
    assert AllowedEmailDomain.objects.check_email(email) == normalised


@pytest.mark.parametrize(
    "email",
    [
        "a@nhs.net.evil.com",  # look-alike suffix
        "a@evilnhs.net",  # not a subdomain, just ends with the same letters
        "a@mail.nhs.net",  # nhs.net is exact only
        "a@sub.gmail.com",
        "a@nhs.nеt",  # Cyrillic "е"
        "a@example.com",
        "a@nhs.uk.evil.com",
    ],
)
def test_addresses_outside_the_list_are_refused_with_the_message(db, email):
    with pytest.raises(ValidationError) as error:
        AllowedEmailDomain.objects.check_email(email)
    assert error.value.messages == [NOT_ON_ALLOW_LIST]


@pytest.mark.parametrize("email", ["", "nhs.net", "@nhs.net", "a@", "a@@nhs.net", "a@nhs..net", "a b@nhs.net", "a@.nhs.net", "a@uk"])
def test_malformed_addresses_are_refused_as_malformed(db, email):
    with pytest.raises(ValidationError) as error:
        AllowedEmailDomain.objects.check_email(email)
    assert error.value.code == "invalid"


def test_an_edited_list_takes_effect_at_once(db):
    AllowedEmailDomain.objects.create(domain="example.org", include_subdomains=True)
    assert AllowedEmailDomain.objects.check_email("a@team.example.org") == "a@team.example.org"
    AllowedEmailDomain.objects.filter(domain="gmail.com").delete()
    with pytest.raises(ValidationError):
        AllowedEmailDomain.objects.check_email("a@gmail.com")


def test_admin_entries_are_normalised(db):
    entry = AllowedEmailDomain(domain="  Example.ORG. ")
    entry.full_clean()
    assert entry.domain == "example.org"
    with pytest.raises(ValidationError):
        AllowedEmailDomain(domain="org").full_clean()


@pytest.fixture
def manager(db, seeded_allow_list, ra_staff):
    return ra_staff(RA_MANAGER)


def test_an_allow_list_change_needs_a_reason_kept_in_the_trail(manager):
    """The list decides who can be given a Care Identity (SECURITY.md: every RA action with actor, subject
    and reason)."""
    manager_person, client = manager
    response = client.post(f"{DOMAINS}add/", {"domain": "example.org"})
    assert response.status_code == 200 and "Give a reason for adding the domain" in response.content.decode()
    assert not AllowedEmailDomain.objects.filter(domain="example.org").exists()
    assert not AuditEvent.objects.filter(event=Event.ALLOW_LIST_CHANGED).exists()
    assert client.post(f"{DOMAINS}add/", {"domain": "example.org", "reason": "new trust, ticket 7"}).status_code == 302
    added = AuditEvent.objects.get(event=Event.ALLOW_LIST_CHANGED, details__domain="example.org")
    assert added.actor == manager_person.user
    assert (added.details["change"], added.details["reason"]) == ("added", "new trust, ticket 7")

    page = f"{DOMAINS}{AllowedEmailDomain.objects.get(domain='example.org').pk}/change/"
    response = client.post(page, {"domain": "example.org", "include_subdomains": "on"})
    assert response.status_code == 200 and "Give a reason for the change" in response.content.decode()
    assert not AllowedEmailDomain.objects.get(domain="example.org").include_subdomains
    assert client.post(page, {"domain": "example.org", "include_subdomains": "on",
                              "reason": "its hospitals' subdomains too"}).status_code == 302
    assert AllowedEmailDomain.objects.get(domain="example.org").include_subdomains
    changed = AuditEvent.objects.filter(event=Event.ALLOW_LIST_CHANGED).latest("id")
    assert (changed.actor, changed.details["change"]) == (manager_person.user, "changed")
    assert changed.details["reason"] == "its hospitals' subdomains too"
    assert changed.details["before"] == {"include_subdomains": False}
    # Saved unchanged: nothing done, so no reason asked and nothing recorded.
    assert client.post(page, {"domain": "example.org", "include_subdomains": "on"}).status_code == 302
    assert AuditEvent.objects.filter(event=Event.ALLOW_LIST_CHANGED).count() == 2


def test_a_domain_leaves_the_allow_list_with_a_reason_kept_in_the_trail(manager):
    manager_person, client = manager
    gmail = AllowedEmailDomain.objects.get(domain="gmail.com")
    page = f"{DOMAINS}{gmail.pk}/delete/"
    confirmation = client.get(page)
    assert confirmation.status_code == 200
    assert 'Are you sure you want to delete the allowed email domain "gmail.com"?' in confirmation.content.decode()
    assert '<textarea name="reason"' in confirmation.content.decode()
    response = client.post(page, {"post": "yes"})
    assert response.status_code == 400 and "Give a reason for removing the domain" in response.content.decode()
    assert "<title>Error: " in response.content.decode()
    assert AllowedEmailDomain.objects.filter(domain="gmail.com").exists()
    assert not AuditEvent.objects.filter(event=Event.ALLOW_LIST_CHANGED).exists()

    response = client.post(page, {"post": "yes", "reason": "personal addresses no longer accepted"}, follow=True)
    assert response.redirect_chain[-1][0] == DOMAINS
    assert "was deleted successfully" in response.content.decode()
    assert not AllowedEmailDomain.objects.filter(domain="gmail.com").exists()
    removed = AuditEvent.objects.get(event=Event.ALLOW_LIST_CHANGED)
    assert removed.actor == manager_person.user
    assert removed.details == {**removed.details, "domain": "gmail.com", "change": "removed",
                               "reason": "personal addresses no longer accepted"}


def test_domains_leave_the_allow_list_one_at_a_time_never_with_delete_selected(manager):
    """Django's "Delete selected" asks no reason: the list has no actions."""
    _, client = manager
    hotmail = AllowedEmailDomain.objects.get(domain="hotmail.com")
    assert "delete_selected" not in client.get(DOMAINS).content.decode()
    client.post(DOMAINS, {"action": "delete_selected", "_selected_action": [hotmail.pk], "post": "yes"})
    assert AllowedEmailDomain.objects.filter(pk=hotmail.pk).exists()
    assert not AuditEvent.objects.filter(event=Event.ALLOW_LIST_CHANGED).exists()


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_either_an_allowed_address_or_a_clear_refusal(django_db_blocker, text):
    with django_db_blocker.unblock():
        try:
            email = AllowedEmailDomain.objects.check_email(text)
        except ValidationError as error:
            assert error.messages[0] in (NOT_ON_ALLOW_LIST, "Enter an email address in the correct format, like name@example.nhs.net")
        else:
            assert email.rpartition("@")[2] in SEEDED or email.endswith((".nhs.uk", ".gov.uk", ".ac.uk"))
