"""Use cases about Care Identities: invitation, e-mail addresses, signing in and out.

Each flow makes its change and writes its audit event in one transaction, and enqueues
e-mail only once that transaction has committed.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from functools import cache

from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth import login, logout
from django.contrib.auth.hashers import check_password, make_password
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.models import AuditEvent, Event, Outcome
from audit.record import record

from . import throttle
from .models import AllowedEmailDomain, User

SESSION_AUTH = "careid_auth"
SESSION_LAST_SEEN = "careid_last_seen"


def notify_person(event: AuditEvent) -> AuditEvent:
    """E-mail the person what the event changed about their access, once its transaction commits
    (accounts.tasks.send_notification_task renders templates/emails/notification_<event>)."""
    from .tasks import send_notification_task

    transaction.on_commit(lambda: send_notification_task.delay(event.pk), robust=True)
    return event


@cache
def _dummy_hash() -> str:
    """Checked against when the e-mail is unknown, so that an unknown address costs the
    same Argon2 work as a wrong password (no timing enumeration)."""
    return make_password(secrets.token_urlsafe(16))


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
    allow list or a name the User fields refuse, and IntegrityError when the address already
    belongs to someone.
    """
    email = AllowedEmailDomain.objects.check_email(email)
    User.validate_values(title=title, first_name=first_name, last_name=last_name)
    with transaction.atomic():
        user = User.objects.create_user(email, first_name=first_name, last_name=last_name, title=title)
        EmailAddress.objects.create(user=user, email=email, primary=True, verified=False)
        link = send_invitation(user=user, actor=actor, request=request)
    return user, link


def send_invitation(*, user: User, actor: User | None = None, request: HttpRequest | None = None):
    """E-mail an existing Care Identity its invitation (a link to register the Authenticator app)."""
    from authenticators.flows import issue_registration_link
    from authenticators.models import RegistrationLink

    with transaction.atomic():
        user.invited_at = timezone.now()
        user.save(update_fields=["invited_at"])
        record(Event.USER_INVITED, request=request, actor=actor, subject=user, email=user.email)
        return issue_registration_link(
            user=user, kind=settings.CAREID_INVITATION_AUTHENTICATOR, purpose=RegistrationLink.Purpose.INVITATION,
            actor=actor, request=request,
        )


# --- e-mail addresses (allauth's EmailAddress and confirmation keys) ------------------------


def add_email_address(request: HttpRequest, email: str) -> bool:
    """Add an unverified address (the form checked the allow list) and e-mail it a link.

    The person sees the same answer whether or not someone else holds the address; when
    someone does, that address is told of the attempt instead. False when over the hourly limit.
    """
    from .tasks import send_address_in_use_task, send_email_confirmation_task

    user = request.user
    if not throttle.within_limit(f"email-add:{user.pk}", settings.CAREID_EMAIL_ADD_LIMIT, timedelta(hours=1)):
        return False
    with transaction.atomic():
        if EmailAddress.objects.filter(email=email.lower(), verified=True).exclude(user=user).exists():
            event = record(Event.EMAIL_REFUSED, request=request, subject=user, outcome=Outcome.FAILURE, email=email,
                           reason="verified on another Care Identity")
            transaction.on_commit(lambda: send_address_in_use_task.delay(event.pk), robust=True)
            return True
        address = EmailAddress.objects.create(user=user, email=email, primary=False, verified=False)
        record(Event.EMAIL_ADDED, request=request, subject=user, email=email)
        transaction.on_commit(lambda: send_email_confirmation_task.delay(address.pk), robust=True)
    return True


def confirm_email_address(request: HttpRequest, confirmation: EmailConfirmationHMAC) -> EmailAddress | None:
    """Verify the address of a confirmation link; the first verified address becomes primary."""
    with transaction.atomic():
        address = confirmation.confirm(request)
        if address is None:
            return None
        if not EmailAddress.objects.filter(user=address.user, primary=True, verified=True).exists():
            EmailAddress.objects.filter(user=address.user, primary=True).update(primary=False)
            address.set_as_primary()
        notify_person(record(Event.EMAIL_VERIFIED, request=request, subject=address.user, email=address.email, via="link"))
    return address


def verify_email_by_code(request: HttpRequest | None, user: User, email: str) -> None:
    """A one-time password sent to `email` came back: the address is proven."""
    verified = EmailAddress.objects.filter(user=user, email=email.lower(), verified=False).update(verified=True)
    if verified:
        record(Event.EMAIL_VERIFIED, request=request, subject=user, email=email, via="one-time password")


