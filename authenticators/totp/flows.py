"""The Microsoft Authenticator registration journey and its sign-in method.

After the link: otp -> password -> qr -> verify -> done. Each step moves on with a
conditional update, so a replayed or skipped post changes nothing.
"""

from __future__ import annotations

from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts import flows as account_flows
from accounts.models import EmailOneTimePassword, EmailTaken, User
from accounts.notifications import notify_person, send_email_code
from audit.models import Event, Outcome
from audit.record import record
from authenticators import flows as link_flows
from authenticators.journeys import (
    AlreadyRegistered,
    EmailInUse,
    NoJourney,
    NotActive,
    TooManyFailures,
    TooManyWrongEmails,
    UsedLink,
)
from authenticators.models import RegistrationLink
from signin import flows as signin_flows
from signin import throttle

from . import codes
from .kind import KIND
from .models import AppRegistration, AuthenticatorApp


class AppAlreadyRegistered(AlreadyRegistered):
    title = "You already have a Microsoft Authenticator registered"


def open_link(request: HttpRequest, link: RegistrationLink | None) -> RegistrationLink:
    """The link if it can start a Microsoft Authenticator registration now; JourneyError otherwise."""
    link = link_flows.check_link(request, link)
    if AuthenticatorApp.objects.registered(link.user).exists():
        raise link_flows.refuse(request, link, AppAlreadyRegistered())
    return link


def start_registration(request: HttpRequest, link: RegistrationLink, email: str) -> bool:
    """Use the link, bind the journey to this browser and send the one-time password.

    False (nothing used) when `email` is not the person's Care Identity address; five of those
    and the link is dead.
    """
    if email.lower() != link.user.email.lower():
        with transaction.atomic():
            record(Event.LINK_REFUSED, request=request, subject=link.user, outcome=Outcome.FAILURE,
                   link_id=link.pk, reason="email does not match")
            stopped = link_flows.count_journey_failure(link)
        if stopped:
            raise TooManyWrongEmails()
        return False
    with transaction.atomic():
        if not link_flows.begin_journey(request, link, step="otp"):
            raise UsedLink()
        code = EmailOneTimePassword.issue(user=link.user, email=link.user.email, purpose="registration")
        AppRegistration.objects.create(link=link, email_code=code)
        _send_code(request, code)
    return True


def _send_code(request: HttpRequest, code: EmailOneTimePassword) -> None:
    record(Event.OTP_SENT, request=request, subject=code.user, email=code.email, purpose=code.purpose)
    send_email_code(code)


def current_journey(request: HttpRequest, step: str) -> RegistrationLink:
    return link_flows.current_journey(request, KIND.key, step, "app_registration", "app_registration__email_code")


def resend_code(request: HttpRequest, link: RegistrationLink) -> bool:
    code = link.app_registration.email_code
    with transaction.atomic():
        if code is None or not code.replace():
            return False
        _send_code(request, code)
    return True


def check_email_code(request: HttpRequest, link: RegistrationLink, entered: str) -> EmailOneTimePassword.Result:
    """The one-time password proves the address; EmailInUse (nothing changed, the refusal audited)
    when the address belongs to another Care Identity, so the RA can sort it out and the person
    carry on from this step."""
    code = link.app_registration.email_code
    Result = EmailOneTimePassword.Result
    try:
        with transaction.atomic():
            result = code.verify(entered) if code else Result.EXHAUSTED
            if result == Result.ACCEPTED:
                if not link.advance("otp", "password"):
                    raise NoJourney()
                account_flows.verify_email_by_code(request, link.user, code.email)
            else:
                record(Event.OTP_FAILED, request=request, subject=link.user, outcome=Outcome.FAILURE,
                       reason=result.value, failures=code.failures if code else None)
    except EmailTaken:
        account_flows.refuse_taken_email(request, user=link.user, email=code.email, via="one-time password",
                                         link_id=link.pk)
        raise EmailInUse() from None
    return result


def refuse_password(request: HttpRequest, link: RegistrationLink, reasons: list[str]) -> None:
    record(Event.PASSWORD_REFUSED, request=request, subject=link.user, outcome=Outcome.FAILURE, reasons=reasons)


