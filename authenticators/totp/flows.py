"""The Microsoft Authenticator registration journey and its sign-in method.

After the link and the e-mail steps every type shares (authenticators/email_steps.py): otp -> password ->
qr -> verify -> done. Each step moves on with a conditional update, so a replayed or skipped post
changes nothing.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts.models import EmailOneTimePassword, User
from accounts.notifications import notify_person
from audit.models import Event, Outcome
from audit.record import record
from authenticators import flows as link_flows
from authenticators.email_steps import send_code
from authenticators.journeys import AlreadyRegistered, NoJourney, NotActive, TooManyFailures
from authenticators.models import RegistrationLink
from signin import flows as signin_flows
from signin import throttle
from signin.models import Factor

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


def start_journey_state(link: RegistrationLink) -> None:
    """What this journey keeps between its steps (pending secret and password), beside its link."""
    AppRegistration.objects.create(link=link)


def current_journey(request: HttpRequest, step: str) -> RegistrationLink:
    return link_flows.current_journey(request, KIND.key, step, "app_registration", "email_code")


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
        record(Event.REGISTRATION_STEP, request=request, subject=link.user, kind=link.kind, link_id=link.pk,
               step="password", done="password chosen (kept until the app is verified)")


def continue_to_verify(request: HttpRequest, link: RegistrationLink) -> None:
    with transaction.atomic():
        if not link.advance("qr", "verify"):
            raise NoJourney()
        record(Event.REGISTRATION_STEP, request=request, subject=link.user, kind=link.kind, link_id=link.pk,
               step="qr", done="secret shown to this browser, added to the app")


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
            if not link.complete("verify"):
                raise NoJourney()
            if not User.objects.filter(pk=user.pk, status=User.Status.ACTIVE).exists():
                raise NotActive()
            AuthenticatorApp.objects.create(
                user=user, name=KIND.name, key=registration.pending_secret, last_t=step, confirmed=True
            )
            user.password = registration.pending_password
            user.save(update_fields=["password"])
            registration.forget_secrets()
            ended = signin_flows.sessions_after_new_password(request, user, reason="password set")
            record(Event.PASSWORD_SET, request=request, subject=user, method=KIND.key, sessions_ended=ended)
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
    # With the password it was proven against (Django's session check of it, never the hash): a change or a
    # reset of the password before the code step ends this sign-in, as it ends the person's sessions.
    request.session[SESSION_PENDING] = {"user": user.pk, "at": timezone.now().timestamp(),
                                        "password": user.get_session_auth_hash()}
    return None


def signin_pending(request: HttpRequest) -> bool:
    """Whether this browser passed the password step in the last PENDING_TTL_SECONDS (and has not
    finished or lost that sign-in since)."""
    pending = request.session.get(SESSION_PENDING)
    return bool(pending) and timezone.now().timestamp() - pending["at"] <= PENDING_TTL_SECONDS


def pending_signin_user(request: HttpRequest) -> User | None:
    """The person whose password this browser proved at the first step, while it is still their password;
    None otherwise, and the sign-in is forgotten (the password step again)."""
    if not signin_pending(request):
        return None
    pending = request.session[SESSION_PENDING]
    user = User.objects.filter(pk=pending["user"]).first()
    if user is None or not constant_time_compare(pending.get("password", ""), user.get_session_auth_hash()):
        request.session.pop(SESSION_PENDING, None)
        return None
    return user


def finish_signin(request: HttpRequest, user: User, token: str) -> str | None:
    """Code step: None when signed in, else the message to show."""
    refused = signin_flows.begin_signin_attempt(request, email=user.email, user=user, method=KIND.key, factor=Factor.CODE)
    if refused:
        if user.is_locked:
            request.session.pop(SESSION_PENDING, None)
        return refused
    device = AuthenticatorApp.objects.registered(user).first()
    if device is None or not user.is_active:
        # Someone with a password but no app (e.g. removed after a lost phone) gets what a wrong
        # password gets: the app is the second factor, not an option.
        request.session.pop(SESSION_PENDING, None)
        return signin_flows.fail_signin_attempt(request, email=user.email, user=user, method=KIND.key, factor=Factor.CODE,
                                                reason="no authenticator app" if device is None else f"profile {user.status}")
    if not device.verify_token(token):
        message = signin_flows.fail_signin_attempt(
            request, email=user.email, user=user, method=KIND.key, reason="wrong code", factor=Factor.CODE,
            message="The code is not correct. Check your authenticator app and enter the latest code.",
        )
        if user.is_locked:
            request.session.pop(SESSION_PENDING, None)
        return message
    request.session.pop(SESSION_PENDING, None)
    signin_flows.complete_signin(request, user=user, kind=KIND)
    return None


# --- forgotten password: e-mail -> e-mailed One Time Password -> app code -> new password ----------
#
# The same answers for every address: an unknown one, a suspended profile or one without the app gets
# the same pages (its holder, if any, is e-mailed why instead), and its code is simply never right.

SESSION_RESET = "careid_password_reset"
RESET_TTL_SECONDS = 900
RESET_PURPOSE = "password-reset"
# Reset e-mails (new codes and resends) per Care Identity per day: from one client address (a stranger who
# starts reset after reset uses up theirs, not those of the person's own address), and from all together
# (the inbox is not flooded, and with 5 wrong tries a code there are at most 100 guesses a day at 8 digits).
# A stranger with four addresses, or behind the person's own NAT, can still use up a day's e-mails.
RESET_EMAILS_PER_DAY = 5
RESET_EMAILS_PER_DAY_IN_ALL = 20
RESET_STARTS_PER_HOUR = 20  # per client address


@dataclass
class PasswordReset:
    """This browser's reset journey, kept in its session."""

    email: str
    step: str  # "otp" -> "app" -> "password"
    at: float
    user: int | None = None
    code: int | None = None
    # When a code was last sent, or said to be sent: the one-minute wait before a resend counts from it, and
    # for an address that gets no code (unknown, refused, over the day's e-mails) the expiry too, so that
    # neither tells the addresses apart.
    sent_at: float = 0.0
    # Names this journey's count of code checks in the throttle store (check_reset_code says why).
    journey: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @classmethod
    def of(cls, request: HttpRequest, step: str) -> PasswordReset | None:
        data = request.session.get(SESSION_RESET)
        if not isinstance(data, dict):
            return None
        known = {item.name for item in fields(cls)}
        reset = cls(**{name: value for name, value in data.items() if name in known})  # as an older release kept it
        if reset.step != step or time.time() - reset.at > RESET_TTL_SECONDS:
            return None
        return reset

    def save(self, request: HttpRequest) -> None:
        request.session[SESSION_RESET] = asdict(self)

    def load_user(self) -> User | None:
        return User.objects.filter(pk=self.user).first() if self.user else None


