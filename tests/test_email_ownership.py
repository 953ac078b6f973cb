"""An address belongs to one Care Identity: nobody else can add it, verify it or be given it.

Issue 7, item 1: a signed-in person could add an invited person's Care Identity e-mail to their own
profile and, once it was verified there, the owner's registration died with a 500 at the one-time
password step; an RA could cause the same by giving someone an address verified on another profile.
"""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import EmailOneTimePassword, User
from accounts.roles import RA_AGENT
from audit.models import AuditEvent, Event
from authenticators.models import AuthenticatorApp, RegistrationLink

from .conftest import body, sign_in, totp_code
from .test_registration_journey import NEW_PASSWORD, code_from, confirm, link_path, secret_from

OWNER = "mary.seacole@nhs.net"
CODE_STEP = "/register/authenticator-app/code/"


def register(client: Client, mailbox, link: RegistrationLink, email: str = OWNER) -> str:
    """The owner's whole registration through the real pages; returns the final page."""
    response = client.post(link_path(confirm(client, link)), {"email": email})
    assert response.url == CODE_STEP
    response = client.post(CODE_STEP, {"code": code_from(mailbox, email)})
    assert response.status_code == 302, response.content.decode()[:2000]
    client.post(response.url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    secret = secret_from(client.get("/register/authenticator-app/qr/").content.decode())
    client.post("/register/authenticator-app/qr/")
    response = client.post("/register/authenticator-app/verify/", {"token": totp_code(secret)})
    assert response.url == "/register/authenticator-app/done/"
    return client.get(response.url).content.decode()


def verification_path(mailbox, email: str) -> str:
    message = mailbox.wait_for(email, "Verify your email address")
    return re.search(r"https?://[^/]+(/profile/email/confirm/[^/\s]+/)", body(message)).group(1)


def test_nobody_can_add_an_invited_persons_email_and_the_owner_still_registers(invite, make_person, mailbox):
    owner, link = invite(email=OWNER)
    other = make_person()
    browser = Client()
    sign_in(browser, other)

    taken = browser.post("/profile/email/add/", {"email": "Mary.Seacole@NHS.net"})
    free = browser.post("/profile/email/add/", {"email": "free.address@nhs.net"})

    # The same answer as for a free address; the address is on the profile, and stays unverified.
    assert taken.status_code == free.status_code == 302
    assert taken.url == free.url == "/profile/"
    assert not EmailAddress.objects.get(user=other.user, email=OWNER).verified
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=other.user)
    assert refused.details["email"] == OWNER
    # The holder is told instead, and never gets a link that would verify it on the other profile.
    notice = mailbox.wait_for(OWNER, "Someone tried to add your email address")
    assert other.user.uid not in body(notice)
    mailbox.wait_for("free.address@nhs.net", "Verify your email address")
    assert not [m for m in mailbox.to(OWNER) if "Verify your email address" in m["Subject"]]

    page = register(Client(), mailbox, link)
    assert "Registration successful" in page
    assert EmailAddress.objects.get(user=owner, email=OWNER).verified
    assert AuthenticatorApp.objects.filter(user=owner, confirmed=True).exists()
    assert not EmailAddress.objects.get(user=other.user, email=OWNER).verified


def test_a_link_for_an_address_that_became_someones_care_identity_email_verifies_nothing(
    invite, make_person, mailbox
):
    other = make_person()
    browser = Client()
    sign_in(browser, other)
    assert browser.post("/profile/email/add/", {"email": OWNER}).status_code == 302  # nobody's yet
    path = verification_path(mailbox, OWNER)
    owner, link = invite(email=OWNER)  # the RA gives it to a new starter before the link is used

    assert "Verify your email address" in browser.get(path).content.decode()
    response = browser.post(path)

    assert response.status_code == 409
    page = response.content.decode()
    assert "This email address cannot be verified on this Care Identity" in page
    assert not EmailAddress.objects.get(user=other.user, email=OWNER).verified
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=other.user)
    assert refused.details["email"] == OWNER and refused.details["via"] == "link"
    assert not AuditEvent.objects.filter(event=Event.EMAIL_VERIFIED, subject=other.user).exists()

    assert "Registration successful" in register(Client(), mailbox, link)
    assert EmailAddress.objects.get(user=owner, email=OWNER).verified
    assert browser.post(path).status_code == 409  # and still refused once the owner has verified it
    assert not EmailAddress.objects.get(user=other.user, email=OWNER).verified


