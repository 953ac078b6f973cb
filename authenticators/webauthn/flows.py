"""Registering a WebAuthn credential (the journey's "ceremony" step) and signing in with one.

A ceremony's challenge (32 bytes from `secrets`) lives in the session, bound to what it is for (its
purpose, type, journey or e-mail address), for five minutes; it is popped on first use and its first
use is also claimed in the database (UsedChallenge), so two requests racing with one session cannot
both use it. Every refusal is audited and changes nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.db.models.functions import Length
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare, salted_hmac
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from accounts.models import User
from accounts.notifications import notify_person
from audit.models import Event, Outcome
from audit.record import record
from authenticators import flows as link_flows
from authenticators import registry
from authenticators.journeys import AlreadyRegistered, TooManyRefusals, UsedLink
from authenticators.models import RegistrationLink
from authenticators.registry import AuthenticatorType
from signin import flows as signin_flows

from . import ceremony
from .ceremony import Refused
from .models import CHALLENGE_TTL, UsedChallenge, WebAuthnCredential

SESSION_CHALLENGES = "careid_webauthn_challenges"
SESSION_SIGNIN = "careid_webauthn_signin"
CEREMONY = "ceremony"  # the journey's step
SIGNIN_EMAIL_TTL = 600  # seconds between the e-mail address and the sign-in it is for

TOO_LATE = "This page has expired or was used already. Try again."


# --- the types and their credentials, through the registry -----------------------------------------


def webauthn_types() -> list[AuthenticatorType]:
    """Every WebAuthn type the registry holds (switched on or not: a credential is someone's either way)."""
    return [kind for kind in registry.all_types() if issubclass(kind.model, WebAuthnCredential)]


def credentials_of(user: User) -> list[tuple[bytes, list[str], bytes]]:
    """(credential id, transports, user handle) of every WebAuthn credential the person has."""
    rows = registry.union_over_types(lambda model: model.objects.filter(user=user), "credential_id", "transports",
                                     "user_handle", types=webauthn_types())
    return [(bytes(credential_id), transports, bytes(handle)) for _position, credential_id, transports, handle in rows]


def find_credential(credential_id: bytes) -> tuple[AuthenticatorType, WebAuthnCredential] | None:
    """The credential with this id, whichever WebAuthn type it was registered as."""
    kinds = webauthn_types()
    rows = registry.union_over_types(lambda model: model.objects.filter(credential_id=credential_id), "pk", types=kinds)
    if not rows:
        return None
    position, pk = rows[0]
    return kinds[position], kinds[position].model.objects.select_related("user").get(pk=pk)


def user_handle_of(credentials: list[tuple[bytes, list[str], bytes]]) -> bytes | None:
    """The person's handle, as their existing credentials carry it (one account in the browser)."""
    return next((handle for _id, _transports, handle in credentials), None)


# --- challenges -----------------------------------------------------------------------------------


def _issue_challenge(request: HttpRequest, purpose: str, kind: AuthenticatorType, **bound) -> bytes:
    challenge = secrets.token_bytes(ceremony.CHALLENGE_BYTES)
    entries = dict(request.session.get(SESSION_CHALLENGES) or {})
    entries[f"{purpose}:{kind.key}"] = {"value": bytes_to_base64url(challenge),
                                        "expires": time.time() + CHALLENGE_TTL.total_seconds(), **bound}
    request.session[SESSION_CHALLENGES] = entries
    return challenge


def _pop_challenge(request: HttpRequest, purpose: str, kind: AuthenticatorType) -> dict | None:
    entries = dict(request.session.get(SESSION_CHALLENGES) or {})
    entry = entries.pop(f"{purpose}:{kind.key}", None)
    request.session[SESSION_CHALLENGES] = entries
    return entry if isinstance(entry, dict) else None


def _use_challenge(entry: dict | None, **bound) -> bytes:
    """The challenge of a popped entry, if it is still good for what it is bound to; Refused otherwise."""
    if entry is None:
        raise Refused("no challenge (used already, or never issued)", TOO_LATE)
    if entry.get("expires", 0) < time.time():
        raise Refused("challenge expired", TOO_LATE)
    for name, value in bound.items():
        if entry.get(name) != value:
            raise Refused(f"challenge issued for another {name}", TOO_LATE)
    challenge = base64url_to_bytes(entry["value"])
    if not UsedChallenge.claim(challenge):
        raise Refused("challenge used already", TOO_LATE)
    return challenge


def _browser_error(client_error: str) -> str:
    """What the page's script said went wrong (nothing at all: the script did not run)."""
    if not client_error:
        return "nojs"
    return client_error if client_error in ceremony.CLIENT_ERRORS else "other"


# --- registration -------------------------------------------------------------------------------------


def already_registered(kind: AuthenticatorType) -> AlreadyRegistered:
    error = AlreadyRegistered()
    error.title = f"You already have {'an' if kind.name[0] in 'AEIOUi' else 'a'} {kind.name} registered"
    return error


def open_link(request: HttpRequest, link: RegistrationLink | None, kind: AuthenticatorType) -> RegistrationLink:
    """The link if it can start registering `kind` now; a JourneyError otherwise."""
    link = link_flows.check_link(request, link)
    if kind.model.objects.registered(link.user).exists():
        raise link_flows.refuse(request, link, already_registered(kind))
    return link


def start_signed_in_registration(request: HttpRequest, kind: AuthenticatorType) -> RegistrationLink:
    """"Add other authenticators" after a recent sign-in: the person has proved who they are, so the
    journey goes straight to the ceremony (a link from an RA proves the e-mail address first)."""
    with transaction.atomic():
        link = link_flows.issue_registration_link(user=request.user, kind=kind.key,
                                                  purpose=RegistrationLink.Purpose.PRESENCE, actor=request.user,
                                                  request=request, confirmed=True)
        if not link_flows.begin_journey(request, link, step=CEREMONY):
            raise UsedLink()
    return link


def current_journey(request: HttpRequest, kind: AuthenticatorType, step: str) -> RegistrationLink:
    return link_flows.current_journey(request, kind.key, step, "email_code")


def registration_options(request: HttpRequest, link: RegistrationLink, kind: AuthenticatorType) -> dict:
    """The options for navigator.credentials.create(), with a new challenge for this journey."""
    user = link.user
    credentials = credentials_of(user)
    handle = user_handle_of(credentials) or secrets.token_bytes(32)
    challenge = _issue_challenge(request, "register", kind, link=link.pk, handle=bytes_to_base64url(handle))
    return ceremony.creation_options(
        kind, user_name=user.email, display_name=user.get_full_name() or user.email, user_handle=handle,
        challenge=challenge, exclude=[(credential_id, transports) for credential_id, transports, _ in credentials],
    )


def complete_registration(request: HttpRequest, link: RegistrationLink, kind: AuthenticatorType, *,
                          response: str, client_error: str = "") -> WebAuthnCredential:
    """Check the browser's answer and save the credential, with its audit event and the person's
    notification. Refused (audited, nothing saved; the page says why and the person may try again) or a
    JourneyError (the journey is over)."""
    user: User = link.user
    entry = _pop_challenge(request, "register", kind)
    if client_error or not response:
        error = _browser_error(client_error)
        raise _registration_failed(request, link, kind, Refused(f"not completed in the browser ({error})",
                                   ceremony.client_error_message(kind, error, registering=True)), counted=False)
    try:
        challenge = _use_challenge(entry, link=link.pk)
        new = ceremony.verify_registration(kind, ceremony.parse_registration(response), challenge=challenge)
        _check_not_registered(user, new.credential_id)
    except Refused as refused:
        raise _registration_failed(request, link, kind, refused, counted=True) from None
    handle = base64url_to_bytes(entry["handle"])  # what the authenticator keeps (and a passkey answers with)
    try:
        with link_flows.completing_journey(request, link, CEREMONY):
            credential = kind.model.objects.create(
                user=user, name=kind.name, confirmed=True, credential_id=new.credential_id, public_key=new.public_key,
                sign_count=new.sign_count, transports=new.transports, aaguid=new.aaguid, attachment=new.attachment,
                backup_eligible=new.backup_eligible, backed_up=new.backed_up, user_handle=handle,
            )
            notify_person(record(Event.AUTHENTICATOR_REGISTERED, request=request, subject=user, method=kind.key,
                                 aal=kind.aal, kind=kind.key, name=kind.name, aaguid=new.aaguid,
                                 attachment=new.attachment, backup_eligible=new.backup_eligible))
    except IntegrityError:  # one of this type meanwhile, or the same credential registered meanwhile
        if kind.model.objects.registered(user).exists():
            raise link_flows.refuse(request, link, already_registered(kind)) from None
        raise _registration_failed(request, link, kind, Refused("credential registered meanwhile"),
                                   counted=True) from None
    link_flows.end_journey(request)
    return credential


def _check_not_registered(user: User, credential_id: bytes) -> None:
    """A credential belongs to one person and one type (looked up in every WebAuthn type's table). A sign-in
    page's decoy gets the answer a credential of someone else's gets: the id a sign-in offers for an address,
    registered as one's own (attestation "none" proves nothing about it), must not tell a real one from it."""
    found = find_credential(credential_id)
    if found is None and is_decoy(credential_id):
        raise Refused("credential id is a sign-in decoy", SOMEONE_ELSES)
    if found is None:
        return
    kind, credential = found
    if credential.user_id != user.pk:
        raise Refused("credential registered to someone else", SOMEONE_ELSES, held_by=credential.user.uid)
    raise Refused(f"credential already registered as {kind.key}",
                  f"This authenticator is already registered on your Care Identity as {kind.name}. You can register "
                  "each authenticator once.")


SOMEONE_ELSES = ("This authenticator is registered to another Care Identity, so it cannot be registered on yours. "
                 "Use your own, or contact your registration authority.")


def _registration_failed(request: HttpRequest, link: RegistrationLink, kind: AuthenticatorType, refused: Refused, *,
                         counted: bool) -> Exception:
    """Audit the refusal; what to raise for the page: the refusal, or TooManyRefusals at the fifth answer
    the server refused (what the browser could not do, such as a cancel, does not count)."""
    with transaction.atomic():
        record(Event.AUTHENTICATOR_REGISTRATION_FAILED, request=request, subject=link.user, outcome=Outcome.FAILURE,
               method=kind.key, kind=kind.key, reason=refused.reason, link_id=link.pk, **refused.details)
        stopped = counted and link_flows.count_journey_failure(link)
    return TooManyRefusals() if stopped else refused


# --- signing in -----------------------------------------------------------------------------------------


def remember_email(request: HttpRequest, kind: AuthenticatorType, email: str) -> None:
    """The e-mail step: nothing is looked up yet, so every address gets the same next page."""
    request.session[SESSION_SIGNIN] = {"kind": kind.key, "email": email, "at": time.time()}


def remembered_email(request: HttpRequest, kind: AuthenticatorType) -> str | None:
    pending = request.session.get(SESSION_SIGNIN)
    if not isinstance(pending, dict) or pending.get("kind") != kind.key:
        return None
    if time.time() - pending.get("at", 0) > SIGNIN_EMAIL_TTL:
        return None
    return pending.get("email")


# A decoy's length when no credential of the type is registered yet (what common security keys make).
DECOY_LENGTH = 64
DECOY_MIN_LENGTH = 16  # WebAuthn's credential ids are at least as long
_DECOY_TAG = 8  # bytes that mark an id as a decoy (a real one has them by chance once in 2**64)
_DECOY_LENGTH_CACHE_SECONDS = 3600
_DECOY_LENGTH_SAMPLE = 1000  # the latest registrations: the models people use now


def _decoy_id(kind: AuthenticatorType, email: str) -> bytes:
    """What an address with no credential of this type is offered instead: the same for every visit, and
    as long as this type's credentials usually are, so the options never tell who has one. It ends with a
    tag of what comes before it, so that registration knows a decoy without the address (is_decoy)."""
    length = max(_usual_credential_length(kind), DECOY_MIN_LENGTH) - _DECOY_TAG
    blocks = (salted_hmac("careid.webauthn.decoy-credential", f"{kind.key}:{email.lower()}:{block}",
                          algorithm="sha256").digest() for block in range(-(-length // 32)))
    body = b"".join(blocks)[:length]
    return body + _decoy_tag(body)


def _decoy_tag(body: bytes) -> bytes:
    return salted_hmac("careid.webauthn.decoy-tag", body, algorithm="sha256").digest()[:_DECOY_TAG]


def is_decoy(credential_id: bytes) -> bool:
    """Whether a sign-in page offered this id as a decoy (for any type and address)."""
    body, tag = credential_id[:-_DECOY_TAG], credential_id[-_DECOY_TAG:]
    return len(credential_id) >= DECOY_MIN_LENGTH and constant_time_compare(tag, _decoy_tag(body))


def _usual_credential_length(kind: AuthenticatorType) -> int:
    """The most common length among the latest registered credential ids of this type (models make ids of
    16 to over 100 bytes: a decoy of a fixed length would stand out). Shared through the cache for an hour,
    so every process offers the same decoy; without the cache, a look-up bounded by the sample's size."""
    key = f"webauthn-decoy-length:{kind.key}"
    length = cache.get(key)
    if length is None:
        latest = kind.model.objects.filter(confirmed=True).order_by("-pk").values("pk")[:_DECOY_LENGTH_SAMPLE]
        usual = (kind.model.objects.filter(pk__in=latest).values(length=Length("credential_id"))
                 .annotate(count=Count("pk")).order_by("-count", "length").first())
        length = usual["length"] if usual else DECOY_LENGTH
        cache.set(key, length, _DECOY_LENGTH_CACHE_SECONDS)
    return length


def signin_options(request: HttpRequest, kind: AuthenticatorType, email: str | None) -> dict:
    """The options for navigator.credentials.get(): the person's credential of this type (a decoy when the
    address has none), or none at all for a passkey, which the browser finds by itself. Both are offered
    with the type's transports: the ones a browser reported at registration (in its own order and detail)
    would tell a real credential from the decoy."""
    allow: list[tuple[bytes, list[str]]] = []
    if email is not None:
        user = signin_flows.find_user_for_signin(email)
        # Looked for also for an unknown address (finding nothing): the same database work, whatever its timing tells.
        credential = kind.model.objects.registered(user).first()
        credential_id = bytes(credential.credential_id) if credential is not None else _decoy_id(kind, email)
        allow = [(credential_id, list(ceremony.profile(kind).transports))]
    challenge = _issue_challenge(request, "signin", kind, email=email)
    return ceremony.request_options(kind, challenge=challenge, allow=allow)


def not_checked_message(kind: AuthenticatorType) -> str:
    device = ceremony.profile(kind).device
    return (f"Your {device} could not be checked. Use the {device} registered to your NHS Care Identity, "
            "or choose another login method.")


def finish_signin(request: HttpRequest, kind: AuthenticatorType, *, email: str | None, response: str,
                  client_error: str = "") -> str | None:
    """Check the assertion: None when the person is signed in, else the message to show.

    A signature cannot be guessed, so answers are counted against the client's address only, never
    against the Care Identity: junk answers from anyone who knows the address must not delay or lock
    its holder out. `email` None is a passkey: the person is found by the credential, whose user handle
    must match. An unknown address, a wrong credential and a suspended profile get one answer.
    """
    entry = _pop_challenge(request, "signin", kind)
    if client_error or not response:
        error = _browser_error(client_error)
        user = signin_flows.find_user_for_signin(email) if email else None
        record(Event.SIGNIN_FAILED, request=request, subject=user, outcome=Outcome.FAILURE, method=kind.key,
               reason=f"not completed in the browser ({error})", email=(email or "")[:254])
        return ceremony.client_error_message(kind, error, registering=False)

    parsed, unreadable = None, None
    try:
        parsed = ceremony.parse_assertion(response)
    except Refused as refused:
        unreadable = refused
    if email is None:
        credential = (kind.model.objects.select_related("user").filter(credential_id=parsed.raw_id, confirmed=True)
                      .first() if parsed is not None else None)
        user = credential.user if credential is not None else None
        address = user.email if user is not None else "passkey:" + hashlib.sha256(
            parsed.raw_id if parsed is not None else b"").hexdigest()[:32]
    else:
        user = signin_flows.find_user_for_signin(email)
        # Looked for also for an unknown address (finding nothing), as the ceremony page does: the same work.
        credential = (kind.model.objects.filter(user=user, confirmed=True, credential_id=parsed.raw_id).first()
                      if parsed is not None else None)
        address = email

    refused_message = signin_flows.begin_key_attempt(request, email=address, user=user, method=kind.key)
    if refused_message:
        return refused_message
    try:
        if unreadable is not None:
            raise unreadable
        challenge = _use_challenge(entry, email=email)
        # The signature is checked whatever was found (with a key nobody holds when no credential was), so that
        # an unknown address or credential takes the time a known one does; then the first reason to refuse.
        public_key = bytes(credential.public_key) if credential is not None else ceremony.stand_in_public_key()
        try:
            assertion, bad_answer = ceremony.verify_assertion(kind, parsed, challenge=challenge,
                                                              public_key=public_key), None
        except Refused as refused:
            assertion, bad_answer = None, refused
        if user is None:
            raise Refused("unknown email" if email is not None else "unknown credential")
        if not user.is_active:
            raise Refused(f"profile {user.status}")
        if credential is None:
            raise Refused("unknown credential")
        handle = parsed.response.user_handle
        if email is None and (not handle or not constant_time_compare(handle, bytes(credential.user_handle))):
            raise Refused("user handle does not match")
        if bad_answer is not None:
            raise bad_answer
        if ceremony.profile(kind).device_bound and assertion.backup_eligible:
            raise Refused("backup eligible (a synced passkey is not AAL3)")
        locked_message = signin_flows.key_holder_locked_out(request, user=user, method=kind.key)
        if locked_message:
            return locked_message
        if not credential.record_use(sign_count=assertion.sign_count, backed_up=assertion.backed_up):
            # As it is now: removed meanwhile (by an RA, or its holder elsewhere) is no copy; else the count that
            # stopped this one, which another answer may have recorded since it was read.
            try:
                credential.refresh_from_db(fields=["sign_count"])
            except type(credential).DoesNotExist:
                raise Refused("unknown credential (removed meanwhile)") from None
            _suspect_clone(request, kind, credential, assertion.sign_count)
            raise Refused("sign count did not go up (possible cloned authenticator)",
                          f"Your {ceremony.profile(kind).device} could not be used. Contact your registration "
                          "authority.")
    except Refused as refused:
        record(Event.SIGNIN_FAILED, request=request, subject=user, outcome=Outcome.FAILURE, method=kind.key,
               reason=refused.reason, email=address[:254])
        return refused.message or not_checked_message(kind)
    request.session.pop(SESSION_SIGNIN, None)
    signin_flows.complete_signin(request, user=user, kind=kind)
    return None


def _suspect_clone(request: HttpRequest, kind: AuthenticatorType, credential: WebAuthnCredential, sign_count: int) -> None:
    """A valid signature with a count that did not go up: another copy of the key has been used. The
    person is told; the sign-in is refused (the caller counts it)."""
    with transaction.atomic():
        notify_person(record(Event.AUTHENTICATOR_CLONE_SUSPECTED, request=request, subject=credential.user,
                             outcome=Outcome.FAILURE, method=kind.key, kind=kind.key, name=kind.name,
                             stored_count=credential.sign_count, presented_count=sign_count,
                             credential=bytes_to_base64url(bytes(credential.credential_id))[:32]))
