"""The Care Identity e-mail domain allow list: seeded, editable, parsed properly."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.emails import NOT_ON_ALLOW_LIST
from accounts.models import AllowedEmailDomain

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
