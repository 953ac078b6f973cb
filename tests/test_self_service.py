"""Self-service on the profile: sessions, activity, addresses, password, authenticators, help — and
never another person's data, whatever id a request names."""

from __future__ import annotations

import re
import time

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.hashers import check_password
from django.test import Client

from accounts.emails import NOT_ON_ALLOW_LIST
from accounts.models import AllowedEmailDomain, User
from audit.models import AuditEvent, Event
from audit.record import record

from .conftest import body, sign_in


@pytest.fixture
def elsewhere(person):
    other = Client(HTTP_USER_AGENT="Mozilla/5.0 (Windows NT 10.0) Edge/140 ward PC")
    sign_in(other, person)
    return other


def test_the_sessions_page_lists_where_you_are_signed_in_and_signs_one_out(signed_in, person, elsewhere):
    page = signed_in.get("/profile/sessions/").content.decode()
    assert "Where you are signed in" in page and "This session" in page and "ward PC" in page
    from allauth.usersessions.models import UserSession

    other = UserSession.objects.get(user=person.user, user_agent__contains="ward PC")
    response = signed_in.post("/profile/sessions/", {"session": other.pk})
    assert response.status_code == 302
    assert elsewhere.get("/profile/").status_code == 302  # signed out at its next request
    assert signed_in.get("/profile/").status_code == 200
    assert AuditEvent.objects.filter(event=Event.SESSIONS_ENDED, subject=person.user).exists()


@pytest.mark.parametrize("walked_away", ["idle", "absolute"])
def test_a_session_past_its_timeout_is_not_listed_as_signed_in(signed_in, person, elsewhere, walked_away):
    """The ward PC's session timed out (30 idle minutes, or 12 hours since it signed in): its next request ends
    it, so the browser is signed in nowhere. It was still listed, with a button to sign it out, as was
    'Sign out of all other sessions'."""
    session = elsewhere.session
    if walked_away == "idle":
        session["careid_last_seen"] -= 31 * 60
    else:
        session["careid_auth"] = {**session["careid_auth"], "at": session["careid_auth"]["at"] - 12 * 3600 - 1}
    session.save()

    page = signed_in.get("/profile/sessions/").content.decode()
    assert "This session" in page and "ward PC" not in page
    assert "Sign out of all other sessions" not in page
    assert elsewhere.get("/profile/").status_code == 302  # indeed signed out at its next request


def test_sign_out_of_all_other_sessions(signed_in, person, elsewhere):
    third = Client()
    sign_in(third, person)
    signed_in.post("/profile/sessions/", {"session": "others"})
    assert elsewhere.get("/profile/").status_code == 302 and third.get("/profile/").status_code == 302
    assert signed_in.get("/profile/").status_code == 200
    [event] = AuditEvent.objects.filter(event=Event.SESSIONS_ENDED, subject=person.user)  # one event for the action
    assert event.details["sessions_ended"] == 2 and event.details["reason"] == "signed out from another session"


def test_another_persons_session_cannot_be_named(signed_in, make_person):
    from allauth.usersessions.models import UserSession

    victim = make_person(email="mary.seacole@nhs.net")
    victim_browser = Client()
    sign_in(victim_browser, victim)
    their_session = UserSession.objects.get(user=victim.user)
    assert signed_in.post("/profile/sessions/", {"session": their_session.pk}).status_code == 404
    assert signed_in.post("/profile/sessions/", {"session": "not-a-number"}).status_code == 404
    assert victim_browser.get("/profile/").status_code == 200
    assert victim.user.email not in signed_in.get("/profile/sessions/").content.decode()


def test_the_activity_page_shows_your_own_events_only(signed_in, person, make_person):
    other = make_person(email="mary.seacole@nhs.net")
    record(Event.SIGNIN_FAILED, subject=other.user, reason="wrong password", email=other.user.email)
    page = signed_in.get("/profile/activity/").content.decode()
    assert "Your activity" in page and "Signed in" in page and "Authenticator app" in page
    assert other.user.email not in page
    assert page.count("<tr class=\"nhsuk-table__row\">") == AuditEvent.objects.filter(subject=person.user).count()
    assert signed_in.get("/profile/activity/?page=99999").status_code == 200  # the last page, not an error
    assert signed_in.get("/profile/activity/?page=x").status_code == 200


