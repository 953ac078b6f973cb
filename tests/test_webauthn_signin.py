"""Signing in with the WebAuthn types through "Select your login method", with assertions signed by a
software authenticator with real keys (tests/soft_authenticator.py); every answer the server must refuse
is refused, audited and counted against the client's address (never against the Care Identity: a key
cannot be guessed, so counting refusals there would only let a stranger lock its holder out), and
changes nothing else."""

from __future__ import annotations

import datetime as dt
import re
import secrets

import cbor2
import pytest
import time_machine
from django.core.cache import cache
from django.test import Client
from webauthn.helpers import base64url_to_bytes

from accounts.models import User
from audit.models import AuditEvent, Event, Outcome
from authenticators.models import Passkey, SecurityKey, WindowsHello
from signin.models import UnknownAddress
from signin.session import SESSION_AUTH

from .conftest import sign_in as sign_in_with_app
from .test_webauthn_registration import MODELS, deliver_outbox, error_summary
from .webauthn_steps import (
    authenticator_for,
    give_email,
    options_of,
    post_answer,
    register,
    sign_in,
    signin_verify_url,
    start_registration,
)

LEVELS = {  # method, AAL, acr, amr
    "security-key": ("Security key", 3, "AAL3_FIDO2", ["hwk", "user"]),
    "windows-hello": ("Windows Hello", 3, "AAL3_FIDO2", ["hwk", "user"]),
    "ipad": ("iPad app", 3, "AAL3_IOS", ["hwk", "fpt"]),
    "passkey": ("Passkey (private beta)", 2, "AAL2_PASSKEY", ["swk", "user"]),
}


@pytest.fixture(autouse=True)
def setting_up(webauthn_site, passkey_beta):
    return webauthn_site


@pytest.fixture
def enrol(signed_in, setting_up):
    """Register `kind` for the signed-in person (through the pages); its software authenticator."""

    def make(kind: str, **fields):
        key = authenticator_for(kind, setting_up, **fields)
        assert register(signed_in, kind, key).status_code == 302
        return key

    return make


