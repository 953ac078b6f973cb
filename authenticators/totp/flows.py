"""The Microsoft Authenticator registration journey and its sign-in method.

The journey, after the link is used: otp -> password -> qr -> verify -> done. Each step
moves on with a conditional update, so a replayed or skipped post changes nothing.
"""

from __future__ import annotations

from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts import flows as account_flows
from accounts import throttle
from accounts.models import EmailOneTimePassword, User
from accounts.tasks import send_email_code_task, send_notification_task
from audit.models import Event, Outcome
from audit.record import record
from authenticators.journeys import (
    EXPIRED_LINK,
    NO_JOURNEY,
    NOT_ACTIVE,
    OTHER_USER,
    TOO_MANY_FAILURES,
    UNKNOWN_LINK,
    USED_LINK,
    JourneyError,
)
from authenticators.models import RegistrationLink

from . import codes
from .kind import KIND
from .models import AuthenticatorApp

SESSION_JOURNEY = "careid_registration"
MAX_JOURNEY_FAILURES = 5


ALREADY_REGISTERED = JourneyError(
    "You already have a Microsoft Authenticator registered",
    "You can register one of each type of authenticator. Ask your registration authority to remove the old one first.",
    409,
)

def open_link(request: HttpRequest, link: RegistrationLink) -> None:
    """Raise JourneyError (nothing changes) unless the link can be used now."""
    if link.kind != KIND.key:
        raise UNKNOWN_LINK
    if request.user.is_authenticated and request.user.pk != link.user_id:
        raise OTHER_USER
    if link.is_used:
        raise USED_LINK
    if link.is_expired:
        if request.method == "POST":
            record(Event.LINK_EXPIRED, request=request, subject=link.user, outcome=Outcome.FAILURE, link_id=link.pk)
        raise EXPIRED_LINK
    if not link.user.is_active:
        raise NOT_ACTIVE
    if AuthenticatorApp.objects.filter(user=link.user, confirmed=True).exists():
        raise ALREADY_REGISTERED
    return link


def confirm_sole_access(request: HttpRequest, link: RegistrationLink) -> None:
    RegistrationLink.objects.filter(pk=link.pk, confirmed_at__isnull=True).update(confirmed_at=timezone.now())


def start_registration(request: HttpRequest, link: RegistrationLink, email: str) -> bool:
    """Use the link, bind the journey to this browser and send the one-time password.

    False (nothing used) when `email` is not the person's Care Identity address.
    """
    if email.lower() != link.user.email.lower():
        with transaction.atomic():
            RegistrationLink.objects.filter(pk=link.pk).update(failures=link.failures + 1)
            record(Event.LINK_REFUSED, request=request, subject=link.user, outcome=Outcome.FAILURE,
                   link_id=link.pk, reason="email does not match")
        link.failures += 1
        if link.failures >= MAX_JOURNEY_FAILURES:
            RegistrationLink.objects.filter(pk=link.pk).update(used_at=timezone.now())
            raise TOO_MANY_FAILURES
        return False
    with transaction.atomic():
        code = EmailOneTimePassword.issue(user=link.user, email=link.user.email, purpose="registration")
        if not link.mark_used(step="otp", email_code=code, failures=0):
            raise USED_LINK  # another request used it first: the code above is rolled back
        record(Event.LINK_USED, request=request, subject=link.user, kind=link.kind, link_id=link.pk)
        _send_code(request, code)
    request.session[SESSION_JOURNEY] = link.pk
    return True


def _send_code(request: HttpRequest, code: EmailOneTimePassword) -> None:
    record(Event.OTP_SENT, request=request, subject=code.user, email=code.email, purpose=code.purpose)
    transaction.on_commit(lambda: send_email_code_task.delay(code.pk))


def current_journey(request: HttpRequest, step: str) -> RegistrationLink:
    """This browser's journey, if it is at `step`; JourneyError otherwise (nothing changes)."""
    link_id = request.session.get(SESSION_JOURNEY)
    link = (
        RegistrationLink.objects.select_related("user", "email_code").filter(pk=link_id, kind=KIND.key).first()
        if link_id
        else None
    )
    if link is None or link.journey_is_over:
        raise NO_JOURNEY
    if request.user.is_authenticated and request.user.pk != link.user_id:
        raise OTHER_USER
    if link.step != step:
        raise JourneyError(
            "You cannot do this step yet",
            "Finish the registration steps in order. Go back to the step you were on.",
            409,
        )
    return link


def resend_code(request: HttpRequest, link: RegistrationLink) -> bool:
    code = link.email_code
    with transaction.atomic():
        if code is None or not code.replace():
            return False
        _send_code(request, code)
    return True