def test_your_activity_tags_a_failure_only_where_its_name_does_not_say_so(signed_in, person):
    from audit.models import Outcome

    record(Event.SIGNIN_FAILED, subject=person.user, outcome=Outcome.FAILURE, reason="wrong password")
    record(Event.PASSWORD_RESET, subject=person.user, outcome=Outcome.FAILURE, reason="the code expired")
    rows = re.findall(r'<tr class="nhsuk-table__row">(.*?)</tr>', signed_in.get("/profile/activity/").content.decode(),
                      re.S)
    failed_signin = next(row for row in rows if "Sign-in failed" in row)
    failed_reset = next(row for row in rows if ">Password reset" in row)
    assert "nhsuk-tag--red" not in failed_signin  # not "Sign-in failed Failed"
    assert '<strong class="nhsuk-tag nhsuk-tag--red">Failed</strong>' in failed_reset


def test_a_colleagues_failed_sign_in_as_you_is_not_shown_as_your_registration_authoritys_doing(client, make_person):
    """On a shared ward PC where B is signed in, someone tries A's address with a wrong password: record() takes
    request.user (B) as the actor, and A's activity said "by your registration authority: wrong password"."""
    a, b = make_person(), make_person(email="colleague@nhs.net")
    sign_in(client, b)
    client.post("/login/authenticator-app/", {"email": a.user.email, "password": "not the password"})
    assert AuditEvent.objects.get(event=Event.SIGNIN_FAILED, subject=a.user).actor == b.user
    browser = Client()
    sign_in(browser, a)
    page = browser.get("/profile/activity/").content.decode()
    assert "Sign-in failed" in page
    assert "by your registration authority" not in page and "colleague" not in page and b.user.uid not in page


def test_a_failed_sign_in_typed_where_an_ra_is_signed_in_is_not_shown_as_their_doing(make_person, ra_staff):
    """The shared PC's signed-in person is an RA Agent: a wrong password typed there for A's address is no RA's
    action, whoever was signed in at that browser."""
    from accounts.roles import RA_AGENT

    a = make_person()
    _agent, shared_pc = ra_staff(RA_AGENT)
    shared_pc.post("/login/authenticator-app/", {"email": a.user.email, "password": "not the password"})
    browser = Client()
    sign_in(browser, a)
    page = browser.get("/profile/activity/").content.decode()
    assert "Sign-in failed" in page and "by your registration authority" not in page


def test_a_new_reset_code_asked_for_where_an_ra_is_signed_in_is_not_shown_as_their_doing(make_person, ra_staff, mailbox,
                                                                                            settings):
    """A forgets their password at a shared PC where an RA Agent is signed in: "Send a new code" on the reset page
    recorded the code sent with the RA as its actor (record() takes request.user), and A's activity said "One-time
    password sent, by your registration authority", as it no longer says for the rest of the reset's events."""
    import time_machine
    from django.utils import timezone

    from accounts.roles import RA_AGENT

    a = make_person()
    agent, shared_pc = ra_staff(RA_AGENT)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        shared_pc.post("/login/authenticator-app/forgotten-password/", {"email": a.user.email})
        clock.shift(settings.CAREID_EMAIL_CODE_COOLDOWN)
        assert shared_pc.post("/login/authenticator-app/forgotten-password/code/resend/").url.endswith("?sent=1")
    assert AuditEvent.objects.get(event=Event.OTP_SENT, subject=a.user).actor == agent.user
    browser = Client()
    sign_in(browser, a)
    page = browser.get("/profile/activity/").content.decode()
    assert "One-time password sent" in page and "by your registration authority" not in page


def test_your_activity_names_your_registration_authority_only_for_those_acting_as_one(signed_in, person, make_person):
    from django.contrib.auth.models import Group

    from accounts.roles import AUDITOR, RA_AGENT

    agent = make_person(email="agent@nhs.net", is_staff=True)
    agent.user.groups.add(Group.objects.get(name=RA_AGENT))
    operator = make_person(email="operator@nhs.net", is_staff=True, is_superuser=True)
    auditor = make_person(email="auditor@nhs.net", is_staff=True)
    auditor.user.groups.add(Group.objects.get(name=AUDITOR))
    record(Event.ACCOUNT_UNLOCKED, actor=agent.user, subject=person.user, reason="asked by phone")
    record(Event.SESSIONS_ENDED, actor=operator.user, subject=person.user, reason="lost laptop")
    record(Event.USER_CHANGED, actor=auditor.user, subject=person.user, reason="not an RA")
    page = signed_in.get("/profile/activity/").content.decode()
    assert "by your registration authority: asked by phone" in page
    assert "by your registration authority: lost laptop" in page
    assert page.count("by your registration authority") == 2


