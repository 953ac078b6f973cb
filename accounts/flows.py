"""Use cases about Care Identities: invitation, e-mail addresses, the registration authority's actions.

Each flow makes its change and writes its audit event in one transaction, and enqueues
e-mail only once that transaction has committed.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from datetime import timedelta

from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.models import AuditEvent, Event, Outcome
from audit.record import record
from authenticators import registry
from authenticators.flows import issue_registration_link
from authenticators.models import RegistrationLink
from signin import throttle
from signin.flows import end_sessions, failing_closed

from .emails import ALREADY_ON_PROFILE, NOT_ON_ALLOW_LIST
from .models import AllowedEmailDomain, EmailTaken, User
from .notifications import notify_person, send_email_confirmation, tell_address_in_use, tell_old_address


def invite_user(
    *,
    email: str,
    first_name: str,
    last_name: str,
    title: str = "",
    actor: User | None = None,
    request: HttpRequest | None = None,
):
    """Create a Care Identity and e-mail it a link to register the Authenticator app.

    Returns (user, registration link). Raises ValidationError for an address outside the
    allow list, one that belongs to another Care Identity, or a name the User fields refuse
    (IntegrityError when another process gives the address to someone meanwhile).
    """
    email = AllowedEmailDomain.objects.check_email(email)
    User.objects.check_email_free(email)
    User.validate_values(title=title, first_name=first_name, last_name=last_name)
    with transaction.atomic():
        user = User.objects.create_user(email, first_name=first_name, last_name=last_name, title=title)
        EmailAddress.objects.create(user=user, email=email, primary=True, verified=False)
        link = send_invitation(user=user, actor=actor, request=request)
    return user, link


def send_invitation(*, user: User, actor: User | None = None, request: HttpRequest | None = None):
    """E-mail an existing Care Identity its invitation (a link to register the Authenticator app).

    Raises ValidationError, the refusal audited in the caller's transaction, when the address's domain is not on the
    allow list, as invite_user and the RA's forms refuse it: it may have left the list since the Care Identity was
    created (bulk onboarding invites people it finds by their UID, at the address they have), and the link registers
    an authenticator on the profile for whoever reads that mailbox now."""
    if not AllowedEmailDomain.objects.allows(user.email):
        record(Event.EMAIL_REFUSED, request=request, actor=actor, subject=user, outcome=Outcome.FAILURE,
               email=user.email, via="invitation", reason="not on the allow list")
        raise ValidationError(NOT_ON_ALLOW_LIST, code="domain_not_allowed")
    with transaction.atomic():
        user.invited_at = timezone.now()
        user.save(update_fields=["invited_at"])
        record(Event.USER_INVITED, request=request, actor=actor, subject=user, email=user.email)
        return issue_registration_link(
            user=user, kind=settings.CAREID_INVITATION_AUTHENTICATOR, purpose=RegistrationLink.Purpose.INVITATION,
            actor=actor, request=request,
        )


# --- e-mail addresses (allauth's EmailAddress and confirmation keys) ------------------------


# The `via` of the refusal behind an address kept unverified on the profile of someone who added it
# while it was another's: for the registration authority and the trail only, never "Your activity".
ADDED_UNVERIFIED = "added, kept unverified"


def add_email_address(request: HttpRequest, email: str) -> bool:
    """Add an unverified address (the form checked the allow list) and e-mail it a link.

    The person sees the same whether or not the address belongs to someone else (as their Care
    Identity e-mail, even before they have registered, or verified on their profile): the address on
    their profile, not verified, and "Your activity" saying it was added. When it does, no link is
    sent, so that row is never verified (nobody holds a key for it); the address is told of the
    attempt instead, and the refusal, naming the holder, is audited for the registration authority
    (views.activity leaves it out). False when over the hourly limit; ValidationError when the address is on
    their profile already (added meanwhile by another request of theirs: a double click).
    """
    user = request.user
    if not _within_address_emails(request, email):
        return False
    try:
        with transaction.atomic():
            address = EmailAddress.objects.create(user=user, email=email, primary=False, verified=False)
            record(Event.EMAIL_ADDED, request=request, subject=user, email=email)
            _link_unless_held(request, address)
    except IntegrityError:  # allauth's unique (user, email): the form's check passed before the other committed
        raise ValidationError(ALREADY_ON_PROFILE, code="already_on_profile") from None
    return True


def _within_address_emails(request: HttpRequest, email: str) -> bool:
    """Whether the person may have another e-mail sent to an address on their profile this hour (adding one,
    or a new link for one): each goes to an address nobody has proven yet."""
    user = request.user
    with failing_closed(request, Event.EMAIL_REFUSED, subject=user, email=email):
        return throttle.within_limit(f"email-add:{user.pk}", settings.CAREID_EMAIL_ADD_LIMIT, timedelta(hours=1))


def _link_unless_held(request: HttpRequest, address: EmailAddress) -> None:
    """The link that verifies an address on the person's profile; for one another Care Identity holds, none:
    its holder is told instead, and the refusal audited naming them for the registration authority."""
    user = request.user  # their own profile's address
    if held_by := _held_by(address.email, other_than=user):
        tell_address_in_use(refuse_taken_email(request, user=user, email=address.email, via=ADDED_UNVERIFIED,
                                               held_by=held_by))
    else:
        send_email_confirmation(address)


def send_verification_link(request: HttpRequest, *, address: EmailAddress) -> bool:
    """Another link to verify an address on the person's own profile (the first expired or went astray, or
    an RA set the address). Counted with the addresses added, since each sends an e-mail: False when over the
    hourly limit. An address that has become another Care Identity's gets no link, as when it is added."""
    user = request.user
    if address.user_id != user.pk:
        raise PermissionError("Not this person's address")
    if address.verified:
        raise ValueError("This email address is already verified")
    # As when it was added: a domain taken off the allow list since gets no new link (and no link verifies it).
    AllowedEmailDomain.objects.check_email(address.email)
    if not _within_address_emails(request, address.email):
        return False
    with transaction.atomic():
        record(Event.EMAIL_LINK_SENT, request=request, subject=user, email=address.email)
        _link_unless_held(request, address)
    return True