def check_email_code(request: HttpRequest, link: RegistrationLink, entered: str) -> EmailOneTimePassword.Result:
    code = link.email_code
    Result = EmailOneTimePassword.Result
    with transaction.atomic():
        result = code.verify(entered) if code else Result.EXHAUSTED
        if result == Result.ACCEPTED and link.advance("otp", "password"):
            account_flows.verify_email_by_code(request, link.user, code.email)
        elif result != Result.ACCEPTED:
            record(Event.OTP_FAILED, request=request, subject=link.user, outcome=Outcome.FAILURE,
                   reason=result.value, failures=code.failures if code else None)
    return result


def choose_password(request: HttpRequest, link: RegistrationLink, password: str) -> None:
    """Keep the new password's hash until the authenticator is verified; show the QR code next."""
    link.advance("password", "qr", pending_password=make_password(password), pending_secret=codes.new_secret())


def continue_to_verify(request: HttpRequest, link: RegistrationLink) -> None:
    link.advance("qr", "verify")


def complete_registration(request: HttpRequest, link: RegistrationLink, token: str) -> bool:
    """Check the first code from the app; on success the authenticator and password are saved."""
    step = codes.matching_step(link.pending_secret, token)
    if step is None:
        with transaction.atomic():
            failures = link.failures + 1
            RegistrationLink.objects.filter(pk=link.pk).update(failures=failures)
            link.failures = failures
            record(Event.AUTHENTICATOR_REGISTRATION_FAILED, request=request, subject=link.user,
                   outcome=Outcome.FAILURE, kind=link.kind, reason="wrong code", failures=failures)
        if failures >= MAX_JOURNEY_FAILURES:
            RegistrationLink.objects.filter(pk=link.pk).update(completed_at=timezone.now(), step="failed")
            raise TOO_MANY_FAILURES
        return False
    user: User = link.user
    try:
        with transaction.atomic():
            secret, password_hash = link.pending_secret, link.pending_password
            if not link.advance("verify", "done", completed_at=timezone.now(), pending_secret="", pending_password=""):
                raise NO_JOURNEY
            AuthenticatorApp.objects.create(user=user, name=KIND.name, key=secret, last_t=step, confirmed=True)
            user.password = password_hash
            user.save(update_fields=["password"])
            record(Event.PASSWORD_SET, request=request, subject=user, method=KIND.key)
            event = record(Event.AUTHENTICATOR_REGISTERED, request=request, subject=user, method=KIND.key,
                           aal=KIND.aal, kind=KIND.key, name=KIND.name)
            transaction.on_commit(lambda: send_notification_task.delay(event.pk))
    except IntegrityError:
        raise ALREADY_REGISTERED from None
    request.session.pop(SESSION_JOURNEY, None)
    return True


# --- signing in with the Authenticator app --------------------------------------------------

SESSION_PENDING = "careid_pending_signin"
PENDING_TTL_SECONDS = 300


def start_signin(request: HttpRequest, *, email: str, password: str) -> str | None:
    """Password step: None when the person may go on to the code, else the message to show."""
    user, message = account_flows.check_password_step(request, email=email, password=password, method=KIND.key)
    if user is None:
        return message
    if not AuthenticatorApp.objects.filter(user=user, confirmed=True).exists():
        # Someone with a password but no app (e.g. removed after a lost phone) looks exactly
        # like a wrong password: the app is the second factor, not an option.
        return account_flows.record_second_factor_failure(
            request, user=user, method=KIND.key, reason="no authenticator app"
        ) or throttle.BAD_CREDENTIALS
    request.session[SESSION_PENDING] = {"user": user.pk, "at": timezone.now().timestamp()}
    return None


def pending_signin_user(request: HttpRequest) -> User | None:
    pending = request.session.get(SESSION_PENDING)
    if not pending or timezone.now().timestamp() - pending["at"] > PENDING_TTL_SECONDS:
        return None
    return User.objects.filter(pk=pending["user"]).first()


def finish_signin(request: HttpRequest, user: User, token: str) -> str | None:
    """Code step: None when signed in, else the message to show."""
    device = AuthenticatorApp.objects.filter(user=user, confirmed=True).first()
    if device is None or not user.is_active:
        request.session.pop(SESSION_PENDING, None)
        return throttle.BAD_CREDENTIALS
    if user.is_locked:
        request.session.pop(SESSION_PENDING, None)
        return throttle.LOCKED
    allowed, why = device.verify_is_allowed()
    if not allowed:
        wait = why["locked_until"] - timezone.now()
        record(Event.SIGNIN_THROTTLED, request=request, subject=user, outcome=Outcome.FAILURE, method=KIND.key,
               reason="authenticator throttled")
        return throttle.wait_message(wait)
    if not device.verify_token(token):
        locked = account_flows.record_second_factor_failure(request, user=user, method=KIND.key, reason="wrong code")
        if locked:
            request.session.pop(SESSION_PENDING, None)
        return locked or "The code is not correct. Check your authenticator app and enter the latest code."
    request.session.pop(SESSION_PENDING, None)
    account_flows.complete_signin(request, user=user, kind=KIND)
    return None