@pytest.mark.parametrize("events", [5, 120])
def test_the_activity_page_query_count_is_flat(signed_in, person, events, django_assert_max_num_queries):
    AuditEvent.objects.bulk_create(AuditEvent(event=Event.SIGNIN_FAILED, subject=person.user, outcome="failure")
                                   for _ in range(events))
    with django_assert_max_num_queries(8):
        assert signed_in.get("/profile/activity/").status_code == 200


def test_addresses_can_be_removed_and_promoted_not_the_care_identity_one(transactional_db, seeded_allow_list, client,
                                                                       make_person, mailbox):
    person = make_person()
    user = person.user
    spare = EmailAddress.objects.create(user=user, email="edith@nhs.net", verified=True, primary=False)
    unverified = EmailAddress.objects.create(user=user, email="edith.old@nhs.net", verified=False, primary=False)
    primary = EmailAddress.objects.get(user=user, primary=True)
    sign_in(client, person)
    assert client.post(f"/profile/email/{primary.pk}/remove/").status_code == 400
    assert client.post(f"/profile/email/{unverified.pk}/make-care-identity-email/").status_code == 400
    assert client.post(f"/profile/email/{unverified.pk}/remove/").status_code == 302
    assert not EmailAddress.objects.filter(pk=unverified.pk).exists()
    mailbox.wait_for(user.email, "An email address was removed")

    assert "Make edith@nhs.net your Care Identity email address?" in client.get(
        f"/profile/email/{spare.pk}/make-care-identity-email/").content.decode()
    assert client.post(f"/profile/email/{spare.pk}/make-care-identity-email/").status_code == 302
    user.refresh_from_db()
    assert user.email == "edith@nhs.net"
    assert EmailAddress.objects.get(user=user, primary=True).email == "edith@nhs.net"
    assert "is now the email address" in body(mailbox.wait_for("edith@nhs.net", "email address has changed"))
    assert "stays on your profile" in body(mailbox.wait_for("edith.cavell@nhs.net", "The email address of your Care Identity has changed"))
    assert AuditEvent.objects.filter(event=Event.EMAIL_PRIMARY_CHANGED, details__before="edith.cavell@nhs.net").exists()


def test_an_address_an_ra_set_is_verified_with_the_link_sent_to_it_or_a_new_one(transactional_db, seeded_allow_list,
                                                                                  client, make_person,
                                                                                  ra_staff, mailbox, settings):
    """An RA's new Care Identity e-mail is not verified until the person opens a link sent to it; the
    profile can send another (counted with the addresses added), never for a verified address."""
    person = make_person()
    _, agent = ra_staff("RA Agent")
    assert agent.post(f"/admin/accounts/user/{person.user.pk}/change/", {
        "first_name": "Edith", "last_name": "Cavell", "email": "edith.new@nhs.net", "reason": "REQ-7 new trust",
    }).status_code == 302
    first = mailbox.wait_for("edith.new@nhs.net", "Verify your email address")
    address = EmailAddress.objects.get(user=person.user, email="edith.new@nhs.net")
    assert address.primary and not address.verified
    person.user.refresh_from_db()
    sign_in(client, person)
    profile = client.get("/profile/").content.decode()
    assert f'href="/profile/email/{address.pk}/verify/"' in profile and "Not verified" in profile
    assert "Verify edith.new@nhs.net" in client.get(f"/profile/email/{address.pk}/verify/").content.decode()
    response = client.post(f"/profile/email/{address.pk}/verify/")
    assert response.status_code == 302
    assert "We have sent an email to edith.new@nhs.net" in client.get("/profile/").content.decode()
    mailbox.wait_for("edith.new@nhs.net", "Verify your email address", count=2)
    assert AuditEvent.objects.filter(event=Event.EMAIL_LINK_SENT, subject=person.user,
                                     details__email="edith.new@nhs.net").count() == 1
    assert client.post(re.search(r"https?://[^/\s]+(/profile/email/confirm/\S+/)", body(first)).group(1)).status_code == 200
    address.refresh_from_db()
    assert address.verified and address.primary
    assert client.post(f"/profile/email/{address.pk}/verify/").status_code == 400  # nothing left to verify
    # Over the hour's limit of e-mails for addresses: refused with a message, nothing sent.
    settings.CAREID_EMAIL_ADD_LIMIT = 1
    spare = EmailAddress.objects.create(user=person.user, email="edith@nhs.net", verified=False, primary=False)
    refused = client.post(f"/profile/email/{spare.pk}/verify/")
    assert refused.status_code == 400
    assert "You have asked for too many emails in the last hour" in refused.content.decode()
    assert mailbox.to("edith@nhs.net") == []
    # A domain taken off the allow list since the address was added: no new link, saying why.
    settings.CAREID_EMAIL_ADD_LIMIT = 5
    elsewhere = EmailAddress.objects.create(user=person.user, email="edith@example.org", verified=False, primary=False)
    refused = client.post(f"/profile/email/{elsewhere.pk}/verify/")
    assert refused.status_code == 400 and "allow" in refused.content.decode().lower()
    assert mailbox.to("edith@example.org") == []


