"""Registering the WebAuthn types (security key, Windows Hello, iPad, passkey) through the real pages, with
attestations made by a software authenticator with real keys (tests/soft_authenticator.py): what is stored,
and every answer the server must refuse, each audited with nothing changed."""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid

import cbor2
import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.test import Client
from webauthn.helpers import bytes_to_base64url

from accounts.models import User
from audit.models import AuditEvent, Event, Outcome
from authenticators import registry
from authenticators.models import IPad, Passkey, RegistrationLink, SecurityKey, UsedChallenge, WindowsHello
from authenticators.tasks import forget_abandoned_registrations_task
from authenticators.webauthn.flows import CEREMONY

from .conftest import body, run_task
from .conftest import sign_in as sign_in_with_app
from .test_registration_journey import code_from, link_path
from .webauthn_steps import (
    authenticator_for,
    ceremony_url,
    options_of,
    post_answer,
    register,
    start_registration,
)

MODELS = {"security-key": SecurityKey, "windows-hello": WindowsHello, "ipad": IPad, "passkey": Passkey}
ALL_TYPES = list(MODELS)


@pytest.fixture(autouse=True)
def setting_up(webauthn_site, passkey_beta):
    return webauthn_site


def deliver_outbox() -> None:
    """Send what the flows queued (a test in one transaction never commits, so nothing else sends it)."""
    from accounts import outbox
    from accounts.models import OutgoingEmail

    for email in OutgoingEmail.objects.filter(state=OutgoingEmail.State.QUEUED):
        outbox.deliver(email.pk)


def failures(user, reason_start: str = "") -> list[AuditEvent]:
    events = AuditEvent.objects.filter(subject=user, event=Event.AUTHENTICATOR_REGISTRATION_FAILED,
                                       outcome=Outcome.FAILURE)
    return [event for event in events if event.details["reason"].startswith(reason_start)]


def journey(user) -> RegistrationLink:
    return RegistrationLink.objects.filter(user=user, step__in=[CEREMONY, "done", "stopped"]).latest("created_at")


def error_summary(response) -> str:
    page = response.content.decode()
    found = re.search(r'<div class="nhsuk-error-summary__body">(.*?)</div>', page, re.S)
    assert found, page[:3000]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).replace("&#x27;", "'").strip()


# --- registering each type -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_each_type_registers_from_add_other_authenticators(signed_in, person, mailbox, kind, setting_up):
    page = signed_in.get(f"/authenticators/{kind}/").content.decode()
    name = registry.get(kind).name
    assert f"Register {name} with your Care Identity" in page
    assert "I confirm only I will have access to" in page and f"Register {name}</button>" in page
    assert "Registration link" not in page  # signed in recently: no e-mail, no One Time Password
    assert signed_in.post(f"/authenticators/{kind}/", {}).status_code == 400  # the checkbox is required

    start_registration(signed_in, kind)
    options = options_of(signed_in, ceremony_url(kind))
    assert options["rp"] == {"name": "NHS Care Identity", "id": "careid.example.nhs.uk"}
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    assert len(options["challenge"]) >= 43  # 32 bytes, base64url
    key = authenticator_for(kind, setting_up)
    response = post_answer(signed_in, ceremony_url(kind), key.create(options))
    assert response.status_code == 302 and response.url == f"/register/{kind}/done/"
    page = signed_in.get(response.url).content.decode()
    assert "Registration successful" in page and "Your device is registered." in page

    credential = MODELS[kind].objects.get(user=person.user)
    (credential_id,) = key.credentials
    assert bytes(credential.credential_id) == credential_id and credential.confirmed
    assert credential.sign_count == 0 and credential.aaguid == "00000000-0000-0000-0000-000000000000"
    assert credential.attachment == key.attachment and credential.transports == list(key.transports)
    assert credential.backup_eligible == credential.backed_up == (kind == "passkey")
    assert len(bytes(credential.user_handle)) == 32 and person.user.uid.encode() not in bytes(credential.user_handle)
    assert credential.created_at and credential.last_used_at is None
    event = AuditEvent.objects.get(subject=person.user, event=Event.AUTHENTICATOR_REGISTERED)
    assert event.method == kind and event.details["name"] == name
    article = "An" if kind == "ipad" else "A"
    deliver_outbox()
    message = mailbox.wait_for(person.user.email, f"{article} {name} was added to your Care Identity")
    assert person.user.uid in body(message)
    assert name in signed_in.get("/profile/").content.decode()