def choose_password(request: HttpRequest, link: RegistrationLink, password: str) -> None:
    """Keep the new password's hash until the authenticator is verified; show the QR code next."""
    with transaction.atomic():
        if not link.advance("password", "qr"):
            raise NoJourney()
        AppRegistration.objects.filter(pk=link.pk).update(
            pending_password=make_password(password), pending_secret=codes.new_secret()
        )


def continue_to_verify(request: HttpRequest, link: RegistrationLink) -> None:
    if not link.advance("qr", "verify"):
        raise NoJourney()


def complete_registration(request: HttpRequest, link: RegistrationLink, token: str) -> bool:
    """Check the first code from the app; on success the authenticator and password are saved together."""
    registration: AppRegistration = link.app_registration
    step = codes.matching_step(registration.pending_secret, token)
    if step is None:
        with transaction.atomic():
            record(Event.AUTHENTICATOR_REGISTRATION_FAILED, request=request, subject=link.user,
                   outcome=Outcome.FAILURE, kind=link.kind, reason="wrong code")
            stopped = link_flows.count_journey_failure(link)
            if stopped:
                registration.forget_secrets()
        if stopped:
            raise TooManyFailures()
        return False
    user: User = link.user
    try:
        with transaction.atomic():
            if not link.advance("verify", "done", completed_at=timezone.now()):
                raise NoJourney()
            if not User.objects.filter(pk=user.pk, status=User.Status.ACTIVE).exists():
                raise NotActive()
            AuthenticatorApp.objects.create(
                user=user, name=KIND.name, key=registration.pending_secret, last_t=step, confirmed=True
            )
            user.password = registration.pending_password
            user.save(update_fields=["password"])
            registration.forget_secrets()
            record(Event.PASSWORD_SET, request=request, subject=user, method=KIND.key)
            notify_person(record(Event.AUTHENTICATOR_REGISTERED, request=request, subject=user,
                                               method=KIND.key, aal=KIND.aal, kind=KIND.key, name=KIND.name))
    except IntegrityError:
        raise AppAlreadyRegistered() from None
    link_flows.end_journey(request)
    return True


# --- signing in with the Authenticator app --------------------------------------------------

SESSION_PENDING = "careid_pending_signin"
PENDING_TTL_SECONDS = 300


def start_signin(request: HttpRequest, *, email: str, password: str) -> str | None:
    """Password step: None when the person may go on to the code, else the message to show."""
    user, message = signin_flows.check_password_step(request, email=email, password=password, method=KIND.key)
    if user is None:
        return message
    request.session[SESSION_PENDING] = {"user": user.pk, "at": timezone.now().timestamp()}
    return None


def pending_signin_user(request: HttpRequest) -> User | None:
    pending = request.session.get(SESSION_PENDING)
    if not pending or timezone.now().timestamp() - pending["at"] > PENDING_TTL_SECONDS:
        return None
    return User.objects.filter(pk=pending["user"]).first()


def finish_signin(request: HttpRequest, user: User, token: str) -> str | None:
    """Code step: None when signed in, else the message to show."""
    refused = signin_flows.begin_signin_attempt(request, email=user.email, user=user, method=KIND.key)
    if refused:
        if user.is_locked:
            request.session.pop(SESSION_PENDING, None)
        return refused
    device = AuthenticatorApp.objects.registered(user).first()
    if device is None or not user.is_active:
        # Someone with a password but no app (e.g. removed after a lost phone) gets what a wrong
        # password gets: the app is the second factor, not an option.
        request.session.pop(SESSION_PENDING, None)
        return signin_flows.fail_signin_attempt(request, email=user.email, user=user, method=KIND.key,
                                                 reason="no authenticator app" if device is None else f"profile {user.status}")
    allowed, why = device.verify_is_allowed()
    if not allowed:
        throttle.release(user, succeeded=False)
        return throttle.wait_message(why["locked_until"] - timezone.now())
    if not device.verify_token(token):
        message = signin_flows.fail_signin_attempt(
            request, email=user.email, user=user, method=KIND.key, reason="wrong code",
            message="The code is not correct. Check your authenticator app and enter the latest code.",
        )
        if user.is_locked:
            request.session.pop(SESSION_PENDING, None)
        return message
    request.session.pop(SESSION_PENDING, None)
    signin_flows.complete_signin(request, user=user, kind=KIND)
    return None
