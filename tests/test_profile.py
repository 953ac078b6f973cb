"""Care Identity Management: home, profile, e-mail addresses, select authenticator type."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
from allauth.account.models import EmailAddress

from audit.models import AuditEvent, Event
from authenticators.models import AuthenticatorApp

from .conftest import body, sign_in


def test_home_offers_the_profile_and_other_authenticators(signed_in):
    page = signed_in.get("/").content.decode()
    assert "View your profile" in page and "Add other authenticators" in page


def test_pages_need_a_signed_in_person(client, db):
    for path in ["/", "/profile/", "/profile/email/add/", "/authenticators/", "/authenticators/authenticator-app/"]:
        response = client.get(path)
        assert response.status_code == 302 and response.url.startswith("/login/"), path


def test_the_profile_shows_name_uid_email_and_authenticators(signed_in, person):
    user = person.user
    # 23:30 UTC in British Summer Time: already the 16th in London, where the page gives its dates.
    AuthenticatorApp.objects.filter(user=user).update(created_at=datetime(2025, 6, 15, 23, 30, tzinfo=UTC))
    page = signed_in.get("/profile/").content.decode()
    assert user.get_full_name() in page and user.uid in page and user.email in page
    assert "Microsoft Authenticator" in page and "16 June 2025" in page
    device = AuthenticatorApp.objects.get(user=user)
    assert device.last_used_at is not None  # set by signing in
    assert "Not used yet" not in page


@pytest.fixture
def recently_signed_in(client, person):
    sign_in(client, person)
    return client


def test_adding_an_email_needs_a_recent_sign_in(client, person):
    sign_in(client, person)
    session = client.session
    session["careid_auth"] = {**session["careid_auth"], "at": time.time() - 6 * 60}
    session.save()
    response = client.get("/profile/email/add/")
    assert response.status_code == 302
    assert response.url.startswith("/login/?goto=%2Fprofile%2Femail%2Fadd%2F&reauth=1")
    page = client.get(response.url + "&choose=1").content.decode()
    assert "For your security, sign in again to continue." in page


def test_an_added_email_is_verified_by_its_link(transactional_db, seeded_allow_list, client, make_person, mailbox):
    person = make_person()
    sign_in(client, person)
    response = client.post("/profile/email/add/", {"email": "Edith.Cavell@Gmail.com"})
    assert response.status_code == 302
    address = EmailAddress.objects.get(email="edith.cavell@gmail.com")
    assert not address.verified
    message = mailbox.wait_for("edith.cavell@gmail.com", "Verify your email address")
    path = re.search(r"https?://[^/]+(/profile/email/confirm/[^/\s]+/)", body(message)).group(1)
    page = client.get(path).content.decode()
    assert "Verify your email address" in page
    address.refresh_from_db()
    assert not address.verified  # nothing changes on GET
    done = client.post(path)
    assert "Email address verified" in done.content.decode()
    address.refresh_from_db()
    assert address.verified
    assert AuditEvent.objects.filter(event=Event.EMAIL_VERIFIED, subject=person.user, details__via="link").exists()
    mailbox.wait_for(person.user.email, "An email address was verified on your Care Identity")
    assert client.post(path).status_code == 404  # single use


def test_the_page_and_the_email_give_the_verification_links_lifetime_as_configured(
    transactional_db, seeded_allow_list, client, make_person, mailbox, settings
):
    person = make_person()
    sign_in(client, person)
    assert client.post("/profile/email/add/", {"email": "edith.cavell@gmail.com"}).status_code == 302
    address = EmailAddress.objects.get(email="edith.cavell@gmail.com")
    assert "Open it within 1 day to verify" in client.get(f"/profile/email/{address.pk}/verify/").content.decode()
    assert "The link expires in 1 day." in body(mailbox.wait_for("edith.cavell@gmail.com", "Verify your email address"))

    settings.ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS = 2
    assert "Open it within 2 days to verify" in client.get(f"/profile/email/{address.pk}/verify/").content.decode()
    assert client.post(f"/profile/email/{address.pk}/verify/").status_code == 302
    message = mailbox.wait_for("edith.cavell@gmail.com", "Verify your email address", count=2)
    assert "The link expires in 2 days." in body(message)


@pytest.mark.parametrize(
    "email, message",
    [
        ("someone@example.com", "This email domain is not on the Care Identity allow list"),
        ("someone@nhs.net.evil.com", "This email domain is not on the Care Identity allow list"),
        ("not an email", "Enter an email address in the correct format"),
        ("", "Enter an email address"),
    ],
)
def test_a_refused_email_says_why_and_adds_nothing(recently_signed_in, email, message):
    response = recently_signed_in.post("/profile/email/add/", {"email": email})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert EmailAddress.objects.count() == 1


def test_an_address_already_on_the_profile_is_refused(recently_signed_in, person):
    response = recently_signed_in.post("/profile/email/add/", {"email": person.user.email})
    assert "already on your Care Identity profile" in response.content.decode()


def test_someone_elses_address_gets_the_same_answer_and_its_owner_is_told(
    transactional_db, seeded_allow_list, client, make_person, mailbox
):
    person, other = make_person(), make_person(email="other.person@nhs.net")
    sign_in(client, person)
    taken = client.post("/profile/email/add/", {"email": other.user.email})
    free = client.post("/profile/email/add/", {"email": "free.address@nhs.net"})
    assert taken.status_code == free.status_code == 302
    assert taken.url == free.url == "/profile/"
    assert not EmailAddress.objects.get(user=person.user, email=other.user.email).verified  # and never will be
    notice = mailbox.wait_for(other.user.email, "Someone tried to add your email address")
    assert person.user.uid not in body(notice)
    mailbox.wait_for("free.address@nhs.net", "Verify your email address")
    assert AuditEvent.objects.filter(event=Event.EMAIL_REFUSED, subject=person.user).exists()


def test_at_most_five_addresses_and_five_additions_an_hour(recently_signed_in, person, settings):
    for n in range(4):
        assert recently_signed_in.post("/profile/email/add/", {"email": f"extra{n}@nhs.net"}).status_code == 302
    response = recently_signed_in.post("/profile/email/add/", {"email": "sixth@nhs.net"})
    assert "You can have up to 5 email addresses" in response.content.decode()
    settings.CAREID_MAX_EMAIL_ADDRESSES = 50
    assert recently_signed_in.post("/profile/email/add/", {"email": "fifth@nhs.net"}).status_code == 302
    response = recently_signed_in.post("/profile/email/add/", {"email": "one.too.many@nhs.net"})
    assert "You have added too many email addresses in the last hour" in response.content.decode()
    assert EmailAddress.objects.filter(user=person.user).count() == 6


def test_an_invalid_confirmation_key_shows_a_clear_page(client, db):
    response = client.get("/profile/email/confirm/not-a-key/")
    assert response.status_code == 404
    assert "This link is not valid" in response.content.decode()


def test_select_type_lists_types_with_the_seed_wording_and_marks_registered_ones(signed_in):
    page = signed_in.get("/authenticators/").content.decode()
    assert "Select authenticator type" in page
    assert "You can register one of each type of authenticator." in page
    assert "Microsoft Authenticator" in page
    assert "Uses an approved email and security code to access National Care Records Service" in page
    assert "Already registered." in page
    assert 'value="authenticator-app"' not in page  # listed as registered, not a (disabled) radio
    response = signed_in.post("/authenticators/", {"kind": "authenticator-app"})
    assert response.status_code == 400  # already registered: not a choice


def test_select_type_sends_a_person_without_the_app_to_its_registration(client, person):
    sign_in(client, person)
    AuthenticatorApp.objects.filter(user=person.user).delete()
    response = client.post("/authenticators/", {"kind": "authenticator-app"})
    assert response.url == "/authenticators/authenticator-app/"
    page = client.get(response.url).content.decode()
    assert "Register Microsoft Authenticator with your Care Identity" in page
    assert "The register link will expire after 3 minutes" in page
    response = client.post(response.url, {"confirm": "on"})
    assert response.status_code == 302 and response.url.startswith("/register/")
    page = client.get(response.url).content.decode()
    assert "Enter your email address" in page  # the sole-access confirmation was given already