def _reset_refusal(user: User) -> str | None:
    """Why this Care Identity cannot reset its password, if it cannot (told only to its own address)."""
    if not user.is_active:
        return f"profile {user.status}"
    if user.is_locked and not user.lock_is_lifted_by_password_reset:
        return "locked"
    if not AuthenticatorApp.objects.registered(user).exists():
        return "no authenticator app"
    return None


def start_password_reset(request: HttpRequest, email: str) -> bool:
    """Send a One Time Password to `email` if it can reset a password; False when this client has
    started too many resets (the answer is otherwise the same for every address). Without the throttle
    store, refused (the 503 page) and audited."""
    with signin_flows.failing_closed(request, Event.PASSWORD_RESET_STARTED, email=email[:254]):
        return _start_password_reset(request, email)


def _start_password_reset(request: HttpRequest, email: str) -> bool:
    user = signin_flows.find_user_for_signin(email)
    if not throttle.within_limit(f"password-reset:{throttle.client_key(request)}", RESET_STARTS_PER_HOUR,
                                 timedelta(hours=1)):
        record(Event.PASSWORD_RESET_STARTED, request=request, subject=user, outcome=Outcome.FAILURE,
               email=email[:254], reason="ip_throttled")
        return False
    now = time.time()
    reset = PasswordReset(email=email, step="otp", at=now, user=user.pk if user else None, sent_at=now)
    with transaction.atomic():
        if user is None:
            record(Event.PASSWORD_RESET_STARTED, request=request, outcome=Outcome.FAILURE, email=email[:254],
                   reason="unknown email")
        elif why := _reset_refusal(user):
            notify_person(record(Event.PASSWORD_RESET_STARTED, request=request, subject=user, outcome=Outcome.FAILURE,
                                 reason=why))
        else:
            # A code of its own for this reset: one that someone else started for the address (knowing it is
            # enough) cannot spend this one's tries. Over the day's limits, the pages an unknown address gets.
            sending = _may_send_reset_email(request, user)
            record(Event.PASSWORD_RESET_STARTED, request=request, subject=user, emailed=sending)
            if sending:
                code = EmailOneTimePassword.issue(user=user, email=user.email, purpose=RESET_PURPOSE)
                send_code(request, code)
                reset.code = code.pk
        reset.save(request)
    return True


def _may_send_reset_email(request: HttpRequest, user: User) -> bool:
    day = timedelta(days=1)
    return (throttle.within_limit(f"password-reset-emails:{user.pk}:{throttle.client_key(request)}",
                                  RESET_EMAILS_PER_DAY, day)
            and throttle.within_limit(f"password-reset-emails:{user.pk}", RESET_EMAILS_PER_DAY_IN_ALL, day))


def resend_reset_code(request: HttpRequest, reset: PasswordReset) -> bool:
    """A new code; False while the last one is less than a minute old. A resend is an e-mail like a new
    code and counts against the day's limits; over them, and for an address that gets no code, the answers
    a sent code gets (its wait included) while nothing is sent."""
    if time.time() - reset.sent_at < settings.CAREID_EMAIL_CODE_COOLDOWN.total_seconds():
        return False
    code = EmailOneTimePassword.objects.filter(pk=reset.code).select_related("user").first() if reset.code else None
    if code is not None:
        if _may_send_reset_email(request, code.user):
            with transaction.atomic():
                if not code.replace():  # resent meanwhile from another tab of this journey
                    return False
                send_code(request, code)
        else:  # from here on, what an address that gets no code gets (a code whose expiry stayed would tell)
            reset.code = None
    reset.sent_at = time.time()
    reset.save(request)
    return True