def test_the_options_ask_each_type_for_its_kind_of_authenticator(signed_in):
    wanted = {"security-key": ("cross-platform", "discouraged", ["security-key"]),
              "windows-hello": ("platform", "discouraged", ["client-device"]),
              "ipad": ("platform", "discouraged", ["client-device"]),
              "passkey": (None, "required", ["client-device", "hybrid"])}
    for kind, (attachment, resident_key, hints) in wanted.items():
        start_registration(signed_in, kind)
        options = options_of(signed_in, ceremony_url(kind))
        assert options["authenticatorSelection"].get("authenticatorAttachment") == attachment, kind
        assert options["authenticatorSelection"]["residentKey"] == resident_key, kind
        assert options["hints"] == hints, kind


def test_one_person_keeps_one_user_handle_and_registered_credentials_are_excluded(signed_in, person, setting_up):
    key = authenticator_for("security-key", setting_up)
    register(signed_in, "security-key", key)
    start_registration(signed_in, "windows-hello")
    options = options_of(signed_in, ceremony_url("windows-hello"))
    handle = bytes(SecurityKey.objects.get(user=person.user).user_handle)
    assert options["user"]["id"] == bytes_to_base64url(handle)
    assert [item["id"] for item in options["excludeCredentials"]] == [
        bytes_to_base64url(cid) for cid in key.credentials]
    hello = authenticator_for("windows-hello", setting_up)
    assert post_answer(signed_in, ceremony_url("windows-hello"), hello.create(options)).status_code == 302
    assert bytes(WindowsHello.objects.get(user=person.user).user_handle) == handle


def test_registering_needs_a_recent_sign_in(client, person):
    sign_in_with_app(client, person)
    with time_machine.travel(dt.timedelta(minutes=6)):
        response = client.get("/authenticators/security-key/")
    assert response.status_code == 302 and "reauth=1" in response.url


def test_a_key_is_added_only_within_5_minutes_of_the_sign_in(signed_in, person, setting_up):
    """The journey lasts 30 minutes; someone at a computer left signed in must not add their own key 20
    minutes after the person last signed in. The ceremony page (options) and its answer (the save) both
    send them to sign in again, as "Register" does; the journey then goes on."""
    start_registration(signed_in, "security-key")
    options = options_of(signed_in, ceremony_url("security-key"))
    key = authenticator_for("security-key", setting_up)
    with time_machine.travel(dt.timedelta(minutes=20)):
        for response in (signed_in.get(ceremony_url("security-key")),
                         post_answer(signed_in, ceremony_url("security-key"), key.create(options))):
            assert response.status_code == 302 and response.url.startswith("/login/") and "reauth=1" in response.url
            assert "set-up" in response.url  # back to the ceremony after signing in
        assert not SecurityKey.objects.filter(user=person.user).exists()
        refused = AuditEvent.objects.get(event=Event.LINK_REFUSED, subject=person.user)
        assert refused.details["reason"] == "re-authentication needed"

        sign_in_with_app(signed_in, person)
        options = options_of(signed_in, ceremony_url("security-key"))
        assert post_answer(signed_in, ceremony_url("security-key"), key.create(options)).status_code == 302
    assert SecurityKey.objects.filter(user=person.user).exists()