def test_a_verified_conflict_gets_a_clear_page_an_audit_event_and_leaves_the_journey_as_it_was(
    invite, make_person, mailbox
):
    owner, link = invite(email=OWNER)
    other = make_person()
    # Left in the database by the old code (or by a race the constraint decided).
    conflict = EmailAddress.objects.create(user=other.user, email=OWNER, verified=True, primary=False)
    client = Client()
    response = client.post(link_path(confirm(client, link)), {"email": OWNER})
    assert response.url == CODE_STEP
    code = code_from(mailbox, OWNER)

    for _attempt in range(2):  # every retry gets the same clear page, never a 500
        response = client.post(CODE_STEP, {"code": code})
        assert response.status_code == 409
        page = response.content.decode()
        assert "Your email address is in use on another Care Identity" in page
        assert "Contact your registration authority" in page

    events = AuditEvent.objects.filter(event=Event.EMAIL_REFUSED, subject=owner)
    assert events.count() == 2
    event = events.latest("id")
    assert event.details["email"] == OWNER and event.details["held_by"] == [other.user.uid]
    assert event.details["via"] == "one-time password" and event.outcome == "failure"
    # Nothing changed: the step, the code and the address are as they were.
    journey = RegistrationLink.objects.get(user=owner, purpose=RegistrationLink.Purpose.PRESENCE)
    assert journey.step == "otp"
    assert EmailOneTimePassword.objects.get(user=owner).used_at is None
    assert not EmailAddress.objects.get(user=owner, email=OWNER).verified
    assert not AuditEvent.objects.filter(event=Event.EMAIL_VERIFIED, subject=owner).exists()

    # Once the registration authority has sorted the conflict out, the same journey goes on.
    conflict.delete()
    response = client.post(CODE_STEP, {"code": code})
    assert response.url == "/register/authenticator-app/password/"
    assert EmailAddress.objects.get(user=owner, email=OWNER).verified


# --- adding an address that is someone else's reads as adding a free one ---------------------------------


def test_the_profile_lists_an_added_address_the_same_whether_or_not_it_is_someone_elses(client, make_person):
    """Only the free address was listed (not verified, with Remove): the profile told a person which
    addresses are Care Identities."""
    person = make_person()
    make_person(email="someone.else@nhs.net")
    sign_in(client, person)
    client.post("/profile/email/add/", {"email": "free.address@nhs.net"})
    client.post("/profile/email/add/", {"email": "someone.else@nhs.net"})
    client.get("/profile/")  # the "We have sent an email to ..." messages shown and gone
    page = client.get("/profile/").content.decode()

    rows = {address.email: address for address in EmailAddress.objects.filter(user=person.user, primary=False)}
    assert set(rows) == {"free.address@nhs.net", "someone.else@nhs.net"}
    for email, address in rows.items():
        assert f"{email}</td>" in page and f"Remove<span class=\"nhsuk-u-visually-hidden\"> {email}</span>" in page
        assert not address.verified
    assert page.count("Not verified") == 2