def signed_in_as(client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


def failed(user, *, reason: str) -> None:
    """The refusal is audited, and nothing is counted against the Care Identity or kept for the address."""
    events = AuditEvent.objects.filter(event=Event.SIGNIN_FAILED, outcome=Outcome.FAILURE).order_by("-id")
    events = list(events.filter(subject=user) if user else events.filter(subject__isnull=True))
    assert events and events[0].details["reason"].startswith(reason), [event.details for event in events]
    if user is not None:
        user.refresh_from_db()
        assert (user.code_failures, user.code_blocked_until, user.locked_at) == (0, None, None)
    assert not UnknownAddress.objects.exists()


# --- signing in with each type ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LEVELS))
def test_each_type_signs_in_through_the_method_page(kind, enrol, person):
    key = enrol(kind)
    label, aal, acr, amr = LEVELS[kind]
    client = Client()
    assert label in client.get("/login/").content.decode()
    response = client.post("/login/", {"method": kind})
    query = {"acr_values": "AAL2_OR_AAL3_ANY"}
    assert response.status_code == 302 and response.url == f"/login/{kind}/?acr_values=AAL2_OR_AAL3_ANY"
    page = client.get(response.url).content.decode()
    if kind == "passkey":  # no e-mail address: the browser offers the person's passkeys
        options = options_of(client, signin_verify_url(kind, query))
        assert "allowCredentials" not in options or options["allowCredentials"] == []
        assert "Email address" not in page
    else:
        assert "Email address" in page
        give_email(client, kind, person.user.email.upper(), query)
        options = options_of(client, signin_verify_url(kind, query))
        (credential_id,) = key.credentials
        assert [base64url_to_bytes(item["id"]) for item in options["allowCredentials"]] == [credential_id]
    assert options["userVerification"] == "required" and options["rpId"] == "careid.example.nhs.uk"
    response = post_answer(client, signin_verify_url(kind, query), key.get(options))
    assert response.status_code == 302 and response.url == "/"
    assert signed_in_as(client) == person.user
    auth = client.session[SESSION_AUTH]
    assert (auth["method"], auth["aal"], auth["acr"], auth["amr"]) == (kind, aal, acr, amr)
    credential = MODELS[kind].objects.get(user=person.user)
    assert credential.sign_count == 1 and credential.last_used_at is not None
    event = AuditEvent.objects.filter(event=Event.SIGNIN_SUCCEEDED, method=kind).get()
    assert event.aal == aal and event.details["acr"] == acr


def test_the_method_page_lists_the_types_in_cis2_order(client, db, settings):
    page = client.get("/login/").content.decode()
    labels = re.findall(r'nhsuk-radios__label" for="[^"]+">([^<]+)<', page)
    assert labels == ["Windows Hello", "Security key", "iPad app", "Authenticator app", "Passkey (private beta)"]
    labels = re.findall(r'nhsuk-radios__label" for="[^"]+">([^<]+)<', client.get("/login/?acr_values=AAL3_ANY").content.decode())
    assert labels == ["Windows Hello", "Security key", "iPad app"]


def test_passkeys_are_offered_only_in_the_private_beta(client, db, settings):
    from .conftest import reload_urls

    settings.CAREID_PASSKEY_BETA = False
    reload_urls()
    assert "Passkey" not in client.get("/login/").content.decode()
    assert client.get("/login/passkey/").status_code == 404
    assert client.post("/login/", {"method": "passkey"}).status_code == 400


def test_the_page_asked_for_is_reached_after_signing_in(enrol, person):
    key = enrol("security-key")
    client = Client()
    response = sign_in(client, "security-key", key, person.user.email, query={"goto": "/profile/"})
    assert response.status_code == 302 and response.url == "/profile/"



@pytest.mark.parametrize("kind", ["security-key", "passkey"])
@pytest.mark.parametrize("asked, reached", [("/profile/", "/profile/"), ("https://evil.example/", "/?goto_refused=1")])
def test_a_next_address_is_honoured_as_the_authenticator_app_sign_in_honours_it(kind, asked, reached, enrol, person):
    key = enrol(kind)
    app = Client()
    app.post(f"/login/authenticator-app/?next={asked}", {"email": person.user.email, "password": person.password})
    assert app.post(f"/login/authenticator-app/code/?next={asked}", {"token": person.fresh_code()}).url == reached
    response = sign_in(Client(), kind, key, person.user.email, query={"next": asked})
    assert response.status_code == 302 and response.url == reached

# --- no enumeration -----------------------------------------------------------------------------------------


def test_an_unknown_address_gets_the_same_page_and_a_stable_decoy_credential(enrol, person, setting_up):
    key = enrol("security-key")
    client = Client()
    give_email(client, "security-key", "nobody@nhs.net")
    first = options_of(client, signin_verify_url("security-key"))
    second = options_of(client, signin_verify_url("security-key"))
    decoy = first["allowCredentials"]
    assert decoy == second["allowCredentials"] and len(decoy) == 1 and decoy[0]["transports"] == ["usb", "nfc"]
    give_email(client, "security-key", person.user.email)
    real = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
    assert set(real[0]) == set(decoy[0]) and real[0]["id"] != decoy[0]["id"]

    give_email(client, "security-key", "nobody@nhs.net")
    options = options_of(client, signin_verify_url("security-key"))
    (credential_id,) = key.credentials
    response = post_answer(client, signin_verify_url("security-key"), key.get(options, credential_id=credential_id))
    assert response.status_code == 400
    assert error_summary(response) == ("Your security key could not be checked. Use the security key registered to "
                                       "your NHS Care Identity, or choose another login method.")
    failed(None, reason="unknown email")
    assert signed_in_as(client) is None


def test_the_decoy_is_as_long_as_the_types_credential_ids_usually_are(enrol, person, setting_up):
    """Security keys make ids of 16 to over 100 bytes; a decoy of one fixed length (it was 32) told an
    address with a key (a 64-byte id, say) from one without. It takes the most common registered length."""
    client = Client()
    give_email(client, "security-key", "nobody@nhs.net")
    [decoy] = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
    assert len(base64url_to_bytes(decoy["id"])) == 64  # nothing registered yet

    enrol("security-key")
    SecurityKey.objects.filter(user=person.user).update(credential_id=secrets.token_bytes(48))
    cache.clear()  # looked up once an hour
    give_email(client, "security-key", person.user.email)
    [real] = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
    give_email(client, "security-key", "nobody@nhs.net")
    [decoy] = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
    give_email(client, "security-key", "Nobody@nhs.net")
    [again] = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
    assert len(base64url_to_bytes(real["id"])) == len(base64url_to_bytes(decoy["id"])) == 48
    assert decoy["id"] == again["id"] != real["id"]


def test_the_decoy_and_a_real_key_are_offered_with_the_same_transports(enrol, person, setting_up):
    """A browser reports a key's transports in its own order and detail; offering them as stored would tell
    a real credential from the decoy. Both get the type's transports."""
    enrol("security-key")
    SecurityKey.objects.filter(user=person.user).update(transports=["nfc", "usb"])
    client = Client()
    give_email(client, "security-key", person.user.email)
    [real] = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
    give_email(client, "security-key", "nobody@nhs.net")
    [decoy] = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
    assert real["transports"] == decoy["transports"] and real["type"] == decoy["type"]


def test_a_person_without_that_type_gets_the_same_answer(person, setting_up):
    client = Client()
    key = authenticator_for("security-key", setting_up)
    give_email(client, "security-key", person.user.email)
    options = options_of(client, signin_verify_url("security-key"))
    key.create({"rp": {"id": "careid.example.nhs.uk"}, "user": {"id": "AAAA"}, "challenge": "A" * 43})
    response = post_answer(client, signin_verify_url("security-key"), key.get(options, credential_id=next(iter(key.credentials))))
    assert "Your security key could not be checked." in error_summary(response)
    failed(person.user, reason="unknown credential")


# --- the server refuses, audits, counts and changes nothing else ------------------------------------------


@pytest.fixture
def at_assertion(enrol, person):
    """A registered security key and a fresh browser at its sign-in ceremony."""
    key = enrol("security-key")
    client = Client()
    give_email(client, "security-key", person.user.email)
    return client, options_of(client, signin_verify_url("security-key")), key


def refused(client, person, answer: dict, reason: str, message: str = "Your security key could not be checked.",
            kind: str = "security-key"):
    credential = MODELS[kind].objects.get(user=person.user)
    response = post_answer(client, signin_verify_url(kind), answer)
    assert response.status_code == 400 and message in error_summary(response)
    assert signed_in_as(client) is None
    failed(person.user, reason=reason)
    after = MODELS[kind].objects.get(pk=credential.pk)
    assert (after.sign_count, after.last_used_at) == (credential.sign_count, credential.last_used_at)
    return response


def test_a_wrong_origin_is_refused(at_assertion, person):
    client, options, key = at_assertion
    refused(client, person, key.get(options, origin="https://careid.example.com"), "wrong origin")


def test_a_wrong_rp_id_is_refused(at_assertion, person):
    client, options, key = at_assertion
    refused(client, person, key.get(options, rp_id="example.com"), "wrong RP ID")


def test_an_assertion_is_good_once(at_assertion, person):
    client, options, key = at_assertion
    answer = key.get(options)
    assert post_answer(client, signin_verify_url("security-key"), answer).status_code == 302
    replayer = Client()
    give_email(replayer, "security-key", person.user.email)
    options_of(replayer, signin_verify_url("security-key"))
    refused(replayer, person, answer, "wrong challenge")
    empty = Client()  # no challenge issued at all
    give_email(empty, "security-key", person.user.email)
    refused(empty, person, answer, "no challenge", "This page has expired or was used already")


def test_a_challenge_raced_by_two_requests_is_used_once(at_assertion, person):
    client, options, key = at_assertion
    copy = dict(client.session["careid_webauthn_challenges"])
    assert post_answer(client, signin_verify_url("security-key"), key.get(options, uv=False)).status_code == 400
    session = client.session
    session["careid_webauthn_challenges"] = copy
    session.save()
    refused(client, person, key.get(options), "challenge used already", "This page has expired")


def test_an_expired_challenge_is_refused(at_assertion, person):
    client, options, key = at_assertion
    answer = key.get(options)
    with time_machine.travel(dt.timedelta(minutes=5, seconds=5)):
        refused(client, person, answer, "challenge expired", "This page has expired")


def test_an_unknown_credential_is_refused(at_assertion, person, setting_up):
    client, options, _key = at_assertion
    stranger = authenticator_for("security-key", setting_up)
    stranger.create({"rp": {"id": "careid.example.nhs.uk"}, "user": {"id": "AAAA"}, "challenge": "A" * 43})
    refused(client, person, stranger.get(options, credential_id=next(iter(stranger.credentials))), "unknown credential")


def test_a_sign_count_that_goes_back_is_refused_and_reported_as_a_possible_clone(at_assertion, person, mailbox):
    client, options, key = at_assertion
    assert post_answer(client, signin_verify_url("security-key"), key.get(options)).status_code == 302  # count 1
    thief = Client()
    give_email(thief, "security-key", person.user.email)
    options = options_of(thief, signin_verify_url("security-key"))
    refused(thief, person, key.get(options, sign_count=1), "sign count did not go up",
            "Your security key could not be used. Contact your registration authority.")
    event = AuditEvent.objects.get(event=Event.AUTHENTICATOR_CLONE_SUSPECTED)
    assert event.subject == person.user and event.outcome == Outcome.FAILURE
    assert (event.details["stored_count"], event.details["presented_count"]) == (1, 1)
    deliver_outbox()
    assert mailbox.wait_for(person.user.email, "A sign-in with your Security key was refused: it may have been copied")


def test_a_key_removed_while_its_answer_was_checked_is_not_reported_as_copied(transactional_db, at_assertion, person):
    """An RA removes a lost key while an answer from it is being checked: the answer's count could not be recorded
    on a row that was gone, and that was taken for a copied key (audited and e-mailed to the person). It is an
    unknown credential."""
    from django.db import connection

    from .conftest import require
    from .test_concurrency import committed_once_waited_on

    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    client, options, key = at_assertion
    removed = lambda: SecurityKey.objects.filter(user=person.user).delete()  # noqa: E731
    with committed_once_waited_on(removed) as waited:
        response = post_answer(client, signin_verify_url("security-key"), key.get(options))
    assert waited, "the answer never waited on the removal: no race happened"
    assert response.status_code == 400 and "Your security key could not be checked." in error_summary(response)
    assert signed_in_as(client) is None
    assert not AuditEvent.objects.filter(event=Event.AUTHENTICATOR_CLONE_SUSPECTED).exists()
    event = AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).latest("id")
    assert (event.subject, event.details["reason"]) == (person.user, "unknown credential (removed meanwhile)")


