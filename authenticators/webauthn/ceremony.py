"""The WebAuthn ceremonies themselves, on py_webauthn: each type's options (keyed by registry key: the
registry knows nothing of WebAuthn), the options a browser is given, and checking what it sends back.
Nothing here reads a request or changes a row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from django.conf import settings
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    encode_cbor,
    options_to_json_dict,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse, WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticationCredential,
    AuthenticatorAttachment,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialHint,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from authenticators.registry import AuthenticatorType

from . import kinds

RP_NAME = "NHS Care Identity"
CHALLENGE_BYTES = 32  # from `secrets` (flows.py); NIST SP 800-63B asks for at least 64 bits
ALL_FORMATS = list(AttestationFormat)


@dataclass(frozen=True)
class Profile:
    """What one WebAuthn type asks of the browser, and how its pages speak of it."""

    device: str  # as in a sentence: "your security key"
    attachment: AuthenticatorAttachment | None  # None: either kind
    resident_key: ResidentKeyRequirement
    hints: tuple[PublicKeyCredentialHint, ...]
    transports: tuple[str, ...]  # how a credential of this type is usually reached (decoy credentials too)
    device_bound: bool  # AAL3: a credential that can be copied to other devices (backup eligible) is refused
    sole_access: str  # the "I confirm only I will have access to …" checkbox
    set_up: str
    needs: tuple[str, ...]
    ceremony_heading: str
    ceremony_text: str
    signin_heading: str
    use_heading: str
    use_text: str
    wrong_attachment: str  # the response came from the other kind of authenticator
    not_answered: str  # the browser gave up: cancelled, timed out, or no such authenticator here


_BROWSER = "use a supported browser (Chrome or Edge)"
_PROMPTS = "follow the prompts to complete the registration"

PROFILES: dict[str, Profile] = {
    kinds.WINDOWS_HELLO.key: Profile(
        device="Windows Hello",
        attachment=AuthenticatorAttachment.PLATFORM,
        resident_key=ResidentKeyRequirement.DISCOURAGED,
        hints=(PublicKeyCredentialHint.CLIENT_DEVICE,),
        transports=(AuthenticatorTransport.INTERNAL.value,),
        device_bound=True,
        sole_access="I confirm only I will have access to Windows Hello on this computer while it can connect to my "
                    "Care Identity profile.",
        set_up="Windows Hello must be set up on this computer (Settings, Accounts, Sign-in options) with your face, "
               "fingerprint or a PIN. Register it on the computer you will sign in on.",
        needs=("use the Windows computer you will sign in on", "check Windows Hello is set up on it", _BROWSER,
               _PROMPTS),
        ceremony_heading="Set up Windows Hello",
        ceremony_text="Select 'Continue', then use your face, fingerprint or PIN when Windows asks.",
        signin_heading="Sign in with Windows Hello",
        use_heading="Use Windows Hello",
        use_text="Select 'Sign in', then use your face, fingerprint or PIN when Windows asks.",
        wrong_attachment="You used a security key. To register Windows Hello, use your computer's own sign-in "
                         "(face, fingerprint or PIN).",
        not_answered="Windows Hello did not respond, could not check it was you, or you cancelled. Check Windows Hello "
                     "is set up on this computer, then try again. If you have a security key, choose Security key "
                     "instead.",
    ),
    kinds.SECURITY_KEY.key: Profile(
        device="security key",
        attachment=AuthenticatorAttachment.CROSS_PLATFORM,
        resident_key=ResidentKeyRequirement.DISCOURAGED,
        hints=(PublicKeyCredentialHint.SECURITY_KEY,),
        transports=(AuthenticatorTransport.USB.value, AuthenticatorTransport.NFC.value),
        device_bound=True,
        sole_access="I confirm only I will have access to this security key while it can connect to my Care Identity "
                    "profile.",
        set_up="Use the FIDO2 security key your organisation gave you. If it has no fingerprint reader, it needs a PIN: "
               "your IT service desk can help you set one.",
        needs=("have your security key with you", "use a computer with a USB port or an NFC reader", _BROWSER,
               _PROMPTS),
        ceremony_heading="Register your security key",
        ceremony_text="Select 'Continue', then insert your security key (or hold it to the reader) and touch it when it "
                      "flashes. Enter its PIN if your browser asks.",
        signin_heading="Sign in with a security key",
        use_heading="Use your security key",
        use_text="Select 'Sign in', then insert your security key and touch it. Enter its PIN if your browser asks.",
        wrong_attachment="You used this computer's own sign-in (such as Windows Hello). To register a security key, "
                         "insert your security key and touch it when your browser asks.",
        not_answered="Your security key did not respond, could not check it was you (PIN or fingerprint), or you "
                     "cancelled. Insert your security key, try again and touch the key when your browser asks. If you "
                     "meant to use this computer's own sign-in, choose Windows Hello instead.",
    ),
    kinds.IPAD.key: Profile(
        device="iPad",
        attachment=AuthenticatorAttachment.PLATFORM,
        resident_key=ResidentKeyRequirement.DISCOURAGED,
        hints=(PublicKeyCredentialHint.CLIENT_DEVICE,),
        transports=(AuthenticatorTransport.INTERNAL.value,),
        device_bound=True,
        sole_access="I confirm only I will have access to this iPad while it can connect to my Care Identity profile.",
        set_up="Touch ID must be set up on this iPad (Settings, Touch ID & Passcode). Register on the iPad you will "
               "sign in on.",
        needs=("use the iPad you will sign in on", "check Touch ID is set up on it", "use Safari or Chrome on the iPad",
               _PROMPTS),
        ceremony_heading="Register your iPad",
        ceremony_text="Select 'Continue', then touch the Touch ID button when your iPad asks.",
        signin_heading="Sign in with your iPad",
        use_heading="Use your iPad",
        use_text="Select 'Sign in', then touch the Touch ID button when your iPad asks.",
        wrong_attachment="You used a security key. To register your iPad, use its fingerprint (Touch ID).",
        not_answered="Your iPad did not respond, could not check your fingerprint, or you cancelled. Check Touch ID is "
                     "set up on this iPad, then try again.",
    ),
    kinds.PASSKEY.key: Profile(
        device="passkey",
        attachment=None,
        resident_key=ResidentKeyRequirement.REQUIRED,
        hints=(PublicKeyCredentialHint.CLIENT_DEVICE, PublicKeyCredentialHint.HYBRID),
        transports=(AuthenticatorTransport.INTERNAL.value, AuthenticatorTransport.HYBRID.value),
        device_bound=False,
        sole_access="I confirm only I will have access to this passkey, and to the devices and password manager that "
                    "keep it, while it can connect to my Care Identity profile.",
        set_up="A passkey is kept by your phone, computer or password manager and unlocked with your fingerprint, face "
               "or PIN. It may be copied to your other devices, so it counts as AAL2, like the Authenticator app. "
               "Passkeys are in private beta.",
        needs=("use a phone, computer or password manager that can keep passkeys",
               "check it is unlocked with your fingerprint, face or PIN", _BROWSER, _PROMPTS),
        ceremony_heading="Create your passkey",
        ceremony_text="Select 'Continue', then follow your browser's prompts to save a passkey for NHS Care Identity.",
        signin_heading="Sign in with a passkey",
        use_heading="Sign in with a passkey",
        use_text="Select 'Sign in', then choose your NHS Care Identity passkey and unlock it with your fingerprint, "
                 "face or PIN.",
        wrong_attachment="",
        not_answered="No passkey was used, or you cancelled. Try again, and choose your NHS Care Identity passkey "
                     "when your browser asks.",
    ),
}


def profile(kind: AuthenticatorType) -> Profile:
    return PROFILES[kind.key]


def rp_id() -> str:
    return settings.CAREID_WEBAUTHN_RP_ID or urlsplit(settings.CAREID_BASE_URL).hostname or ""


def origins() -> list[str]:
    return settings.CAREID_WEBAUTHN_ORIGINS or [settings.CAREID_BASE_URL]


def _allowed_models(kind: AuthenticatorType) -> list[str]:
    """The AAGUIDs a registration of this type must be attested as (empty: any authenticator). The
    organisation's allow-list covers the types in CAREID_WEBAUTHN_ATTESTED_TYPES (security keys unless
    it says more: Windows Hello's TPM can be attested too; an iPad's or a synced passkey's cannot)."""
    return settings.CAREID_WEBAUTHN_ALLOWED_AAGUIDS if kind.key in settings.CAREID_WEBAUTHN_ATTESTED_TYPES else []