def confirm_email_address(request: HttpRequest, confirmation: EmailConfirmationHMAC) -> EmailAddress | None:
    """Verify the address of a confirmation link; the Care Identity address becomes primary once verified.

    None when the link verifies nothing any more. Raises EmailTaken (nothing verified, the refusal
    audited) when the address has become another Care Identity's since the link was sent, and
    ValidationError (the same) when its domain has left the allow list since, as a new link would be refused.
    """
    address = confirmation.email_address
    try:
        AllowedEmailDomain.objects.check_email(address.email)
    except ValidationError:
        record(Event.EMAIL_REFUSED, request=request, subject=address.user, outcome=Outcome.FAILURE,
               email=address.email, via="link", reason="not on the allow list")
        raise
    try:
        with transaction.atomic():
            if User.objects.holding_email(address.email).exclude(pk=address.user_id).exists():
                raise EmailTaken()
            confirmed = confirmation.confirm(request)
            if confirmed is None:
                return None
            # The Care Identity address itself becomes the primary once verified; any other address stays
            # secondary (the person signs in with another only through make_care_identity_email: audited, and
            # the old address told), even while their own is not verified yet.
            if (confirmed.email.lower() == confirmed.user.email.lower()
                    and not EmailAddress.objects.filter(user=confirmed.user, primary=True, verified=True).exists()):
                EmailAddress.objects.filter(user=confirmed.user, primary=True).update(primary=False)
                confirmed.set_as_primary()
            notify_person(record(Event.EMAIL_VERIFIED, request=request, subject=confirmed.user, email=confirmed.email,
                                 via="link"))
    except (EmailTaken, IntegrityError):
        # IntegrityError: verified elsewhere by a transaction that committed after the check above
        # (the unique_verified_email constraint decides between the two).
        refuse_taken_email(request, user=address.user, email=address.email, via="link")
        raise EmailTaken() from None
    return confirmed