def test_a_count_recorded_meanwhile_is_the_one_the_clone_report_gives(transactional_db, at_assertion, person):
    """Two answers at once, the higher count recorded first: the other is refused as a possible copy, and the trail
    gives the count that stopped it, not the one read before (which was lower than the count presented)."""
    from django.db import connection

    from .conftest import require
    from .test_concurrency import committed_once_waited_on

    require(connection.vendor == "postgresql", "PostgreSQL (real concurrent transactions)")
    client, options, key = at_assertion
    other_answer = lambda: SecurityKey.objects.filter(user=person.user).update(sign_count=8)  # noqa: E731
    with committed_once_waited_on(other_answer) as waited:
        response = post_answer(client, signin_verify_url("security-key"), key.get(options, sign_count=7))
    assert waited, "the answer never waited on the other: no race happened"
    assert "Your security key could not be used. Contact your registration authority." in error_summary(response)
    event = AuditEvent.objects.get(event=Event.AUTHENTICATOR_CLONE_SUSPECTED)
    assert (event.details["stored_count"], event.details["presented_count"]) == (8, 7)
    assert SecurityKey.objects.get(user=person.user).sign_count == 8


def test_an_authenticator_that_did_not_verify_the_person_is_refused(at_assertion, person):
    client, options, key = at_assertion
    refused(client, person, key.get(options, uv=False), "user not verified", "did not check it was you")