def test_a_second_registration_of_a_type_is_refused_with_a_clear_message(signed_in, person, setting_up):
    register(signed_in, "security-key", authenticator_for("security-key", setting_up))
    response = signed_in.get("/authenticators/security-key/")
    assert response.status_code == 409
    assert "You already have a Security key registered" in response.content.decode()
    page = signed_in.get("/authenticators/").content.decode()
    assert 'value="security-key"' not in page and "<strong>Security key</strong>" in page
    assert signed_in.post("/authenticators/", {"kind": "security-key"}).status_code == 400
    assert SecurityKey.objects.filter(user=person.user).count() == 1


def test_a_key_answered_after_the_type_was_registered_in_another_browser_is_refused_and_audited(
        signed_in, person, setting_up):
    """Two browsers at the same type's ceremony: the first registers; the second's answer is refused (the one of
    each type), and like every refused step it is in the trail, which it was not."""
    other = Client()
    assert sign_in_with_app(other, person).status_code == 302
    start_registration(signed_in, "security-key")
    start_registration(other, "security-key")
    second_journey = RegistrationLink.objects.filter(user=person.user).latest("pk")
    first, second = (options_of(client, ceremony_url("security-key")) for client in (signed_in, other))
    key = authenticator_for("security-key", setting_up)
    assert post_answer(signed_in, ceremony_url("security-key"), key.create(first)).status_code == 302
    response = post_answer(other, ceremony_url("security-key"), authenticator_for("security-key", setting_up).create(second))
    assert response.status_code == 409 and "You already have a Security key registered" in response.content.decode()
    assert SecurityKey.objects.filter(user=person.user).count() == 1
    event = AuditEvent.objects.filter(subject=person.user, event=Event.LINK_REFUSED).get()
    assert event.outcome == Outcome.FAILURE
    assert event.details == {"link_id": second_journey.pk, "reason": "already registered"}


# --- the server refuses, audits and changes nothing ---------------------------------------------------


@pytest.fixture
def at_ceremony(signed_in, person, setting_up):
    """A security key journey at the ceremony, with the options the page gave."""
    start_registration(signed_in, "security-key")
    options = options_of(signed_in, ceremony_url("security-key"))
    return signed_in, options, authenticator_for("security-key", setting_up)


def refused(client, person, answer: dict, reason: str, message: str = "could not be registered"):
    before = AuditEvent.objects.filter(subject=person.user, event=Event.AUTHENTICATOR_REGISTRATION_FAILED).count()
    response = post_answer(client, ceremony_url("security-key"), answer)
    assert response.status_code == 400, response
    assert message in error_summary(response)
    assert not SecurityKey.objects.filter(user=person.user).exists()
    assert journey(person.user).step == CEREMONY  # the journey is where it was
    events = failures(person.user)
    assert len(events) == before + 1 and events[0].details["reason"].startswith(reason), [e.details for e in events]
    return response


def test_a_wrong_origin_is_refused(at_ceremony, person):
    client, options, key = at_ceremony
    refused(client, person, key.create(options, origin="https://careid.example.com"), "wrong origin")


def test_a_wrong_rp_id_is_refused(at_ceremony, person):
    client, options, key = at_ceremony
    refused(client, person, key.create(options, rp_id="example.com"), "wrong RP ID")


def test_a_challenge_is_used_once(at_ceremony, person):
    client, options, key = at_ceremony
    refused(client, person, key.create(options, uv=False), "user not verified", "did not check it was you")
    # The challenge went with that answer (the page now holds a new one): the same ceremony's good answer
    # is refused too.
    refused(client, person, key.create(options), "wrong challenge")


def test_an_answer_without_a_challenge_is_refused(signed_in, person, setting_up):
    start_registration(signed_in, "security-key")  # the ceremony page never shown: no challenge issued
    options = {"rp": {"id": "careid.example.nhs.uk"}, "user": {"id": "AAAA"}, "challenge": "A" * 43}
    refused(signed_in, person, authenticator_for("security-key", setting_up).create(options), "no challenge",
            "This page has expired or was used already")