def test_a_first_link_verifies_nothing_once_the_domain_has_left_the_allow_list(transactional_db, seeded_allow_list,
                                                                                 client, make_person, mailbox):
    """As "Send a new link" is refused for such an address, so is following the link sent when it was added:
    the page says why, the address stays unverified, and the refusal is in the trail."""
    person = make_person()
    sign_in(client, person)
    assert client.post("/profile/email/add/", {"email": "edith@gmail.com"}).status_code == 302
    link = re.search(r"https?://[^/\s]+(/profile/email/confirm/\S+/)",
                     body(mailbox.wait_for("edith@gmail.com", "Verify your email address"))).group(1)
    AllowedEmailDomain.objects.filter(domain="gmail.com").delete()  # an RA Manager takes it off meanwhile

    page = client.get(link).content.decode()
    assert NOT_ON_ALLOW_LIST in page and "Verify email address</button>" not in page
    assert 'href="/allowed-email-domains/"' in page
    response = client.post(link)

    assert response.status_code == 409
    assert NOT_ON_ALLOW_LIST in response.content.decode()
    assert not EmailAddress.objects.get(user=person.user, email="edith@gmail.com").verified
    assert not AuditEvent.objects.filter(event=Event.EMAIL_VERIFIED, subject=person.user).exists()
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=person.user)
    assert refused.details == {"email": "edith@gmail.com", "via": "link", "reason": "not on the allow list"}
    assert refused.outcome == "failure"


def test_an_address_whose_domain_has_left_the_allow_list_cannot_become_the_care_identity_email(signed_in, person):
    """A Care Identity e-mail is on the allow list (the RA's forms, invitations and onboarding check it): an address
    verified while its domain was allowed became the address the person signs in with after an RA Manager had
    taken the domain off the list."""
    spare = EmailAddress.objects.create(user=person.user, email="edith@gmail.com", verified=True, primary=False)
    AllowedEmailDomain.objects.filter(domain="gmail.com").delete()
    response = signed_in.post(f"/profile/email/{spare.pk}/make-care-identity-email/")
    assert response.status_code == 400 and NOT_ON_ALLOW_LIST in response.content.decode()
    person.user.refresh_from_db()
    assert person.user.email == "edith.cavell@nhs.net"
    assert not AuditEvent.objects.filter(event=Event.EMAIL_PRIMARY_CHANGED, subject=person.user).exists()
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=person.user)
    assert refused.details == {"email": "edith@gmail.com", "via": "make Care Identity email",
                               "reason": "not on the allow list"}


def test_another_persons_address_cannot_be_named(signed_in, make_person):
    victim = make_person(email="mary.seacole@nhs.net")
    address = EmailAddress.objects.get(user=victim.user)
    extra = EmailAddress.objects.create(user=victim.user, email="mary@nhs.net", verified=True)
    for path in [f"/profile/email/{address.pk}/remove/", f"/profile/email/{extra.pk}/remove/",
                 f"/profile/email/{extra.pk}/make-care-identity-email/"]:
        assert signed_in.post(path).status_code == 404
        assert signed_in.get(path).status_code == 404
    assert EmailAddress.objects.filter(user=victim.user).count() == 2