def test_a_synced_credential_cannot_sign_in_as_an_aal3_type(at_assertion, person):
    client, options, key = at_assertion
    key.backup_eligible = True
    refused(client, person, key.get(options), "backup eligible")


def test_an_unreadable_answer_is_refused(at_assertion, person):
    client, options, key = at_assertion
    answer = key.get(options)
    answer["response"]["signature"] = answer["response"]["signature"][:-8] + "AAAAAAAA"
    refused(client, person, answer, "bad signature")


def test_an_answer_nested_too_deeply_to_read_is_refused_not_a_server_error(at_assertion, person):
    """A RecursionError from the JSON parser was a 500 page; it is an unreadable answer, refused and audited."""
    client, _options, _key = at_assertion
    for nested in ["[" * 50_000, '{"id":' * 10_000]:
        response = client.post(signin_verify_url("security-key"), {"credential": nested, "client_error": ""})
        assert response.status_code == 400 and "Your security key could not be checked." in error_summary(response)
        failed(person.user, reason="malformed response")
    response = Client().post("/login/passkey/", {"credential": "[" * 50_000, "client_error": ""})
    assert response.status_code == 400 and "Your passkey could not be checked." in error_summary(response)
    failed(None, reason="malformed response")
    assert signed_in_as(client) is None