def verify_email_by_code(request: HttpRequest | None, user: User, email: str) -> None:
    """A one-time password sent to `email` came back: the address is proven.

    Raises EmailTaken when the address belongs to another Care Identity (also when another
    transaction verified it first); the caller rolls back, and audits with refuse_taken_email.
    """
    email = email.lower()
    if User.objects.holding_email(email).exclude(pk=user.pk).exists():
        raise EmailTaken()
    try:
        with transaction.atomic():
            verified = EmailAddress.objects.filter(user=user, email=email, verified=False).update(verified=True)
    except IntegrityError:
        raise EmailTaken() from None
    if verified:
        record(Event.EMAIL_VERIFIED, request=request, subject=user, email=email, via="one-time password")


def refuse_taken_email(request: HttpRequest | None, *, user: User, email: str, via: str,
                       held_by: list[str] | None = None, **details) -> AuditEvent:
    """Audit a verification refused because the address is another Care Identity's, naming the
    holders for the registration authority (the person is only told to contact them)."""
    return record(Event.EMAIL_REFUSED, request=request, subject=user, outcome=Outcome.FAILURE, email=email, via=via,
                  reason="belongs to another Care Identity",
                  held_by=_held_by(email, other_than=user) if held_by is None else held_by, **details)


def _held_by(email: str, *, other_than: User) -> list[str]:
    """The UIDs of the Care Identities other than `other_than` that the address belongs to."""
    return list(User.objects.holding_email(email).exclude(pk=other_than.pk).order_by("uid")
                .values_list("uid", flat=True))


def remove_email_address(request: HttpRequest, *, address: EmailAddress) -> None:
    """The person removes an address from their own profile (never their Care Identity e-mail)."""
    user = request.user
    if address.user_id != user.pk:
        raise PermissionError("Not this person's address")
    if address.primary or address.email.lower() == user.email.lower():
        raise ValueError("The Care Identity email address cannot be removed")
    with transaction.atomic():
        EmailAddress.objects.filter(pk=address.pk).delete()
        notify_person(record(Event.EMAIL_REMOVED, request=request, subject=user, email=address.email))


def make_care_identity_email(request: HttpRequest, *, address: EmailAddress) -> None:
    """A verified address of the person's own becomes their Care Identity e-mail (the one they sign in
    with); the old one stays on the profile and is told. Raises EmailTaken (audited, naming the holder
    for the RA only) when the address has become another Care Identity's, and ValidationError (audited) when its
    domain has left the allow list since it was verified: a Care Identity e-mail is on it, as the RA's forms say."""
    user = request.user
    if address.user_id != user.pk:
        raise PermissionError("Not this person's address")
    if not address.verified or address.email.lower() == user.email.lower():
        raise ValueError("Only another verified address can become the Care Identity email address")
    try:
        AllowedEmailDomain.objects.check_email(address.email)
    except ValidationError:
        record(Event.EMAIL_REFUSED, request=request, subject=user, outcome=Outcome.FAILURE, email=address.email,
               via="make Care Identity email", reason="not on the allow list")
        raise
    before = user.email
    try:
        with transaction.atomic():
            # The person's row first, as an RA's change of their e-mail locks it before their addresses (the other
            # order deadlocked with one), and the address it replaces as committed (such a change may have landed
            # since this page read the person): the trail's "before" and the old address told are what was replaced.
            user.lock("email")
            before = user.email
            if before.lower() == address.email.lower():
                return  # made so meanwhile (a double click)
            if User.objects.holding_email(address.email).exclude(pk=user.pk).exists():
                raise EmailTaken()
            EmailAddress.objects.filter(user=user, primary=True).update(primary=False)
            EmailAddress.objects.filter(pk=address.pk).update(primary=True)
            User.objects.filter(pk=user.pk).update(email=address.email)
            user.email = address.email
            event = record(Event.EMAIL_PRIMARY_CHANGED, request=request, subject=user, before=before,
                           after=address.email)
            notify_person(event)
            tell_old_address(event, before)
    except (EmailTaken, IntegrityError):
        # IntegrityError: given to someone else by a transaction that committed after the check above.
        user.email = before
        refuse_taken_email(request, user=user, email=address.email, via="make Care Identity email")
        raise EmailTaken() from None