def test_your_activity_shows_someone_elses_address_as_added_and_the_ra_still_sees_the_refusal(
    agent, make_person, mailbox
):
    """The refusal, with the person as its subject, read "Email address refused — Failed" on their activity."""
    person = make_person()
    holder = make_person(email="someone.else@nhs.net")
    browser = Client()
    sign_in(browser, person)
    browser.post("/profile/email/add/", {"email": "free.address@nhs.net"})
    browser.post("/profile/email/add/", {"email": "someone.else@nhs.net"})

    page = browser.get("/profile/activity/").content.decode()
    assert "Email address refused" not in page and "Failed" not in page
    assert page.count("Email address added") == 2

    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=person.user)
    assert refused.outcome == "failure" and refused.details["email"] == "someone.else@nhs.net"
    assert refused.details["held_by"] == [holder.user.uid] and refused.details["reason"] == "belongs to another Care Identity"
    _, ra = agent
    assert "Email address refused" in ra.get(f"{USERS}{person.user.pk}/change/").content.decode()


def test_someone_elses_address_kept_on_a_profile_is_never_verified_holds_nothing_and_can_be_removed(
    transactional_db, seeded_allow_list, make_person, mailbox, settings
):
    from allauth.account.models import EmailConfirmationHMAC

    holder = make_person(email="holder@nhs.net")
    EmailAddress.objects.create(user=holder.user, email="second.address@nhs.net", verified=True, primary=False)
    person = make_person()
    browser = Client()
    sign_in(browser, person)
    assert browser.post("/profile/email/add/", {"email": "second.address@nhs.net"}).url == "/profile/"
    kept = EmailAddress.objects.get(user=person.user, email="second.address@nhs.net")

    # No link is sent (the holder is told instead), and one made with the server's key is refused too.
    mailbox.wait_for("second.address@nhs.net", "Someone tried to add your email address")
    assert not [m for m in mailbox.to("second.address@nhs.net") if "Verify your email address" in m["Subject"]]
    assert browser.post(f"/profile/email/confirm/{EmailConfirmationHMAC(kept).key}/").status_code == 409
    kept.refresh_from_db()
    assert not kept.verified
    # It holds nothing: the address is still the holder's alone.
    assert list(User.objects.holding_email("second.address@nhs.net")) == [holder.user]
    # It counts towards the limit as a free address does, and goes like one.
    settings.CAREID_MAX_EMAIL_ADDRESSES = 2
    response = browser.post("/profile/email/add/", {"email": "third.address@nhs.net"})
    assert "You can have up to 2 email addresses" in response.content.decode()
    assert browser.post(f"/profile/email/{kept.pk}/remove/").status_code == 302
    assert not EmailAddress.objects.filter(pk=kept.pk).exists()
    mailbox.wait_for(person.user.email, "An email address was removed")


def test_once_the_holder_frees_the_address_adding_it_again_sends_a_link(
    transactional_db, seeded_allow_list, make_person, mailbox
):
    """The row kept while the address was another's has no link and gets none; the person removes it
    and adds the address again, as after a link that has expired."""
    holder = make_person(email="holder@nhs.net")
    theirs = EmailAddress.objects.create(user=holder.user, email="second.address@nhs.net", verified=True)
    person = make_person()
    browser = Client()
    sign_in(browser, person)
    browser.post("/profile/email/add/", {"email": "second.address@nhs.net"})
    kept = EmailAddress.objects.get(user=person.user, email="second.address@nhs.net")
    mailbox.wait_for("second.address@nhs.net", "Someone tried to add your email address")

    theirs.delete()  # the holder removes it from their profile
    assert browser.post(f"/profile/email/{kept.pk}/remove/").status_code == 302
    assert browser.post("/profile/email/add/", {"email": "second.address@nhs.net"}).url == "/profile/"
    assert browser.post(verification_path(mailbox, "second.address@nhs.net")).status_code == 200
    assert EmailAddress.objects.get(user=person.user, email="second.address@nhs.net").verified


# --- the registration authority and operators ----------------------------------------------

USERS = "/admin/accounts/user/"


@pytest.fixture
def agent(transactional_db, seeded_allow_list, ra_staff):
    return ra_staff(RA_AGENT)