def test_a_stored_public_key_that_cannot_be_used_refuses_the_sign_in_not_a_server_error(at_assertion, person):
    """A key registered before registration checked it could be used (its point off the curve): the sign-in
    is refused and audited, not a 500 page."""
    client, options, key = at_assertion
    off_the_curve = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32})
    SecurityKey.objects.filter(user=person.user).update(public_key=off_the_curve)
    refused(client, person, key.get(options), "invalid response")
    options = options_of(client, signin_verify_url("security-key"))
    refused(client, person, key.get(options, uv=False), "bad signature")  # the signature is checked for this one too


def test_what_the_browser_could_not_do_is_explained_and_not_counted(at_assertion, person):
    client, _options, _key = at_assertion
    for error, message in [("NotAllowedError", "Your security key did not respond, could not check it was you"),
                           ("SecurityError", "this page's address does not match"), ("", "Switch on JavaScript")]:
        response = post_answer(client, signin_verify_url("security-key"), None, client_error=error)
        assert response.status_code == 400 and message in error_summary(response), error
    person.user.refresh_from_db()
    failed(person.user, reason="not completed in the browser (nojs)")


def test_refused_assertions_never_lock_or_delay_the_care_identity(at_assertion, person, settings):
    """A stranger who knows the address posts assertions from a key of their own: each is refused and
    audited, but the person's account is neither delayed nor locked, and both their key and their
    password and app still sign them in."""
    settings.CAREID_CODE_LOCK_AFTER = 3
    settings.CAREID_SIGNIN_DELAY_FROM = 1
    client, options, key = at_assertion
    for _attempt in range(5):
        response = post_answer(client, signin_verify_url("security-key"), key.get(options, uv=False))
        assert response.status_code == 400 and "did not check it was you" in error_summary(response)
        options = options_of(client, signin_verify_url("security-key"))
    failed(person.user, reason="user not verified")
    assert AuditEvent.objects.filter(event=Event.SIGNIN_FAILED, subject=person.user).count() == 5
    assert not AuditEvent.objects.filter(event__in=[Event.ACCOUNT_LOCKED, Event.SIGNIN_THROTTLED]).exists()

    assert sign_in_with_app(Client(), person).status_code == 302
    response = post_answer(client, signin_verify_url("security-key"), key.get(options))
    assert response.status_code == 302 and signed_in_as(client) == person.user