def test_changing_the_password_needs_a_recent_sign_in_and_signs_out_everywhere_else(
        transactional_db, client, make_person, mailbox):
    person = make_person()
    sign_in(client, person)
    other = Client()
    sign_in(other, person)
    session = client.session
    session["careid_auth"] = {**session["careid_auth"], "at": time.time() - 6 * 60}
    session.save()
    assert client.get("/profile/password/").url.startswith("/login/?goto=%2Fprofile%2Fpassword%2F&reauth=1")
    sign_in(client, person)
    response = client.post("/profile/password/", {"password1": "password", "password2": "password"})
    assert response.status_code == 400 and "too common" in response.content.decode()
    new = "a new phrase for the night shift"
    assert client.post("/profile/password/", {"password1": new, "password2": new}).status_code == 302
    person.user.refresh_from_db()
    assert check_password(new, person.user.password)
    assert other.get("/profile/").status_code == 302 and client.get("/profile/").status_code == 200
    mailbox.wait_for(person.user.email, "password has been changed")
    assert new not in str(AuditEvent.objects.get(event=Event.PASSWORD_CHANGED).details)
    assert AuditEvent.objects.get(event=Event.PASSWORD_CHANGED).details["sessions_ended"] == 1
    assert not AuditEvent.objects.filter(event=Event.SESSIONS_ENDED).exists()  # the change's own event says it


def test_a_password_change_does_not_bring_back_a_session_ended_meanwhile(signed_in, person):
    """An RA ends every session of the person (a lost phone) while that person's password change is under
    way: moving the session to a new key found its row gone and wrote it anew, a session on no list."""
    from django.contrib.sessions.models import Session
    from django.test import RequestFactory

    from careid.sessions import SessionStore
    from signin.flows import end_sessions, keep_this_session

    request = RequestFactory().post("/profile/password/")
    request.session, request.user = SessionStore(signed_in.session.session_key), person.user
    request.session.load()  # as the request began
    end_sessions(person.user, reason="lost phone")  # the RA, meanwhile
    keep_this_session(request, person.user)
    assert not Session.objects.exists()
    assert signed_in.get("/profile/").status_code == 302


def test_registering_the_app_while_signed_in_keeps_this_session_and_ends_the_others(
        transactional_db, client, make_person, mailbox):
    """Registering the app sets the Care Identity password: the person who did it while signed in was
    signed out at their next request, and their other sessions stopped unaudited, their services unheard."""
    from authenticators.flows import issue_registration_link
    from authenticators.models import AuthenticatorApp, RegistrationLink

    from .conftest import totp_code
    from .test_registration_journey import code_from, link_path, secret_from

    person = make_person()
    sign_in(client, person)
    other = Client()
    sign_in(other, person)
    AuthenticatorApp.objects.filter(user=person.user).delete()  # a lost phone, removed (another way in remains)
    link = issue_registration_link(user=person.user, kind="authenticator-app",
                                   purpose=RegistrationLink.Purpose.PRESENCE, confirmed=True)
    assert client.post(link_path(link), {"email": person.user.email}).status_code == 302
    client.post("/register/authenticator-app/code/", {"code": code_from(mailbox, person.user.email)})
    new = "a new phrase for the night shift"
    client.post("/register/authenticator-app/password/", {"password1": new, "password2": new})
    secret = secret_from(client.get("/register/authenticator-app/qr/").content.decode())
    client.post("/register/authenticator-app/qr/")
    assert client.post("/register/authenticator-app/verify/", {"token": totp_code(secret)}).status_code == 302
    assert client.get("/profile/").status_code == 200  # still signed in here
    assert other.get("/profile/").status_code == 302
    assert AuditEvent.objects.get(event=Event.PASSWORD_SET, subject=person.user).details["sessions_ended"] == 1


def test_the_last_authenticator_cannot_be_removed(signed_in, person):
    response = signed_in.post("/profile/authenticators/authenticator-app/remove/")
    assert response.status_code == 400 and "You cannot remove your only authenticator" in response.content.decode()
    assert "<title>Error: You cannot remove Microsoft Authenticator" in response.content.decode()  # as with a form's errors
    assert ">Remove Microsoft Authenticator</button>" not in response.content.decode()
    from authenticators.models import AuthenticatorApp

    assert AuthenticatorApp.objects.filter(user=person.user).exists()
    assert signed_in.post("/profile/authenticators/no-such-type/remove/").status_code == 404
    assert signed_in.get("/profile/authenticators/security-key/remove/").status_code == 404  # not one of theirs
    assert signed_in.post("/profile/authenticators/security-key/remove/").status_code == 404