def timeout_ms() -> int:
    return settings.CAREID_WEBAUTHN_TIMEOUT * 1000


class Refused(Exception):
    """The browser's answer cannot be accepted: `reason` for the audit trail, `message` for the person
    (empty: the page's general one)."""

    def __init__(self, reason: str, message: str = "", **details) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.details = details


def _descriptors(credentials: list[tuple[bytes, list[str]]]) -> list[PublicKeyCredentialDescriptor]:
    known = {transport.value for transport in AuthenticatorTransport}
    return [
        PublicKeyCredentialDescriptor(id=credential_id,
                                      transports=[AuthenticatorTransport(t) for t in transports if t in known] or None)
        for credential_id, transports in credentials
    ]


def creation_options(kind: AuthenticatorType, *, user_name: str, display_name: str, user_handle: bytes,
                     challenge: bytes, exclude: list[tuple[bytes, list[str]]]) -> dict:
    """navigator.credentials.create()'s options as JSON (PublicKeyCredential.parseCreationOptionsFromJSON)."""
    wanted = profile(kind)
    options = generate_registration_options(
        rp_id=rp_id(),
        rp_name=RP_NAME,
        user_name=user_name,
        user_id=user_handle,
        user_display_name=display_name,
        challenge=challenge,
        timeout=timeout_ms(),
        attestation=(AttestationConveyancePreference.DIRECT if _allowed_models(kind)
                     else AttestationConveyancePreference.NONE),
        authenticator_selection=AuthenticatorSelectionCriteria(
            authenticator_attachment=wanted.attachment,
            resident_key=wanted.resident_key,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(exclude),
        hints=list(wanted.hints) or None,
    )
    return options_to_json_dict(options)


def request_options(kind: AuthenticatorType, *, challenge: bytes, allow: list[tuple[bytes, list[str]]]) -> dict:
    """navigator.credentials.get()'s options as JSON; `allow` empty: any discoverable credential (passkey)."""
    options = options_to_json_dict(generate_authentication_options(
        rp_id=rp_id(),
        challenge=challenge,
        timeout=timeout_ms(),
        allow_credentials=_descriptors(allow),
        user_verification=UserVerificationRequirement.REQUIRED,
    ))
    if hints := profile(kind).hints:  # py_webauthn's request options have no hints yet
        options["hints"] = [hint.value for hint in hints]
    return options


# --- what the browser sends back ---------------------------------------------------------------

# py_webauthn says why in its exception's text; these are the audit trail's reasons.
_REASONS = [
    ("client data origin", "wrong origin"),
    ("RP ID hash", "wrong RP ID"),
    ("challenge was not expected", "wrong challenge"),
    ("User verification is required", "user not verified"),
    ("presence", "user not present"),
    ("not present", "user not present"),
    ("client data type", "wrong ceremony"),
    ("authentication signature", "bad signature"),
    ("ttestation", "attestation not valid"),
]
USER_NOT_VERIFIED = "user not verified"


def _refusal(error: WebAuthnException, profile_: Profile) -> Refused:
    text = str(error)
    reason = next((reason for fragment, reason in _REASONS if fragment in text), "invalid response")
    if reason == USER_NOT_VERIFIED:
        return Refused(reason, f"Your {profile_.device} did not check it was you (with a PIN, fingerprint or face). "
                               "Set one up on it, then try again.")
    return Refused(f"{reason}: {text}"[:300])


@dataclass(frozen=True)
class NewCredential:
    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    attachment: str
    transports: list[str]
    backup_eligible: bool
    backed_up: bool


# What reading the browser's JSON can raise: py_webauthn's own errors, bad base64 and the like, and the JSON
# parser's RecursionError for an answer nested too deeply (which json.loads does not call a decoding error).
_UNREADABLE = (WebAuthnException, ValueError, TypeError, KeyError, RecursionError)


def parse_registration(text: str) -> RegistrationCredential:
    try:
        return parse_registration_credential_json(text)
    except _UNREADABLE as error:
        raise Refused(f"malformed response: {error}"[:300]) from None


def parse_assertion(text: str) -> AuthenticationCredential:
    try:
        return parse_authentication_credential_json(text)
    except _UNREADABLE as error:
        raise Refused(f"malformed response: {error}"[:300]) from None


@cache
def _attestation_roots(path: str) -> list[bytes]:
    with open(path, "rb") as pem:
        return [certificate.public_bytes(Encoding.PEM) for certificate in x509.load_pem_x509_certificates(pem.read())]


def verify_registration(kind: AuthenticatorType, credential: RegistrationCredential, *, challenge: bytes) -> NewCredential:
    """The attestation checked against the challenge, origin and RP ID, with the person verified;
    then what this type asks of the authenticator. Refused otherwise."""
    wanted = profile(kind)
    allowed = _allowed_models(kind)
    roots = _attestation_roots(settings.CAREID_WEBAUTHN_ATTESTATION_ROOTS) if allowed else []
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id(), expected_origin=origins(),
            require_user_verification=True,
            pem_root_certs_bytes_by_fmt={fmt: roots for fmt in ALL_FORMATS} if roots else None,
        )
    except InvalidRegistrationResponse as error:
        raise _refusal(error, wanted) from None
    except _UNUSABLE as error:  # an attestation or key py_webauthn cannot even read
        raise Refused(f"invalid response: {error}"[:300]) from None
    _check_usable(verified.credential_public_key)
    attachment = credential.authenticator_attachment.value if credential.authenticator_attachment else ""
    # The browser honours authenticatorAttachment; a response that says otherwise came from elsewhere
    # (or another browser), and the person is told what to use.
    if wanted.attachment is not None and attachment and attachment != wanted.attachment.value:
        raise Refused(f"wrong attachment: {attachment}", wanted.wrong_attachment)
    backup_eligible = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    if wanted.device_bound and backup_eligible:
        raise Refused("backup eligible (a synced passkey is not AAL3)",
                      f"This authenticator keeps a passkey that can be copied to your other devices, so it cannot be "
                      f"registered as {kind.name}, whose key must stay on one device.")
    if allowed:
        statement = parse_attestation_object(verified.attestation_object).att_stmt
        if verified.fmt == AttestationFormat.NONE or not statement.x5c:
            raise Refused(f"no attestation certificate ({verified.fmt})", _NOT_APPROVED)
        certified = _certified_model(statement.x5c[0])
        if certified is not None and certified != verified.aaguid.lower():
            raise Refused(f"attestation certificate is for {certified}, not AAGUID {verified.aaguid}", _NOT_APPROVED)
        if verified.aaguid.lower() not in allowed:
            raise Refused(f"authenticator model not allowed (AAGUID {verified.aaguid})", _NOT_APPROVED)
    return NewCredential(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        attachment=attachment,
        transports=[transport.value for transport in credential.response.transports or []],
        backup_eligible=backup_eligible,
        backed_up=verified.credential_backed_up,
    )