def test_junk_passkey_answers_keep_nothing(enrol, person):
    """Assertions for credentials nobody registered: refused, and no throttle row per made-up credential."""
    enrol("passkey")
    client = Client()
    for junk in range(3):
        options = options_of(client, "/login/passkey/")
        stranger = authenticator_for("passkey", "careid.example.nhs.uk")
        stranger.create({"rp": {"id": "careid.example.nhs.uk"}, "user": {"id": "AAAA"}, "challenge": "A" * 43})
        response = post_answer(client, "/login/passkey/", stranger.get(options, credential_id=next(iter(stranger.credentials))))
        assert "Your passkey could not be checked." in error_summary(response), junk
    failed(None, reason="unknown credential")


def test_the_clients_address_is_limited(at_assertion, person, settings):
    """Refusals count against the client's address: past the limit even a good assertion is not checked."""
    settings.CAREID_IP_FAILURE_LIMIT = 3
    client, options, key = at_assertion
    for _attempt in range(3):
        post_answer(client, signin_verify_url("security-key"), key.get(options, uv=False))
        options = options_of(client, signin_verify_url("security-key"))
    response = post_answer(client, signin_verify_url("security-key"), key.get(options))
    assert response.status_code == 400 and "Too many failed attempts. Wait 900 seconds" in error_summary(response)
    assert signed_in_as(client) is None
    event = AuditEvent.objects.filter(event=Event.SIGNIN_THROTTLED).get()
    assert (event.subject, event.details["reason"]) == (person.user, "ip_throttled")
    stored = SecurityKey.objects.get(user=person.user)
    assert (stored.sign_count, stored.last_used_at) == (0, None)  # the good answer was never checked


def test_a_good_key_answer_tells_its_holder_of_a_lock_for_wrong_codes(at_assertion, person):
    """An RA-only lock (wrong security codes) stops keys too; only the key's holder learns of it."""
    client, options, key = at_assertion
    User.objects.filter(pk=person.user.pk).update(code_failures=30, locked_at=dt.datetime.now(dt.UTC),
                                                  lock_reason="codes")
    response = post_answer(client, signin_verify_url("security-key"), key.get(options))
    assert response.status_code == 400
    assert "locked after too many wrong security codes" in error_summary(response) and signed_in_as(client) is None
    event = AuditEvent.objects.filter(event=Event.SIGNIN_THROTTLED).get()
    assert (event.subject, event.details["reason"]) == (person.user, "locked")
    stranger = Client()
    give_email(stranger, "security-key", person.user.email)
    options = options_of(stranger, signin_verify_url("security-key"))
    response = post_answer(stranger, signin_verify_url("security-key"), key.get(options, uv=False))
    assert "did not check it was you" in error_summary(response) and "locked" not in error_summary(response)


# --- passkeys: no e-mail, the person found by the credential --------------------------------------------


def test_a_passkey_whose_user_handle_does_not_match_is_refused(enrol, person):
    key = enrol("passkey")
    client = Client()
    options = options_of(client, "/login/passkey/")
    refused(client, person, key.get(options, user_handle=b"\x00" * 32), "user handle does not match", kind="passkey",
            message="Your passkey could not be checked.")