@pytest.fixture
def holder(make_person):
    """Someone with a second, verified address."""
    person = make_person(email="holder@nhs.net")
    EmailAddress.objects.create(user=person.user, email="second.address@nhs.net", verified=True, primary=False)
    return person


def test_the_ra_cannot_create_a_care_identity_with_an_address_verified_on_another(agent, holder):
    _, client = agent
    response = client.post(f"{USERS}add/", {"email": "Second.Address@nhs.net", "first_name": "A", "last_name": "B"})
    assert response.status_code == 200
    assert f"This email address is verified on another Care Identity (UID {holder.user.uid})" in response.content.decode()
    assert not User.objects.with_email("second.address@nhs.net").exists()


def test_the_ra_cannot_change_an_email_to_an_address_verified_on_another(agent, holder, make_person, mailbox):
    _, client = agent
    person = make_person()
    response = client.post(f"{USERS}{person.user.pk}/change/", {
        "first_name": "Edith", "last_name": "Cavell", "email": "second.address@nhs.net", "reason": "asked by HR"})
    assert response.status_code == 200
    assert f"This email address is verified on another Care Identity (UID {holder.user.uid})" in response.content.decode()
    person.user.refresh_from_db()
    assert person.user.email == "edith.cavell@nhs.net"
    assert not EmailAddress.objects.filter(user=person.user, email="second.address@nhs.net").exists()
    assert not AuditEvent.objects.filter(event=Event.USER_CHANGED, subject=person.user).exists()


def test_the_ra_may_still_give_a_person_an_address_verified_on_their_own_profile(agent, holder):
    _, client = agent
    response = client.post(f"{USERS}{holder.user.pk}/change/", {
        "first_name": "Edith", "last_name": "Cavell", "email": "second.address@nhs.net", "reason": "asked by HR"})
    assert response.status_code == 302
    holder.user.refresh_from_db()
    assert holder.user.email == "second.address@nhs.net"


def test_the_ra_giving_an_address_verified_on_the_profile_keeps_it_verified_and_sends_no_link(agent, holder,
                                                                                           mailbox):
    _, client = agent
    assert client.post(f"{USERS}{holder.user.pk}/change/", {
        "first_name": "Edith", "last_name": "Cavell", "email": "second.address@nhs.net", "reason": "asked by HR",
    }).status_code == 302
    address = EmailAddress.objects.get(user=holder.user, email="second.address@nhs.net")
    assert address.primary and address.verified
    mailbox.wait_for("second.address@nhs.net", "The email address of your Care Identity has changed")
    assert not [m for m in mailbox.to("second.address@nhs.net") if "Verify" in m["Subject"]]


def test_a_link_sent_to_an_address_the_ra_then_corrected_no_longer_verifies_it(transactional_db, seeded_allow_list,
                                                                                 client, make_person, ra_staff,
                                                                                 mailbox):
    """An RA mistypes the new address (a stranger's mailbox) and corrects it at once: the stranger's link
    verifies nothing, and the typo leaves the profile, so it never counts as held by this person."""
    from accounts.flows import change_user_details

    person = make_person()
    agent, _ = ra_staff("RA Agent")
    change_user_details(user=person.user, actor=agent.user, changes={"email": "edith.cavel@nhs.net"},
                        reason="REQ-7 new trust")
    typo_mail = mailbox.wait_for("edith.cavel@nhs.net", "Verify your email address")
    person.user.refresh_from_db()
    change_user_details(user=person.user, actor=agent.user, changes={"email": "edith.new@nhs.net"},
                        reason="REQ-7 corrected")
    path = re.search(r"https?://[^/\s]+(/profile/email/confirm/\S+/)", body(typo_mail)).group(1)
    client.post(path)
    assert not EmailAddress.objects.filter(email="edith.cavel@nhs.net").exists()
    assert set(EmailAddress.objects.filter(user=person.user).values_list("email", "primary", "verified")) == {
        ("edith.cavell@nhs.net", False, True), ("edith.new@nhs.net", True, False)}