# What py_webauthn raises, beside its own errors, for a public key it cannot read (a COSE map without its key type,
# no map at all) or turn into a key (a point off its curve, an Ed25519 key of the wrong length).
_UNUSABLE = (WebAuthnException, LookupError, ValueError, TypeError)


def _check_usable(public_key: bytes) -> None:
    """The credential's public key can check signatures. py_webauthn only reads it at registration (but for self
    attestation): a key it cannot load was saved, and every sign-in with it was a 500 page."""
    try:
        decoded_public_key_to_cryptography(decode_credential_public_key(public_key))
    except _UNUSABLE as error:
        raise Refused(f"invalid response: public key cannot be used: {error}"[:300]) from None


ID_FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def _certified_model(certificate: bytes) -> str | None:
    """The AAGUID an attestation certificate was made for (FIDO's extension, an OCTET STRING of 16 bytes), as
    py_webauthn gives AAGUIDs; None when it names none. WebAuthn asks that it match the AAGUID the
    authenticator claims, which py_webauthn does not check: without that, any certificate under a trusted root
    (a model not on the list, a developer edition whose key its owner holds) could vouch for a listed model."""
    try:
        extension = x509.load_der_x509_certificate(certificate).extensions.get_extension_for_oid(ID_FIDO_GEN_CE_AAGUID)
    except x509.ExtensionNotFound:
        return None
    except ValueError as error:
        raise Refused(f"attestation not valid: {error}"[:300], _NOT_APPROVED) from None
    value = extension.value.value if isinstance(extension.value, x509.UnrecognizedExtension) else b""
    if len(value) != 18 or value[:2] != b"\x04\x10":
        return "a malformed id-fido-gen-ce-aaguid"
    return str(uuid.UUID(bytes=value[2:]))