def test_the_passkey_page_refuses_a_credential_of_another_type(enrol, person):
    key = enrol("security-key")  # the same person's security key, offered as a passkey
    client = Client()
    options = options_of(client, "/login/passkey/")
    response = post_answer(client, "/login/passkey/", key.get(options))
    assert "Your passkey could not be checked." in error_summary(response) and signed_in_as(client) is None
    event = AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).latest("id")
    assert event.details["reason"] == "unknown credential" and event.details["email"].startswith("passkey:")
    assert Passkey.objects.count() == 0 and WindowsHello.objects.count() == 0


def test_an_authenticator_without_a_signature_counter_signs_in_every_time(enrol, person):
    key = enrol("windows-hello", counts=False)  # many platform authenticators always say 0
    for _ in range(2):
        client = Client()
        assert sign_in(client, "windows-hello", key, person.user.email).status_code == 302
    assert WindowsHello.objects.get(user=person.user).sign_count == 0
    assert not AuditEvent.objects.filter(event=Event.AUTHENTICATOR_CLONE_SUSPECTED).exists()


def test_a_strangers_wrong_passwords_do_not_stop_a_key_from_signing_in(enrol, person):
    """100 wrong passwords lock what a password opens; a key proves more than a password, so it still
    signs its holder in (and the sign-in keeps the lock on the password, lifted by a reset)."""
    key = enrol("security-key")
    User.objects.filter(pk=person.user.pk).update(password_failures=100, locked_at=dt.datetime.now(dt.UTC),
                                                  lock_reason="passwords")
    client = Client()
    give_email(client, "security-key", person.user.email)
    options = options_of(client, signin_verify_url("security-key"))
    response = post_answer(client, signin_verify_url("security-key"), key.get(options))
    assert response.status_code == 302 and signed_in_as(client) == person.user
    person.user.refresh_from_db()
    assert person.user.lock_reason == "passwords"  # the password stays locked: the app still needs a reset
    refused = Client().post("/login/authenticator-app/", {"email": person.user.email, "password": person.password})
    assert "Your Care Identity is locked" in refused.content.decode()


def _forged_answer(client, kind: str, email: str, origin: str):
    """A stranger with no key takes the credential id the page offers for `email` (real or decoy) and answers
    for it with a key of their own, its flags saying the person was not verified."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from .soft_authenticator import Credential

    give_email(client, kind, email)
    options = options_of(client, signin_verify_url(kind))
    [offered] = options["allowCredentials"]
    stranger = authenticator_for(kind, origin)
    credential_id = base64url_to_bytes(offered["id"])
    stranger.credentials[credential_id] = Credential(credential_id, ec.generate_private_key(ec.SECP256R1()),
                                                     options["rpId"], b"x" * 32)
    return post_answer(client, signin_verify_url(kind), stranger.get(options, uv=False))


def test_a_forged_answer_does_not_tell_a_key_holders_address_from_an_unknown_one(enrol, person, setting_up):
    """py_webauthn checks the flags before the signature, and "did not check it was you" was said to any answer
    with the verified flag off: a stranger's forged one too, but only where the address has such a key. The
    particular message now comes only with a signature that checks out."""
    enrol("security-key")
    known = _forged_answer(Client(), "security-key", person.user.email, setting_up)
    unknown = _forged_answer(Client(), "security-key", "nobody@nhs.net", setting_up)
    assert known.status_code == unknown.status_code == 400
    assert error_summary(known) == error_summary(unknown)
    assert "did not check it was you" not in known.content.decode()


def _answer_queries(kind: str, email: str, origin: str) -> int:
    """The database work of a stranger's answer for the credential id the page offers `email` (real or decoy)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from .soft_authenticator import Credential

    client = Client()
    give_email(client, kind, email)
    options = options_of(client, signin_verify_url(kind))
    credential_id = base64url_to_bytes(options["allowCredentials"][0]["id"])
    stranger = authenticator_for(kind, origin)
    stranger.credentials[credential_id] = Credential(credential_id, ec.generate_private_key(ec.SECP256R1()),
                                                     options["rpId"], b"x" * 32)
    answer = stranger.get(options)
    with CaptureQueriesContext(connection) as queries:
        response = post_answer(client, signin_verify_url(kind), answer)
    assert response.status_code == 400 and "Your security key could not be checked." in error_summary(response)
    return len(queries.captured_queries)