def test_the_invite_command_refuses_an_address_verified_on_another(db, holder):
    with pytest.raises(CommandError, match=f"verified on another Care Identity \\(UID {holder.user.uid}\\)"):
        call_command("invite_user", email="second.address@nhs.net", first_name="A", last_name="B")
    assert User.objects.count() == 1


def test_verifying_another_address_never_changes_the_care_identity_email_silently(transactional_db, make_person, mailbox,
                                                                                 seeded_allow_list):
    """The address a person signs in with changes only through "make this your Care Identity e-mail" (audited,
    the old address told), even while that address itself is not yet verified."""
    person = make_person()
    EmailAddress.objects.filter(user=person.user).update(verified=False)
    browser = Client()
    sign_in(browser, person)
    assert browser.post("/profile/email/add/", {"email": "second.address@nhs.net"}).status_code == 302
    assert browser.post(verification_path(mailbox, "second.address@nhs.net")).status_code == 200
    person.user.refresh_from_db()
    assert person.user.email == "edith.cavell@nhs.net"
    assert EmailAddress.objects.get(user=person.user, email="second.address@nhs.net").verified
    assert EmailAddress.objects.get(user=person.user, primary=True).email == "edith.cavell@nhs.net"
    assert not AuditEvent.objects.filter(event=Event.EMAIL_PRIMARY_CHANGED).exists()


# 254 characters as typed (the forms' limit), 260 once its Unicode domain is in IDNA form (the stored form).
LONG_IDN_EMAIL = "a" * 226 + "@" + "\u00e4" * 20 + ".nhs.uk"


def test_an_address_too_long_once_its_domain_is_in_idna_form_is_refused_with_a_message(client, person):
    """The 254-character limit was checked on the address as typed; the xn-- form stored is longer, and the
    insert failed: a 500 page on the profile, a traceback from invite_user."""
    assert len(LONG_IDN_EMAIL) == 254
    sign_in(client, person)
    response = client.post("/profile/email/add/", {"email": LONG_IDN_EMAIL})
    assert response.status_code == 400 and "Email address must be 254 characters or fewer" in response.content.decode()
    assert list(EmailAddress.objects.filter(user=person.user).values_list("email", flat=True)) == [person.user.email]
    with pytest.raises(CommandError, match="254 characters or fewer"):
        call_command("invite_user", email=LONG_IDN_EMAIL, first_name="A", last_name="B")
    assert not User.objects.filter(first_name="A", last_name="B").exists()


def test_verifying_an_added_address_never_makes_it_the_sign_in_address(client, db, fast_hashing):
    """A Care Identity with no address row (a superuser made with createsuperuser) adds an address and opens its
    link: allauth made a verified address primary when none was, and wrote it to User.email, so the person
    signed in with another address, unaudited, the old one never told (make_care_identity_email does both)."""
    from allauth.account.models import EmailConfirmationHMAC

    from authenticators.totp import codes

    from .conftest import PASSWORD, Person

    user = User.objects.create_superuser("operator@nhs.net", "Op", "Erator", password=PASSWORD)
    secret = codes.new_secret()
    AuthenticatorApp.objects.create(user=user, name="Microsoft Authenticator", key=secret, confirmed=True)
    sign_in(client, Person(user, PASSWORD, secret))
    assert client.post("/profile/email/add/", {"email": "second.address@nhs.net"}).status_code == 302
    address = EmailAddress.objects.get(user=user, email="second.address@nhs.net")
    assert client.post(f"/profile/email/confirm/{EmailConfirmationHMAC(address).key}/").status_code == 200

    user.refresh_from_db()
    address.refresh_from_db()
    assert user.email == "operator@nhs.net"
    assert address.verified and not address.primary
    assert AuditEvent.objects.filter(event=Event.EMAIL_VERIFIED, subject=user).exists()
