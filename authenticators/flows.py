"""Use cases shared by every authenticator type: registration links and their journeys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User
from accounts.notifications import notify_person
from audit.models import Event, Outcome
from audit.record import record
from signin.flows import end_sessions
from signin.session import is_recent

from . import registry
from .emails import send_registration_link
from .journeys import (
    ExpiredLink,
    JourneyError,
    NoJourney,
    NotActive,
    OtherUser,
    RevokedJourney,
    RevokedLink,
    SignInAgain,
    SpentInvitation,
    UnknownLink,
    UsedLink,
    WrongStep,
)
from .models import RegistrationLink

SESSION_JOURNEY = "careid_registration"
MAX_JOURNEY_FAILURES = 5


def issue_registration_link(
    *,
    user,
    kind: str,
    purpose: str,
    actor=None,
    request: HttpRequest | None = None,
    confirmed: bool = False,
    reason: str = "",
    issued_from: RegistrationLink | None = None,
) -> RegistrationLink:
    """A single-use link for `user` to register `kind`; e-mailed unless issued for immediate use.

    The person's row is locked and their status read as committed: a suspension or closure revokes the links
    it finds, so one issued while it commits (from a page that read the person as active) would outlive it,
    and work again once they were reinstated. NotActive when the person is not active."""
    if registry.get_enabled(kind) is None:
        raise LookupError(f"No enabled authenticator type {kind!r}")
    now = timezone.now()
    with transaction.atomic():
        if issued_from is None:  # a fresh link from an invitation: confirm_sole_access locked the person already
            user.lock_status()
        if not user.is_active:
            raise NotActive()
        link = RegistrationLink.objects.create(
            user=user,
            kind=kind,
            purpose=purpose,
            issued_by=actor,
            created_at=now,
            expires_at=now + RegistrationLink.ttl_for(purpose),
            confirmed_at=now if confirmed else None,
            issued_from=issued_from,
        )
        record(Event.LINK_ISSUED, request=request, actor=actor, subject=user, kind=kind, purpose=purpose,
               link_id=link.pk, expires_at=link.expires_at.isoformat(), **({"reason": reason} if reason else {}))
        if purpose != RegistrationLink.Purpose.PRESENCE:
            send_registration_link(link)
    return link


def refuse(request: HttpRequest, link: RegistrationLink | None, error: JourneyError) -> JourneyError:
    """Audit a refused POST (a GET only looks) and return the error for the page."""
    if request.method == "POST":
        event = Event.LINK_EXPIRED if error.expired else Event.LINK_REFUSED
        record(event, request=request, subject=link.user if link else None, outcome=Outcome.FAILURE,
               link_id=link.pk if link else None, reason=error.reason)
    return error


def check_link(request: HttpRequest, link: RegistrationLink | None) -> RegistrationLink:
    """The link if it can be used now by whoever holds it; raises a JourneyError otherwise."""
    if link is None or registry.get_enabled(link.kind) is None:
        raise refuse(request, link, UnknownLink())
    if request.user.is_authenticated and request.user.pk != link.user_id:
        raise refuse(request, link, OtherUser())
    if link.is_used:
        raise refuse(request, link, UsedLink())
    if link.is_expired:
        raise refuse(request, link, _expired(link))
    if not link.user.is_active:
        raise refuse(request, link, NotActive())
    return link


def _expired(link: RegistrationLink) -> ExpiredLink:
    """Why an expired link stopped: it ran out its time, or a suspension or closure ended it."""
    return RevokedLink() if link.is_revoked else ExpiredLink()


MAX_EXCHANGES = 10  # fresh 3-minute links one invitation may give


def confirm_sole_access(request: HttpRequest, link: RegistrationLink) -> RegistrationLink:
    """"I confirm only I will have access to the device": a link sent ahead of time (invitation,
    e-mail) gives a fresh link valid CAREID_REGISTRATION_LINK_TTL, as the Register button in Care
    Identity Management issues one; that one can be opened in another browser too. The invitation stays
    usable (someone who ticks the box, then goes to install the app, can come back to it) until a
    registration through it completes or it expires."""
    with transaction.atomic():
        # The person before their invitation, as a suspension or closure locks them (else the two could deadlock);
        # the fresh link below is issued under this lock.
        link.user.lock_status()
        exchanged = link.exchange(MAX_EXCHANGES)
        link.refresh_from_db(fields=["used_at", "expires_at", "revoked_at", "exchanges"])
        if exchanged:
            record(Event.LINK_USED, request=request, subject=link.user, kind=link.kind, link_id=link.pk,
                   reason="sole access confirmed", exchanges=link.exchanges)
            return issue_registration_link(user=link.user, kind=link.kind, purpose=RegistrationLink.Purpose.PRESENCE,
                                           request=request, confirmed=True, issued_from=link)
    # Outside the transaction, so that the refusal's audit event stays. Used or expired since it was opened,
    # or it has given all the fresh links one invitation may.
    refused = UsedLink() if link.is_used else _expired(link) if link.is_expired else SpentInvitation()
    raise refuse(request, link, refused)


@contextmanager
def journey_step(request: HttpRequest, link: RegistrationLink) -> Iterator[None]:
    """Around a step's transaction: a journey found no longer at its step when the step moves it on (NoJourney)
    was checked live by current_journey, so it ended meanwhile. One a suspension or closure ended is refused as
    current_journey refuses it (audited, once the step's transaction has rolled back), any other as before."""
    try:
        yield
    except NoJourney:
        link.refresh_from_db(fields=["revoked_at"])
        if link.is_revoked:
            raise refuse(request, link, RevokedJourney()) from None
        raise


@contextmanager
def completing_journey(request: HttpRequest, link: RegistrationLink, from_step: str) -> Iterator[None]:
    """The last step's transaction, around what it saves: the journey ends with it (NoJourney when it is no longer
    at `from_step`, refused as journey_step says), and the person must be active (NotActive). The person's row is
    locked first, as a suspension or closure locks it before it ends their journeys: a step that moved its journey
    on first and then wrote the person (the Authenticator app sets the password) deadlocked with one."""
    with journey_step(request, link), transaction.atomic():
        status = link.user.lock_status()
        if not link.complete(from_step):
            raise NoJourney()
        if status != User.Status.ACTIVE:
            raise NotActive()
        yield


def begin_journey(request: HttpRequest, link: RegistrationLink, *, step: str, **fields) -> bool:
    """Use the link and bind the journey to this browser; False when another request used it first."""
    if not link.mark_used(step=step, **fields):
        return False
    record(Event.LINK_USED, request=request, subject=link.user, kind=link.kind, link_id=link.pk)
    request.session[SESSION_JOURNEY] = link.pk
    return True


def current_journey(request: HttpRequest, kind: str, step: str, *related: str) -> RegistrationLink:
    """This browser's journey for `kind`, if it is at `step`; a JourneyError otherwise (nothing changes).

    A journey the person started signed in needs a sign-in at most 5 minutes old at every step, as its
    start did (recent_authentication_required): a journey lasts 30 minutes, and without this whoever finds
    the computer left signed in could add their own key (the step that saves it, and the one that issues
    its options, each check). A journey from an RA's link or an invitation has the link's own rules.
    One that a suspension or closure ended answers as any ended journey, and a POST to it is audited as a revoked link's is."""
    link_id = request.session.get(SESSION_JOURNEY)
    link = (
        RegistrationLink.objects.select_related("user", *related).filter(pk=link_id, kind=kind).first()
        if link_id
        else None
    )
    if link is not None and link.journey_is_over and link.is_revoked:
        raise refuse(request, link, RevokedJourney())
    if link is None or link.journey_is_over:
        raise NoJourney()
    if request.user.is_authenticated and request.user.pk != link.user_id:
        raise OtherUser()
    if not link.user.is_active:
        raise NotActive()
    if link.step != step:
        raise WrongStep()
    if link.started_signed_in and not is_recent(request):
        raise refuse(request, link, SignInAgain())
    return link


def end_journey(request: HttpRequest) -> None:
    request.session.pop(SESSION_JOURNEY, None)


def count_journey_failure(link: RegistrationLink) -> bool:
    """One more wrong answer in this journey; True when that was one too many (the journey stops)."""
    RegistrationLink.objects.filter(pk=link.pk).update(failures=F("failures") + 1)
    link.refresh_from_db(fields=["failures"])
    if link.failures < MAX_JOURNEY_FAILURES:
        return False
    link.stop()
    return True


class LastAuthenticator(ValueError):
    """Removing it would leave the person no way to sign in."""

    def __init__(self) -> None:
        super().__init__("You cannot remove your only authenticator you can sign in with: you would not be able to "
                         "sign in. Add another one first, or ask your registration authority for help.")


def removable_by_the_person(registered: list[registry.RegisteredAuthenticator]) -> set[str]:
    """The types of `registered` (the person's authenticators) they may remove themselves: every one but the
    last they can sign in with (a type switched off, a passkey out of its beta, does not count as one)."""
    return {item.kind.key for item in registered
            if any(other.kind.enabled for other in registered if other.kind.key != item.kind.key)}


def remove_own_authenticator(request: HttpRequest, *, kind: str) -> int | None:
    """The person removes one of their own authenticators (a lost phone, an old key), never the last
    one they can sign in with (removable_by_the_person). Their other
    sessions signed in with it end; this one stays (they have just proved who they are). Returns how many
    ended; None when they have none of `kind`."""
    return remove_authenticator(user=request.user, kind=kind, actor=request.user, reason="removed by the person",
                                request=request, keep_session=request.session.session_key, keep_one=True)


def remove_authenticator(*, user, kind: str, actor, reason: str, request: HttpRequest | None = None,
                         keep_session: str | None = None, keep_one: bool = False) -> int | None:
    """An RA removes one authenticator (e.g. a lost phone); the person can then register a new one. Every
    session signed in with it ends but the one keyed `keep_session`: whoever holds a lost phone is signed out
    too. Returns how many ended; None when the person had none of `kind`. `keep_one`: LastAuthenticator rather
    than remove the last one they can sign in with (the person's own removal). The person's row is locked
    first, so that removals at the same time (the person's, an RA's) each see what the other left."""
    authenticator_type = registry.get(kind)
    if authenticator_type is None:
        raise LookupError(kind)
    with transaction.atomic():
        user.lock_status()
        if keep_one:
            registered = registry.authenticators_of(user)
            if kind in {item.kind.key for item in registered} and kind not in removable_by_the_person(registered):
                raise LastAuthenticator()
        removed, _ = authenticator_type.model.objects.filter(user=user).delete()
        if not removed:
            return None
        ended = end_sessions(user, reason=f"{authenticator_type.name} removed", keep=keep_session,
                             signed_in_with=kind)
        notify_person(record(Event.AUTHENTICATOR_REMOVED, request=request, actor=actor, subject=user, kind=kind,
                             name=authenticator_type.name, reason=reason, sessions_ended=ended))
    return ended