def test_an_answer_does_the_same_database_work_for_a_known_and_an_unknown_address(enrol, person, setting_up):
    """The credential was looked up (and its signature checked) only when the address was someone's: one round
    trip fewer for an unknown address, which the answer's timing could tell, as the ceremony page's did."""
    enrol("security-key")
    assert _answer_queries("security-key", person.user.email, setting_up) == \
        _answer_queries("security-key", "nobody@nhs.net", setting_up)
    assert [event.details["reason"] for event in AuditEvent.objects.filter(event=Event.SIGNIN_FAILED).order_by("id")] \
        == ["bad signature: Could not verify authentication signature", "unknown email"]


def test_registering_the_credential_id_a_sign_in_offers_does_not_tell_a_real_one_from_the_decoy(
        signed_in, person, make_person, setting_up):
    """Someone with a Care Identity of their own takes the credential id the sign-in page offers for an address
    and registers it as theirs (attestation "none" proves nothing about the id): a real one was refused as
    "registered to another Care Identity" while the decoy registered, telling which addresses have a key.
    The decoy is refused with the same answer now, and the trail says which it was."""
    holder = make_person(email="mary.seacole@nhs.net")
    holders_browser = Client()
    sign_in_with_app(holders_browser, holder)
    assert register(holders_browser, "security-key", authenticator_for("security-key", setting_up)).status_code == 302

    def offered(email: str) -> bytes:
        client = Client()
        give_email(client, "security-key", email)
        [credential] = options_of(client, signin_verify_url("security-key"))["allowCredentials"]
        return base64url_to_bytes(credential["id"])

    def register_as_mine(credential_id: bytes):
        from cryptography.hazmat.primitives.asymmetric import ec

        from .soft_authenticator import Credential

        start_registration(signed_in, "windows-hello")
        options = options_of(signed_in, "/register/windows-hello/set-up/")
        mine = authenticator_for("windows-hello", setting_up)
        mine.credentials[credential_id] = Credential(credential_id, ec.generate_private_key(ec.SECP256R1()),
                                                     options["rp"]["id"], base64url_to_bytes(options["user"]["id"]))
        return post_answer(signed_in, "/register/windows-hello/set-up/", mine.create(options, credential_id=credential_id))

    real, decoy = register_as_mine(offered(holder.user.email)), register_as_mine(offered("nobody@nhs.net"))
    assert real.status_code == decoy.status_code == 400
    assert error_summary(real) == error_summary(decoy) and "registered to another Care Identity" in error_summary(decoy)
    assert not WindowsHello.objects.exists()
    reasons = [event.details["reason"] for event in AuditEvent.objects.filter(
        subject=person.user, event=Event.AUTHENTICATOR_REGISTRATION_FAILED).order_by("id")]
    assert reasons == ["credential registered to someone else", "credential id is a sign-in decoy"]


def _options_queries(client, kind: str, email: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    give_email(client, kind, email)
    options_of(client, signin_verify_url(kind))  # the decoy's length is cached from here on
    with CaptureQueriesContext(connection) as queries:
        options_of(client, signin_verify_url(kind))
    return len(queries.captured_queries)


def test_the_ceremony_page_does_the_same_database_work_for_a_known_and_an_unknown_address(enrol, person):
    """The person's credential was looked up only when the address was someone's: one round trip fewer for an
    unknown address, which its timing could tell."""
    enrol("security-key")
    assert _options_queries(Client(), "security-key", person.user.email) == \
        _options_queries(Client(), "security-key", "nobody@nhs.net")