def test_a_challenge_raced_by_two_requests_is_used_once(at_ceremony, person):
    """Two requests with copies of the same session: the database claims the challenge's first use."""
    client, options, key = at_ceremony
    copy = dict(client.session["careid_webauthn_challenges"])
    first = post_answer(client, ceremony_url("security-key"), key.create(options, uv=False))
    assert first.status_code == 400  # used (and refused for another reason)
    session = client.session
    session["careid_webauthn_challenges"] = copy
    session.save()
    refused(client, person, key.create(options), "challenge used already", "This page has expired or was used already")


def test_an_expired_challenge_is_refused(at_ceremony, person):
    client, options, key = at_ceremony
    answer = key.create(options)
    with time_machine.travel(dt.timedelta(minutes=5, seconds=5)):
        sign_in_with_app(client, person)  # signing in again (5 minutes on, it must) gives the challenge no new life
        refused(client, person, answer, "challenge expired", "This page has expired")


def test_an_authenticator_that_did_not_verify_the_person_is_refused(at_ceremony, person):
    client, options, key = at_ceremony
    refused(client, person, key.create(options, uv=False), "user not verified",
            "Your security key did not check it was you")


def test_a_credential_registered_to_someone_else_is_refused(at_ceremony, person, make_person, setting_up):
    client, options, key = at_ceremony
    other = make_person(email="florence.nightingale@nhs.net")
    other_client = Client()
    sign_in_with_app(other_client, other)
    # The same authenticator's credential, for someone else:
    assert register(other_client, "security-key", key).status_code == 302
    (credential_id,) = key.credentials
    response = refused(client, person, key.create(options, credential_id=credential_id),
                       "credential registered to someone else", "registered to another Care Identity")
    assert failures(person.user)[0].details["held_by"] == other.user.uid  # the RA can see whose it is
    page = response.content.decode()
    assert other.user.uid not in page and other.user.email not in page and "Nightingale" not in page  # the person not
    assert bytes(SecurityKey.objects.get(user=other.user).credential_id) == credential_id  # theirs is untouched


def test_the_wrong_kind_of_authenticator_is_refused_with_a_clear_message(at_ceremony, person):
    client, options, key = at_ceremony
    refused(client, person, key.create(options, attachment="platform"), "wrong attachment",
            "You used this computer's own sign-in (such as Windows Hello). To register a security key")


def test_windows_hello_answered_by_a_security_key_is_refused(signed_in, person, setting_up):
    start_registration(signed_in, "windows-hello")
    options = options_of(signed_in, ceremony_url("windows-hello"))
    usb = authenticator_for("security-key", setting_up)
    response = post_answer(signed_in, ceremony_url("windows-hello"), usb.create(options))
    assert response.status_code == 400
    assert ("You used a security key. To register Windows Hello, use your computer's own sign-in (face, fingerprint "
            "or PIN).") in error_summary(response)
    assert not WindowsHello.objects.exists()


def test_a_synced_passkey_is_not_an_aal3_authenticator(at_ceremony, person):
    client, options, key = at_ceremony
    key.backup_eligible = True
    refused(client, person, key.create(options), "backup eligible", "can be copied to your other devices")


def test_an_unreadable_answer_is_refused(at_ceremony, person):
    client, options, key = at_ceremony
    answer = key.create(options)
    answer["response"]["attestationObject"] = "not-cbor"
    refused(client, person, answer, "attestation not valid")
    response = client.post(ceremony_url("security-key"), {"credential": "{not json"})
    assert response.status_code == 400 and failures(person.user)[0].details["reason"].startswith("malformed")


def test_an_answer_nested_too_deeply_to_read_is_refused_not_a_server_error(at_ceremony, person):
    """Python's JSON parser gives up on deep nesting with a RecursionError, which was no parse error to
    py_webauthn or careid: the page was a 500. It is an answer that cannot be read, like any other."""
    client, options, key = at_ceremony
    for nested in ["[" * 50_000, '{"id":' * 10_000]:
        response = client.post(ceremony_url("security-key"), {"credential": nested})
        assert response.status_code == 400 and "could not be registered" in error_summary(response)
        assert failures(person.user)[0].details["reason"].startswith("malformed response")
    assert not SecurityKey.objects.filter(user=person.user).exists() and journey(person.user).step == CEREMONY