# --- signing in and out --------------------------------------------------------------------


def find_user_for_signin(email: str) -> User | None:
    return User.objects.with_email(email).first() if email else None


def begin_signin_attempt(request: HttpRequest, *, email: str, user: User | None, method: str) -> str | None:
    """Take the account's attempt slot before checking anything; the refusal message otherwise."""
    refused = throttle.begin(request, email, user)
    if refused is None:
        return None
    record(Event.SIGNIN_THROTTLED, request=request, subject=user, outcome=Outcome.FAILURE, method=method,
           reason=refused.reason, email=email[:254])
    return refused.message


def fail_signin_attempt(
    request: HttpRequest, *, email: str, user: User | None, method: str, reason: str,
    message: str = throttle.BAD_CREDENTIALS,
) -> str:
    """Count and audit a failed attempt; the message to show (the lock message once locked)."""
    with transaction.atomic():
        locked = throttle.fail(request, email, user)
        record(Event.SIGNIN_FAILED, request=request, subject=user, outcome=Outcome.FAILURE, method=method,
               reason=reason, email=email[:254])
        if locked and user is not None:
            notify_person(record(Event.ACCOUNT_LOCKED, request=request, subject=user, outcome=Outcome.FAILURE,
                                 method=method, failures=user.signin_failures))
    return throttle.LOCKED if locked else message


def check_password_step(request: HttpRequest, *, email: str, password: str, method: str) -> tuple[User | None, str | None]:
    """A password as first factor.

    Returns (user, None) when the password is right and the person may go on to their second
    factor, or (None, message) with a message that is the same for an unknown address, a wrong
    password and a suspended or closed profile.
    """
    user = find_user_for_signin(email)
    refused = begin_signin_attempt(request, email=email, user=user, method=method)
    if refused:
        return None, refused
    if user is None:
        check_password(password, _dummy_hash())  # the same Argon2 work as for a real account
        reason = "unknown email"
    elif not user.check_password(password):
        reason = "wrong password"
    elif not user.is_active:
        reason = f"profile {user.status}"
    else:
        throttle.release(user, succeeded=False)  # the count resets only when the sign-in completes
        return user, None
    return None, fail_signin_attempt(request, email=email, user=user, method=method, reason=reason)


def unlock_user(*, user: User, reason: str, actor: User | None = None, request: HttpRequest | None = None) -> None:
    """Clear the sign-in lock and every throttle on the person's account and authenticators."""
    from authenticators import registry

    with transaction.atomic():
        user.unlock()
        for kind in registry.all_types():
            kind.model.objects.filter(user=user).update(throttling_failure_count=0, throttling_failure_timestamp=None)
        notify_person(record(Event.ACCOUNT_UNLOCKED, request=request, actor=actor, subject=user, reason=reason))


def complete_signin(request: HttpRequest, *, user: User, kind) -> None:
    """Both factors passed: a new session (new id) that records how the person signed in."""
    with transaction.atomic():
        throttle.release(user, succeeded=True)
        login(request, user, backend="accounts.backends.CareIdentityBackend")  # cycles the session key
        now = time.time()
        request.session[SESSION_AUTH] = {"method": kind.key, "aal": kind.aal, "acr": kind.acr, "at": now}
        request.session[SESSION_LAST_SEEN] = now
        # allauth's list of a person's sessions: how suspension and closure end them all at once.
        UserSession.objects.create_from_request(request)
        record(Event.SIGNIN_SUCCEEDED, request=request, actor=user, subject=user, method=kind.key, aal=kind.aal,
               acr=kind.acr)


def session_auth(request: HttpRequest) -> dict | None:
    return request.session.get(SESSION_AUTH) if request.user.is_authenticated else None


def sign_out(request: HttpRequest) -> None:
    user = request.user if request.user.is_authenticated else None
    auth = session_auth(request) or {}
    with transaction.atomic():
        if user is not None:
            record(Event.SIGNED_OUT, request=request, subject=user, method=auth.get("method", ""), aal=auth.get("aal"))
            UserSession.objects.filter(session_key=request.session.session_key).delete()
        logout(request)  # flushes the session: the id is gone from the store


# --- registration authority actions (the admin and commands call these) ------------------------


def _revoke_links(user: User) -> int:
    """Registration links not yet used stop working (a reinstated person needs a new one)."""
    from authenticators.models import RegistrationLink

    now = timezone.now()
    return RegistrationLink.objects.filter(user=user, used_at__isnull=True, expires_at__gt=now).update(expires_at=now)