# --- registration authority actions (the admin and commands call these) ------------------------


def unlock_user(*, user: User, reason: str, actor: User | None = None, request: HttpRequest | None = None) -> None:
    """Clear the sign-in lock and every throttle on the person's account (authenticators keep none of their own)."""
    with transaction.atomic():
        user.unlock()
        notify_person(record(Event.ACCOUNT_UNLOCKED, request=request, actor=actor, subject=user, reason=reason))


def _revoke_links(user: User) -> dict[str, int]:
    """Registration links not yet used stop working, and registrations under way end (a reinstated person
    needs a new link): whoever held one, through a stolen invitation or a mailbox read by someone else,
    cannot finish it once the profile is active again."""
    links, journeys = RegistrationLink.objects.filter(user=user).revoke()
    return {"links_revoked": links, "journeys_ended": journeys}


def create_user(*, actor: User, email: str, first_name: str, last_name: str, title: str = "", reason: str = "",
                request: HttpRequest | None = None):
    """An RA creates a Care Identity: the person is invited to register the Authenticator app."""
    with transaction.atomic():
        user, link = invite_user(email=email, first_name=first_name, last_name=last_name, title=title,
                                 actor=actor, request=request)
        record(Event.USER_CREATED, request=request, actor=actor, subject=user, email=user.email, reason=reason)
    return user, link


def change_user_details(*, user: User, actor: User, changes: dict[str, str], reason: str,
                        request: HttpRequest | None = None) -> None:
    """Names, title or Care Identity e-mail, with the RA's reason. A new e-mail replaces the primary address,
    unverified until the person proves it with the link sent to it, and both the old and the new address are
    told. What it replaces is read as committed, under the person's row lock: another RA's change may have landed
    since this RA's page read the person, and the trail's "before" and the notice to the old address are of
    what was replaced."""
    allowed = ("title", "first_name", "last_name", "email")
    changes = {name: value for name, value in changes.items() if name in allowed and getattr(user, name) != value}
    if not changes:
        return
    if not reason.strip():
        raise ValueError("A reason is required to change a Care Identity")
    User.validate_values(**{name: value for name, value in changes.items() if name != "email"})
    with transaction.atomic():
        user.lock(*allowed)
        changes = {name: value for name, value in changes.items() if getattr(user, name) != value}
        if not changes:
            return
        old_email = user.email
        before = {name: getattr(user, name) for name in changes}
        for name, value in changes.items():
            setattr(user, name, value)
        user.save(update_fields=list(changes))
        if "email" in changes:
            address = _replace_care_identity_address(user)
        event = record(Event.USER_CHANGED, request=request, actor=actor, subject=user, reason=reason,
                       fields=sorted(changes), before=before, after=changes)
        if "email" in changes:
            notify_person(event)
            tell_old_address(event, old_email)
            if not address.verified:
                send_email_confirmation(address)  # the person proves the new address with the link


def _replace_care_identity_address(user: User) -> EmailAddress:
    """The RA's new Care Identity e-mail becomes the primary address on the profile: not verified until the
    person proves it, unless they already had (verified on their own profile). The one it replaces stays if
    it was proven; one never proven goes (an RA's typo corrected at once: the link sent to it verifies
    nothing any more, and the stranger's address never becomes this person's)."""
    EmailAddress.objects.filter(user=user, primary=True, verified=False).exclude(email__iexact=user.email).delete()
    EmailAddress.objects.filter(user=user, primary=True).update(primary=False)
    address = EmailAddress.objects.filter(user=user, email__iexact=user.email).first()
    if address is None:
        return EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=False)
    EmailAddress.objects.filter(pk=address.pk).update(primary=True)
    address.primary = True
    return address