@pytest.mark.parametrize("public_key", [
    cbor2.dumps({}),  # no key type: py_webauthn's KeyError was a 500 page
    cbor2.dumps([]),
    # A P-256 key whose point is not on the curve: registered, and then every sign-in with it was a 500 page.
    cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}),
    cbor2.dumps({1: 1, 3: -8, -1: 6, -2: b"\x00" * 5}),  # an Ed25519 key of 5 bytes
], ids=["empty", "not-a-map", "off-the-curve", "short-ed25519"])
def test_a_public_key_that_cannot_be_used_is_refused(at_ceremony, person, public_key):
    client, options, key = at_ceremony
    refused(client, person, key.create(options, public_key=public_key), "invalid response")


def test_what_the_browser_could_not_do_is_explained_audited_and_not_counted(at_ceremony, person):
    client, options, key = at_ceremony
    for error, message in [
        ("NotAllowedError", "Your security key did not respond, could not check it was you"),
        ("unsupported", "This browser cannot use a security key."),
        ("InvalidStateError", "This authenticator is already registered on your Care Identity."),
        ("", "Switch on JavaScript"),  # the page's script did not run
    ]:
        response = post_answer(client, ceremony_url("security-key"), None, client_error=error)
        assert response.status_code == 400 and message in error_summary(response), error
    reasons = [event.details["reason"] for event in failures(person.user)]
    assert reasons == ["not completed in the browser (nojs)", "not completed in the browser (InvalidStateError)",
                       "not completed in the browser (unsupported)", "not completed in the browser (NotAllowedError)"]
    assert journey(person.user).failures == 0
    assert post_answer(client, ceremony_url("security-key"), key.create(options_of(client, ceremony_url("security-key")))).status_code == 302


def test_five_refused_answers_end_the_journey(at_ceremony, person):
    client, options, key = at_ceremony
    for _ in range(4):
        post_answer(client, ceremony_url("security-key"), key.create(options, origin="https://evil.example"))
    response = post_answer(client, ceremony_url("security-key"), key.create(options, origin="https://evil.example"))
    assert response.status_code == 403 and "Your authenticator was refused too many times" in response.content.decode()
    assert journey(person.user).step == "stopped"
    assert client.get(ceremony_url("security-key")).status_code == 410


def test_used_challenges_are_forgotten_by_the_hourly_clean_up(at_ceremony):
    client, options, key = at_ceremony
    post_answer(client, ceremony_url("security-key"), key.create(options))
    assert UsedChallenge.objects.count() == 1
    assert run_task(forget_abandoned_registrations_task) == 0
    with time_machine.travel(dt.timedelta(minutes=6)):
        assert run_task(forget_abandoned_registrations_task) == 1
    assert not UsedChallenge.objects.exists()


# --- an allow-list of authenticator models (AAGUIDs) with verified attestation --------------------------

ALLOWED = "2fc0579f-8113-47ea-b116-bb5a8db9202a"  # e.g. a FIDO2 Certified Level 2 key's AAGUID