def _end_sessions(user: User) -> int:
    """End every session of the person at once (allauth's list of them, and each from the store)."""
    sessions = list(UserSession.objects.filter(user=user))
    for session in sessions:
        session.end()
    return len(sessions)


def create_user(*, actor: User, email: str, first_name: str, last_name: str, title: str = "", reason: str = "",
                request: HttpRequest | None = None):
    """An RA creates a Care Identity: the person is invited to register the Authenticator app."""
    with transaction.atomic():
        user, link = invite_user(email=email, first_name=first_name, last_name=last_name, title=title,
                                 actor=actor, request=request)
        record(Event.USER_CREATED, request=request, actor=actor, subject=user, email=user.email, reason=reason)
    return user, link


def change_user_details(*, user: User, actor: User, changes: dict[str, str], request: HttpRequest | None = None) -> None:
    """Names, title or Care Identity e-mail. A new e-mail replaces the primary address, unverified
    until the person proves it, and both the old and the new address are told."""
    allowed = {"title", "first_name", "last_name", "email"}
    changes = {name: value for name, value in changes.items() if name in allowed and getattr(user, name) != value}
    if not changes:
        return
    User.validate_values(**{name: value for name, value in changes.items() if name != "email"})
    with transaction.atomic():
        old_email = user.email
        before = {name: getattr(user, name) for name in changes}
        for name, value in changes.items():
            setattr(user, name, value)
        user.save(update_fields=list(changes))
        if "email" in changes:
            EmailAddress.objects.filter(user=user, primary=True).update(primary=False)
            EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"primary": True, "verified": False})
        event = record(Event.USER_CHANGED, request=request, actor=actor, subject=user,
                       fields=sorted(changes), before=before, after=changes)
        if "email" in changes:
            notify_person(event)
            from .tasks import send_email_changed_to_old_address_task

            transaction.on_commit(lambda: send_email_changed_to_old_address_task.delay(event.pk, old_email), robust=True)


def suspend_user(*, user: User, actor: User, reason: str, request: HttpRequest | None = None) -> int:
    """Suspend the profile and end all its sessions at once; returns how many sessions ended."""
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(status=User.Status.SUSPENDED)
        user.status = User.Status.SUSPENDED
        ended = _end_sessions(user)
        notify_person(record(Event.USER_SUSPENDED, request=request, actor=actor, subject=user, reason=reason,
                       sessions_ended=ended, links_revoked=_revoke_links(user)))
    return ended


def reinstate_user(*, user: User, actor: User, reason: str, request: HttpRequest | None = None) -> None:
    if user.status == User.Status.CLOSED:
        raise ValueError("A closed Care Identity cannot be reinstated")
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(status=User.Status.ACTIVE)
        user.status = User.Status.ACTIVE
        notify_person(record(Event.USER_REINSTATED, request=request, actor=actor, subject=user, reason=reason))


def close_user(*, user: User, actor: User, reason: str, request: HttpRequest | None = None) -> None:
    """Close the profile for good: every authenticator cancelled, the password removed, all sessions
    ended; the audit trail is kept and the uid is never reused."""
    from authenticators import registry

    if not reason.strip():
        raise ValueError("A reason is required to close a Care Identity")
    with transaction.atomic():
        removed = []
        for kind in registry.all_types():
            if kind.model.objects.filter(user=user).delete()[0]:
                removed.append(kind.key)
        user.status = User.Status.CLOSED
        user.set_unusable_password()
        user.save(update_fields=["status", "password"])
        ended = _end_sessions(user)
        notify_person(record(Event.USER_CLOSED, request=request, actor=actor, subject=user, reason=reason,
                       authenticators_removed=removed, sessions_ended=ended, links_revoked=_revoke_links(user)))


def set_roles(*, user: User, actor: User | None, roles: set[str], assignable: set[str], request: HttpRequest | None = None) -> None:
    """Give or take the roles `actor` may assign; staff status follows from having any role."""
    from django.contrib.auth.models import Group

    current = set(user.groups.values_list("name", flat=True))
    wanted = (current - assignable) | (roles & assignable)
    if wanted == current:
        return
    with transaction.atomic():
        user.groups.set(Group.objects.filter(name__in=wanted))
        User.objects.filter(pk=user.pk).update(is_staff=bool(wanted) or user.is_superuser)
        notify_person(record(Event.ROLES_CHANGED, request=request, actor=actor, subject=user,
                       added=sorted(wanted - current), removed=sorted(current - wanted)))