def test_the_remove_page_of_the_only_authenticator_says_why_instead_of_offering_removal(signed_in, person):
    """It offered a red 'Remove Microsoft Authenticator' button and 'remove it now; you can register a new one
    afterwards', then refused the POST; the profile offered 'Remove' for it."""
    response = signed_in.get("/profile/authenticators/authenticator-app/remove/")
    page = response.content.decode()
    assert response.status_code == 200 and "<title>You cannot remove Microsoft Authenticator" in page
    assert ("You cannot remove your only authenticator you can sign in with: you would not be able to sign in. Add "
            "another one first, or ask your registration authority for help.") in page
    assert "<button" not in page.split('<main')[1] and "remove it now" not in page
    profile = signed_in.get("/profile/").content.decode()
    assert 'href="/profile/authenticators/authenticator-app/remove/"' not in profile
    assert "Your only authenticator you can sign in with" in profile


def test_a_removal_looks_up_the_persons_authenticators_once(signed_in, person):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        signed_in.post("/profile/authenticators/authenticator-app/remove/")
    assert sum(" UNION " in query["sql"] for query in queries) == 1  # the registry's query over every type


def test_an_authenticator_of_a_type_switched_off_does_not_count_as_a_way_to_sign_in(signed_in, person, settings):
    from authenticators.models import AuthenticatorApp, Passkey

    settings.CAREID_PASSKEY_BETA = False
    Passkey.objects.create(user=person.user, name="Passkey", confirmed=True, credential_id=b"passkey",
                           public_key=b"public key", user_handle=b"handle")
    response = signed_in.post("/profile/authenticators/authenticator-app/remove/")
    assert response.status_code == 400 and "You cannot remove your only authenticator" in response.content.decode()
    assert AuthenticatorApp.objects.filter(user=person.user).exists()
    assert not AuditEvent.objects.filter(event=Event.AUTHENTICATOR_REMOVED).exists()
    # The passkey, which cannot be used while the beta is off, can go.
    assert signed_in.post("/profile/authenticators/passkey/remove/").status_code == 302
    assert not Passkey.objects.filter(user=person.user).exists()
    assert AuthenticatorApp.objects.filter(user=person.user).exists()


def test_the_profile_offers_every_self_service_page(signed_in, person):
    from authenticators.models import SecurityKey

    SecurityKey.objects.create(user=person.user, name="Security key", confirmed=True, credential_id=b"key",
                               public_key=b"public key", user_handle=b"handle")  # so the app can be removed
    page = signed_in.get("/profile/").content.decode()
    for href in ["/profile/sessions/", "/profile/activity/", "/profile/password/",
                 "/profile/authenticators/authenticator-app/remove/"]:
        assert f'href="{href}"' in page, href


def test_help_and_the_contact_wherever_people_are_sent_to_their_ra(client, db, settings):
    from careid.context_processors import _site

    settings.CAREID_HELP_CONTACT = "the Leeds Teaching Hospitals RA team (0113 000 0000)"
    settings.CAREID_HELP_CONTACT_URL = "https://ra.leedsth.nhs.uk/"
    _site.cache_clear()
    try:
        page = client.get("/help/").content.decode()
        assert "Help and contact" in page and "the Leeds Teaching Hospitals RA team" in page
        assert 'target="_blank"' in page and "opens in a new window" in page
        assert 'href="/help/"' in client.get("/login/").content.decode()  # the footer
        expired = client.get("/register/not-a-real-link/").content.decode()
        assert 'href="https://ra.leedsth.nhs.uk/"' in expired
    finally:
        _site.cache_clear()


def test_the_allow_list_is_public_and_linked_from_adding_an_address(client, signed_in, seeded_allow_list):
    page = Client().get("/allowed-email-domains/").content.decode()
    assert "nhs.net" in page and "Accepted email domains" in page
    assert 'href="/allowed-email-domains/"' in signed_in.get("/profile/email/add/").content.decode()