def check_reset_code(request: HttpRequest, reset: PasswordReset, entered: str) -> EmailOneTimePassword.Result:
    Result = EmailOneTimePassword.Result
    # A real code's wrong tries are counted on its row, atomically. A journey whose address gets no code
    # counts its checks in the throttle store, as atomically: counted in the session, overlapping requests
    # each read 0 and wrote 1, and only a real address ran out of tries. Every journey counts there, so that
    # without the store all are refused alike (the 503 page).
    with signin_flows.failing_closed(request, Event.OTP_FAILED, purpose=RESET_PURPOSE):
        checks = throttle.count(f"password-reset-checks:{reset.journey}", timedelta(seconds=RESET_TTL_SECONDS))
    code = EmailOneTimePassword.objects.filter(pk=reset.code).select_related("user").first() if reset.code else None
    with transaction.atomic():
        if code is None:  # as EmailOneTimePassword.verify answers: expired first, then counted
            if time.time() - reset.sent_at >= settings.CAREID_EMAIL_CODE_TTL.total_seconds():
                result = Result.EXPIRED
            else:
                result = Result.EXHAUSTED if checks >= settings.CAREID_EMAIL_CODE_MAX_FAILURES else Result.WRONG
        else:
            result = code.verify(entered)
        if result == Result.ACCEPTED:
            reset.step = "app"
        else:
            record(Event.OTP_FAILED, request=request, subject=code.user if code else None, outcome=Outcome.FAILURE,
                   purpose=RESET_PURPOSE, reason=result.value)
        if result == Result.EXHAUSTED:
            request.session.pop(SESSION_RESET, None)
        else:
            reset.save(request)
    return result


def _refuse_reset(request: HttpRequest, user: User | None, why: str) -> None:
    """A reset that got past the e-mailed code and can no longer go on (the profile was suspended, locked
    for wrong codes or lost its app since)."""
    record(Event.PASSWORD_RESET, request=request, subject=user, outcome=Outcome.FAILURE, method=KIND.key, reason=why)


def check_reset_app_code(request: HttpRequest, reset: PasswordReset, token: str) -> str | None:
    """The authenticator app's code proves the second factor; None when right, else the message."""
    user = reset.load_user()
    if user is None or (why := _reset_refusal(user)):
        request.session.pop(SESSION_RESET, None)
        _refuse_reset(request, user, why if user else "no Care Identity")
        return "This password reset cannot go on. Contact your registration authority."
    refused = signin_flows.begin_signin_attempt(request, email=user.email, user=user, method=KIND.key,
                                                factor=Factor.CODE)
    if refused:
        return refused
    device = AuthenticatorApp.objects.registered(user).first()
    if device is None or not device.verify_token(token):
        message = signin_flows.fail_signin_attempt(
            request, email=user.email, user=user, method=KIND.key, reason="wrong code in password reset",
            factor=Factor.CODE, message="The code is not correct. Check your authenticator app and enter the latest code.",
        )
        if user.is_locked and not user.lock_is_lifted_by_password_reset:
            request.session.pop(SESSION_RESET, None)
        return message
    throttle.release(request, user, Factor.CODE)
    reset.step = "password"
    reset.save(request)
    return None


def finish_password_reset(request: HttpRequest, reset: PasswordReset, password: str) -> User | None:
    """Set the new password: a lock that wrong passwords caused is lifted, every session of the
    person ends, and they are e-mailed. None when the reset can no longer go on."""
    request.session.pop(SESSION_RESET, None)
    with transaction.atomic():
        # Read and held until the new password is in: what the reset decides from (the lock it may lift) is
        # what it writes over, not a lock for wrong codes counted meanwhile, which only an RA lifts.
        user = User.objects.select_for_update().filter(pk=reset.user).first() if reset.user else None
        if user is None or (why := _reset_refusal(user)):
            _refuse_reset(request, user, why if user else "no Care Identity")
            return None
        user.set_password(password)
        user.save(update_fields=["password"])
        unlocked = user.is_locked
        if unlocked:
            user.unlock()
        else:
            User.objects.filter(pk=user.pk).update(password_failures=0)
        ended = signin_flows.end_sessions(user, reason="password reset")
        notify_person(record(Event.PASSWORD_RESET, request=request, subject=user, method=KIND.key,
                             unlocked=unlocked, sessions_ended=ended))
    return user


def change_password(request: HttpRequest, password: str) -> int:
    """A signed-in person (recently re-authenticated) changes the Authenticator app's password: every
    other session ends, and they are e-mailed. Returns how many other sessions ended."""
    user: User = request.user
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        ended = signin_flows.sessions_after_new_password(request, user, reason="password changed")
        notify_person(record(Event.PASSWORD_CHANGED, request=request, subject=user, method=KIND.key,
                             sessions_ended=ended))
    return ended