def sign_out_everywhere(*, user: User, actor: User, reason: str, request: HttpRequest | None = None) -> int:
    """An RA ends every session of the person (a lost or shared device); the services are told."""
    with transaction.atomic():
        user.lock_status()  # as end_sessions asks: a sign-in again under way is then on the list, or waits
        ended = end_sessions(user, reason=reason)
        notify_person(record(Event.SESSIONS_ENDED, request=request, actor=actor, subject=user, reason=reason,
                             sessions_ended=ended))
    return ended


def _lock_status(user: User, *, from_statuses: set[str], done: str) -> None:
    """Each status change applies only from the statuses it is for, as committed (User.lock_status), not as the
    RA's page read them: a colleague's stale reinstatement would reopen a closed profile. ValueError otherwise."""
    if user.lock_status() not in from_statuses:
        raise ValueError(f"This Care Identity is {user.get_status_display().lower()}: it cannot be {done}.")


def suspend_user(*, user: User, actor: User, reason: str, request: HttpRequest | None = None) -> int:
    """Suspend the profile and end all its sessions at once; returns how many sessions ended."""
    with transaction.atomic():
        _lock_status(user, from_statuses={User.Status.ACTIVE}, done="suspended")
        User.objects.filter(pk=user.pk).update(status=User.Status.SUSPENDED)
        user.status = User.Status.SUSPENDED
        ended = end_sessions(user, reason="suspended")
        notify_person(record(Event.USER_SUSPENDED, request=request, actor=actor, subject=user, reason=reason,
                       sessions_ended=ended, **_revoke_links(user)))
    return ended


def reinstate_user(*, user: User, actor: User, reason: str, request: HttpRequest | None = None) -> None:
    with transaction.atomic():
        _lock_status(user, from_statuses={User.Status.SUSPENDED}, done="reinstated")
        User.objects.filter(pk=user.pk).update(status=User.Status.ACTIVE)
        user.status = User.Status.ACTIVE
        notify_person(record(Event.USER_REINSTATED, request=request, actor=actor, subject=user, reason=reason))


def close_user(*, user: User, actor: User, reason: str, request: HttpRequest | None = None) -> None:
    """Close the profile for good: every authenticator cancelled, the password removed, all sessions
    ended; the audit trail is kept and the uid is never reused."""
    if not reason.strip():
        raise ValueError("A reason is required to close a Care Identity")
    with transaction.atomic():
        _lock_status(user, from_statuses={User.Status.ACTIVE, User.Status.SUSPENDED}, done="closed again")
        removed = []
        for kind in registry.all_types():
            if kind.model.objects.filter(user=user).delete()[0]:
                removed.append(kind.key)
        user.status = User.Status.CLOSED
        user.set_unusable_password()
        user.save(update_fields=["status", "password"])
        ended = end_sessions(user, reason="closed")
        notify_person(record(Event.USER_CLOSED, request=request, actor=actor, subject=user, reason=reason,
                       authenticators_removed=removed, sessions_ended=ended, **_revoke_links(user)))


def change_roles(*, user: User, actor: User | None, add: AbstractSet[str] = frozenset(), remove: AbstractSet[str] = frozenset(),
                 assignable: AbstractSet[str], reason: str = "", request: HttpRequest | None = None) -> set[str]:
    """Give and take the roles `actor` may assign (an RA gives a reason; the operator's grant_role command has
    none); staff status follows from having any role. Only the roles named change: the others are as committed,
    read under the person's row lock, so another RA's change that landed since this one's page read the person
    stays. Returns the person's roles now."""
    from django.contrib.auth.models import Group

    with transaction.atomic():
        user.lock_status()
        current = set(user.groups.values_list("name", flat=True))
        wanted = (current | (add & assignable)) - (remove & assignable)
        if wanted == current:
            return current
        user.groups.set(Group.objects.filter(name__in=wanted))
        User.objects.filter(pk=user.pk).update(is_staff=bool(wanted) or user.is_superuser)
        notify_person(record(Event.ROLES_CHANGED, request=request, actor=actor, subject=user,
                             added=sorted(wanted - current), removed=sorted(current - wanted),
                             **({"reason": reason} if reason else {})))
    return wanted