def _certificate(subject: str, key, issuer_key, issuer: str, *, ca: bool, aaguid: bytes | None = None) -> x509.Certificate:
    """`aaguid`: the model the certificate is for, in FIDO's extension id-fido-gen-ce-aaguid (an OCTET STRING)."""
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if aaguid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + aaguid), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def vendor(tmp_path, settings):
    """A vendor's attestation root (in CAREID_WEBAUTHN_ATTESTATION_ROOTS) and one device certificate."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("Test Vendor Root", root_key, root_key, "Test Vendor Root", ca=True)
    device_key = ec.generate_private_key(ec.SECP256R1())
    device = _certificate("Test Vendor Key", device_key, root_key, "Test Vendor Root", ca=False)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    settings.CAREID_WEBAUTHN_ALLOWED_AAGUIDS = [ALLOWED]
    settings.CAREID_WEBAUTHN_ATTESTATION_ROOTS = str(roots)
    return device_key, device.public_bytes(serialization.Encoding.DER)


def test_with_an_allow_list_only_listed_models_with_a_verified_attestation_register(signed_in, person, vendor,
                                                                                  setting_up):
    device_key, device_der = vendor
    start_registration(signed_in, "security-key")
    options = options_of(signed_in, ceremony_url("security-key"))
    assert options["attestation"] == "direct"
    listed = authenticator_for("security-key", setting_up, aaguid=uuid.UUID(ALLOWED).bytes)
    unlisted = authenticator_for("security-key", setting_up)
    for answer, reason in [
        (lambda options: listed.create(options), "no attestation certificate (none)"),  # "none": the AAGUID is a claim
        (lambda options: listed.create(options, fmt="packed"), "no attestation certificate (packed)"),  # self attestation
        (lambda options: listed.create(options, fmt="packed", x5c=[device_der],
                                       attestation_key=ec.generate_private_key(ec.SECP256R1())),
         "attestation not valid"),  # not signed with the certificate's key
    ]:
        response = post_answer(signed_in, ceremony_url("security-key"), answer(options))
        assert response.status_code == 400
        assert failures(person.user)[0].details["reason"].startswith(reason)
        options = options_of(signed_in, ceremony_url("security-key"))
    refusal = post_answer(signed_in, ceremony_url("security-key"),
                          unlisted.create(options, fmt="packed", attestation_key=device_key, x5c=[device_der]))
    assert "approved authenticators" in error_summary(refusal)
    assert failures(person.user)[0].details["reason"].startswith("authenticator model not allowed")
    options = options_of(signed_in, ceremony_url("security-key"))
    response = post_answer(signed_in, ceremony_url("security-key"),
                           listed.create(options, fmt="packed", attestation_key=device_key, x5c=[device_der]))
    assert response.status_code == 302
    assert SecurityKey.objects.get(user=person.user).aaguid == ALLOWED



def test_an_attestation_certificate_for_another_model_cannot_claim_a_listed_one(signed_in, person, vendor, setting_up,
                                                                               settings):
    """A FIDO attestation certificate names the model it was made for (extension id-fido-gen-ce-aaguid, which
    WebAuthn says must match the AAGUID the authenticator claims): a certificate under a trusted root for an
    unlisted model, whose key its owner can use (a developer edition's), signed a listed model's AAGUID and
    was registered as one."""
    root_key = ec.generate_private_key(ec.SECP256R1())  # another vendor's root, trusted too
    root = _certificate("Other Vendor Root", root_key, root_key, "Other Vendor Root", ca=True)
    with open(settings.CAREID_WEBAUTHN_ATTESTATION_ROOTS, "ab") as roots:
        roots.write(root.public_bytes(serialization.Encoding.PEM))
    unlisted_model = uuid.uuid4()
    device_key = ec.generate_private_key(ec.SECP256R1())
    device = _certificate("Other Vendor Key", device_key, root_key, "Other Vendor Root", ca=False,
                          aaguid=unlisted_model.bytes).public_bytes(serialization.Encoding.DER)
    claiming = authenticator_for("security-key", setting_up, aaguid=uuid.UUID(ALLOWED).bytes)
    start_registration(signed_in, "security-key")
    options = options_of(signed_in, ceremony_url("security-key"))
    response = post_answer(signed_in, ceremony_url("security-key"),
                           claiming.create(options, fmt="packed", attestation_key=device_key, x5c=[device]))
    assert response.status_code == 400 and "approved authenticators" in error_summary(response)
    assert failures(person.user)[0].details["reason"].startswith(f"attestation certificate is for {unlisted_model}")
    assert not SecurityKey.objects.filter(user=person.user).exists()

    listed_device = _certificate("Other Vendor Key", device_key, root_key, "Other Vendor Root", ca=False,
                                 aaguid=uuid.UUID(ALLOWED).bytes).public_bytes(serialization.Encoding.DER)
    options = options_of(signed_in, ceremony_url("security-key"))
    response = post_answer(signed_in, ceremony_url("security-key"),
                           claiming.create(options, fmt="packed", attestation_key=device_key, x5c=[listed_device]))
    assert response.status_code == 302 and SecurityKey.objects.get(user=person.user).aaguid == ALLOWED


@pytest.mark.parametrize("kind", ["windows-hello", "ipad", "passkey"])
def test_the_allow_list_applies_only_to_types_that_ask_for_attestation(signed_in, person, vendor, setting_up, kind):
    # Platform authenticators and passkeys give no attestation an RA could check (or an anonymous one):
    # the allow-list of key models must not refuse them.
    start_registration(signed_in, kind)
    options = options_of(signed_in, ceremony_url(kind))
    assert options["attestation"] == "none"
    response = post_answer(signed_in, ceremony_url(kind), authenticator_for(kind, setting_up).create(options))
    assert response.status_code == 302, error_summary(response)
    assert MODELS[kind].objects.get(user=person.user).aaguid == "00000000-0000-0000-0000-000000000000"
    assert not failures(person.user)

def test_an_organisation_can_hold_windows_hello_to_the_allow_list_too(signed_in, person, vendor, setting_up, settings):
    """CAREID_WEBAUTHN_ATTESTED_TYPES names the types the allow-list covers (security keys by default): with
    Windows Hello in it, its registration asks for attestation and an unlisted model is refused."""
    device_key, device_der = vendor
    settings.CAREID_WEBAUTHN_ATTESTED_TYPES = ["security-key", "windows-hello"]
    start_registration(signed_in, "windows-hello")
    options = options_of(signed_in, ceremony_url("windows-hello"))
    assert options["attestation"] == "direct"
    response = post_answer(signed_in, ceremony_url("windows-hello"),
                           authenticator_for("windows-hello", setting_up).create(options))
    assert response.status_code == 400
    assert failures(person.user)[0].details["reason"].startswith("no attestation certificate")
    assert not MODELS["windows-hello"].objects.filter(user=person.user, confirmed=True).exists()


def test_an_attested_type_that_is_no_webauthn_type_refuses_to_start():
    import subprocess
    import sys

    from .conftest import ROOT

    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "CAREID_WEBAUTHN_ATTESTED_TYPES": "security-key,windows-helo"})
    assert result.returncode != 0
    assert "CAREID_WEBAUTHN_ATTESTED_TYPES names windows-helo" in result.stderr


# --- from a registration link issued by an RA: e-mail, One Time Password, then the ceremony ---------------


def test_a_person_whose_first_authenticator_is_a_key_registers_it_from_an_ra_link(
        client, transactional_db, seeded_allow_list, fast_hashing, mailbox, setting_up):
    from accounts.flows import invite_user
    from authenticators.flows import issue_registration_link

    user, _invitation = invite_user(email="mary.seacole@nhs.net", first_name="Mary", last_name="Seacole")
    link = issue_registration_link(user=user, kind="security-key", purpose=RegistrationLink.Purpose.EMAILED)
    message = mailbox.wait_for(user.email, "Your link to register Security key")
    assert link.url in body(message)

    page = client.get(link_path(link)).content.decode()
    assert "Register Security key with your Care Identity" in page and "The register link will expire at " in page
    response = client.post(link_path(link), {"confirm": "on"})
    live = RegistrationLink.objects.by_token(response.url.split("/")[2])
    response = client.post(link_path(live), {"email": "Mary.Seacole@nhs.net"})
    assert response.status_code == 302 and response.url == "/register/security-key/code/"
    assert client.get(ceremony_url("security-key")).status_code == 409  # not before the e-mail is proven
    response = client.post(response.url, {"code": code_from(mailbox, user.email)})
    assert response.status_code == 302 and response.url == ceremony_url("security-key")

    key = authenticator_for("security-key", setting_up)
    response = post_answer(client, ceremony_url("security-key"), key.create(options_of(client, ceremony_url("security-key"))))
    assert response.status_code == 302
    page = client.get(response.url).content.decode()
    assert "Registration successful" in page and "You can now close this page." in page
    user.refresh_from_db()
    assert SecurityKey.objects.filter(user=user).exists() and not user.has_usable_password()  # no password needed
    assert user.emailaddress_set.get(email=user.email).verified
    assert mailbox.wait_for(user.email, "A Security key was added to your Care Identity")
    assert User.objects.get(pk=user.pk).is_active


def test_a_registration_under_way_ends_with_a_suspension_and_stays_ended_after_reinstatement(
        client, transactional_db, seeded_allow_list, fast_hashing, mailbox, setting_up, ra_staff):
    """A journey past its link (the e-mail proven, at the ceremony) when the RA suspends the profile (a stolen
    invitation, a mailbox read by someone else): whoever holds it cannot register a key once it is reinstated."""
    from accounts.flows import invite_user
    from accounts.roles import RA_AGENT
    from authenticators.flows import issue_registration_link

    _, admin = ra_staff(RA_AGENT)
    user, _invitation = invite_user(email="mary.seacole@nhs.net", first_name="Mary", last_name="Seacole")
    link = issue_registration_link(user=user, kind="security-key", purpose=RegistrationLink.Purpose.EMAILED)
    live = RegistrationLink.objects.by_token(client.post(link_path(link), {"confirm": "on"}).url.split("/")[2])
    client.post(link_path(live), {"email": user.email})
    assert client.post("/register/security-key/code/", {"code": code_from(mailbox, user.email)}).status_code == 302
    options = options_of(client, ceremony_url("security-key"))

    assert admin.post(f"/admin/accounts/user/{user.pk}/suspend/", {"reason": "invitation reported stolen"}).status_code == 302
    suspended = AuditEvent.objects.get(event=Event.USER_SUSPENDED, subject=user)
    assert suspended.details["journeys_ended"] == 1 and suspended.details["links_revoked"] == 2  # invitation, link
    live.refresh_from_db()
    assert live.is_revoked and live.journey_is_over
    assert admin.post(f"/admin/accounts/user/{user.pk}/reinstate/", {"reason": "mailbox secured"}).status_code == 302

    response = post_answer(client, ceremony_url("security-key"), authenticator_for("security-key", setting_up).create(options))
    assert response.status_code == 410 and "Your registration has ended" in response.content.decode()
    assert "registration authority ended" not in response.content.decode()  # as any ended journey: no hint of why
    assert AuditEvent.objects.get(event=Event.LINK_EXPIRED, subject=user).details == {"link_id": live.pk,
                                                                                       "reason": "revoked"}
    assert client.get(ceremony_url("security-key")).status_code == 410
    assert not SecurityKey.objects.filter(user=user).exists()


def test_a_new_code_can_be_sent_during_a_key_registration_from_a_link(
        client, transactional_db, seeded_allow_list, fast_hashing, mailbox, setting_up, settings):
    from accounts.flows import invite_user
    from authenticators.flows import issue_registration_link

    settings.CAREID_EMAIL_CODE_COOLDOWN = dt.timedelta(0)
    user, _invitation = invite_user(email="mary.seacole@nhs.net", first_name="Mary", last_name="Seacole")
    link = issue_registration_link(user=user, kind="security-key", purpose=RegistrationLink.Purpose.EMAILED)
    response = client.post(link_path(link), {"confirm": "on"})
    live = RegistrationLink.objects.by_token(response.url.split("/")[2])
    assert client.post(link_path(live), {"email": user.email}).url == "/register/security-key/code/"
    code_from(mailbox, user.email)
    response = client.post("/register/security-key/code/resend/")
    assert response.status_code == 302 and response.url == "/register/security-key/code/?sent=1"
    response = client.post("/register/security-key/code/", {"code": code_from(mailbox, user.email, count=2)})
    assert response.status_code == 302 and response.url == ceremony_url("security-key")