_NOT_APPROVED = ("Your organisation accepts only approved authenticators (FIDO2 Certified), and this one is not one "
                 "of them. Use one your organisation gave you.")


@dataclass(frozen=True)
class Assertion:
    sign_count: int
    backup_eligible: bool
    backed_up: bool


def verify_assertion(kind: AuthenticatorType, credential: AuthenticationCredential, *, challenge: bytes,
                     public_key: bytes) -> Assertion:
    """The signature checked with the stored public key, against the challenge, origin and RP ID, with
    the person verified. The sign count is compared by the caller: only after the signature checks out
    does a count that went backwards mean a copy of the key rather than a forged answer."""
    def verify(*, require_user_verification: bool):
        return verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id(), expected_origin=origins(),
            credential_public_key=public_key, credential_current_sign_count=0,
            require_user_verification=require_user_verification,
        )

    try:
        verified = verify(require_user_verification=True)
    except InvalidAuthenticationResponse as error:
        refused = _refusal(error, profile(kind))
        if refused.reason == USER_NOT_VERIFIED:
            # py_webauthn checks the flags before the signature: said to any answer with the flag off, "did not
            # check it was you" would tell a stranger's forged answer that the address has such a key (an
            # unknown address's never gets that far). Only an answer the key really signed hears it.
            try:
                verify(require_user_verification=False)
            except _UNUSABLE as unsigned:
                raise Refused(f"bad signature: {unsigned}"[:300]) from None
        raise refused from None
    except _UNUSABLE as error:  # a key (saved before registration checked it) or signature py_webauthn cannot read
        raise Refused(f"invalid response: {error}"[:300]) from None
    return Assertion(
        sign_count=verified.new_sign_count,
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        backed_up=verified.credential_backed_up,
    )