def test_a_suspended_persons_pages_are_gone(signed_in, person, make_person):
    from accounts.flows import suspend_user

    ra_agent = make_person(email="ra.agent@nhs.net").user
    assert suspend_user(user=person.user, actor=ra_agent, reason="Left the trust") == 1  # the session ended
    person.user.refresh_from_db()
    assert person.user.status == User.Status.SUSPENDED
    response = signed_in.get("/profile/sessions/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_an_authenticator_is_removed_when_another_remains(transactional_db, client, make_person, mailbox,
                                                         webauthn_site):
    from authenticators.models import AuthenticatorApp, SecurityKey

    from .webauthn_steps import authenticator_for, register

    person = make_person()
    sign_in(client, person)
    assert register(client, "security-key", authenticator_for("security-key", webauthn_site)).status_code == 302
    page = client.get("/profile/authenticators/authenticator-app/remove/").content.decode()
    assert "Remove Microsoft Authenticator?" in page
    assert client.post("/profile/authenticators/authenticator-app/remove/").status_code == 302
    assert not AuthenticatorApp.objects.filter(user=person.user).exists()
    assert SecurityKey.objects.filter(user=person.user).exists()
    assert "You removed a Microsoft Authenticator" in body(
        mailbox.wait_for(person.user.email, "Microsoft Authenticator was removed"))
    event = AuditEvent.objects.get(event=Event.AUTHENTICATOR_REMOVED, subject=person.user)
    assert event.actor == person.user
    # Now the key is the last one.
    response = client.post("/profile/authenticators/security-key/remove/")
    assert response.status_code == 400 and SecurityKey.objects.filter(user=person.user).exists()


def test_removing_your_own_authenticator_signs_out_the_other_sessions_it_signed_in(
        transactional_db, client, make_person, mailbox, webauthn_site):
    """A phone left signed in elsewhere: removing its app ends that session, not this one (the person has just
    proved who they are) nor one signed in with their key."""
    from .webauthn_steps import authenticator_for, register
    from .webauthn_steps import sign_in as sign_in_with_key

    person = make_person()
    sign_in(client, person)
    elsewhere = Client()
    sign_in(elsewhere, person)
    key = authenticator_for("security-key", webauthn_site)
    assert register(client, "security-key", key).status_code == 302
    with_key = Client()
    assert sign_in_with_key(with_key, "security-key", key, person.user.email).status_code == 302
    response = client.post("/profile/authenticators/authenticator-app/remove/", follow=True)
    assert ("Microsoft Authenticator has been removed from your profile. It had signed you in elsewhere: 1 other "
            "session signed out.") in response.content.decode()
    assert client.get("/profile/").status_code == 200 and with_key.get("/profile/").status_code == 200
    assert elsewhere.get("/profile/").status_code == 302
    assert AuditEvent.objects.get(event=Event.AUTHENTICATOR_REMOVED, subject=person.user).details["sessions_ended"] == 1


@pytest.fixture
def app_switched_off(settings):
    from .conftest import reload_urls

    settings.CAREID_DISABLED_AUTHENTICATORS = ["authenticator-app"]
    reload_urls()
    yield
    settings.CAREID_DISABLED_AUTHENTICATORS = []
    reload_urls()


def test_pages_still_work_for_someone_with_an_app_while_that_type_is_switched_off(signed_in, app_switched_off):
    """Its URLs are not mounted then: the pages leave out what they would link to instead of failing."""
    for path in ("/profile/", "/profile/sessions/", "/help/"):
        response = signed_in.get(path)
        assert response.status_code == 200, path
        page = response.content.decode()
        assert "Change password" not in page and "forgotten-password" not in page, path


def test_an_address_that_became_someone_elses_cannot_be_made_yours_and_names_nobody(signed_in, person, make_person):
    """The holder's user ID is for the RA; the person is told to contact them, and the refusal is audited."""
    spare = EmailAddress.objects.create(user=person.user, email="edith@nhs.net", verified=True, primary=False)
    holder = make_person(email="mary.seacole@nhs.net")
    User.objects.filter(pk=holder.user.pk).update(email="edith@nhs.net")  # an RA gave it to her meanwhile
    response = signed_in.post(f"/profile/email/{spare.pk}/make-care-identity-email/")
    page = response.content.decode()
    assert response.status_code == 400 and "Contact your registration authority" in page
    assert holder.user.uid not in page
    person.user.refresh_from_db()
    assert person.user.email == "edith.cavell@nhs.net"
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED, subject=person.user)
    assert refused.details["held_by"] == [holder.user.uid]