@cache
def stand_in_public_key() -> bytes:
    """A P-256 public key (COSE) whose private half nobody holds: what an answer for a credential careid does
    not know is checked with, so that it takes the time an answer for a known one takes (flows.finish_signin)."""
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return encode_cbor({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


# --- what the browser could not do (the page's script says why in `client_error`) ----------------

CLIENT_ERRORS = {"NotAllowedError", "AbortError", "InvalidStateError", "SecurityError", "NotSupportedError",
                 "unsupported", "nojs"}


def client_error_message(kind: AuthenticatorType, error: str, *, registering: bool) -> str:
    wanted = profile(kind)
    if error in ("unsupported", "NotSupportedError"):
        return (f"This browser cannot use {_a(wanted.device)}. Use an up-to-date version of Chrome or Edge "
                "(or Safari on an iPad), or choose another authenticator.")
    if error == "nojs":
        return (f"Your browser did not run the part of this page that talks to your {wanted.device}. Switch on "
                "JavaScript in your browser, then try again.")
    if error == "InvalidStateError" and registering:
        return ("This authenticator is already registered on your Care Identity. You can register each "
                "authenticator once.")
    if error == "SecurityError":
        return ("Your browser refused because this page's address does not match NHS Care Identity. Check the "
                "address in your browser, or contact your registration authority.")
    return wanted.not_answered


def _a(device: str) -> str:
    if device[0].isupper():
        return device
    return ("an " if device[0] in "aeiou" else "a ") + device
