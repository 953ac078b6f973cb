"""The Microsoft Authenticator registration journey and its sign-in method.

After the link and the e-mail steps every type shares (authenticators/email_steps.py): otp -> password ->
qr -> verify -> done. Each step moves on with a conditional update, so a replayed or skipped post
changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from datetime import timedelta

from django.contrib.auth import logout
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from accounts.models import EmailOneTimePassword, User
from accounts.notifications import notify_person, send_decoy_email_code, send_email_code
from audit.models import Event, Outcome
from audit.record import record
from authenticators import flows as link_flows
from authenticators.email_steps import send_code
from authenticators.journeys import AlreadyRegistered, NoJourney, TooManyFailures
from authenticators.models import RegistrationLink
from signin import flows as signin_flows
from signin import throttle
from signin.models import Factor

from . import codes
from .kind import KIND
from .models import AppRegistration, AuthenticatorApp, PasswordResetWait


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
    with link_flows.journey_step(request, link), transaction.atomic():
        if not link.advance("password", "qr"):
            raise NoJourney()
        AppRegistration.objects.filter(pk=link.pk).update(
            pending_password=make_password(password), pending_secret=codes.new_secret()
        )
        record(Event.REGISTRATION_STEP, request=request, subject=link.user, kind=link.kind, link_id=link.pk,
               step="password", done="password chosen (kept until the app is verified)")


def continue_to_verify(request: HttpRequest, link: RegistrationLink) -> None:
    with link_flows.journey_step(request, link), transaction.atomic():
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
        with link_flows.completing_journey(request, link, "verify"):
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
# Reset e-mails (codes, resends, and the notice why a password cannot be reset) per address asked for, whoever
# holds it (a Care Identity's one address; an unknown address waits and counts alike): one a minute
# (CAREID_EMAIL_CODE_COOLDOWN), whichever journey, browser or client address asks (PasswordResetWait); and per
# day from one client address (a stranger who starts reset after reset uses up theirs, not those of the
# person's own address) and from all together (the inbox is not flooded, and with 5 wrong tries a code there
# are at most 100 guesses a day at 8 digits). A stranger with four addresses, or behind the person's own NAT,
# can still use up a day's e-mails.
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
    # This journey's own code (an EmailOneTimePassword), e-mailed or not: a stranger's journey for the same
    # address has another, so their wrong tries never spend this one's. Its row keeps the wait before a resend,
    # the expiry and the wrong tries, for every address alike.
    code: int | None = None
    # Set when the app's code is right: the password hash then (its keyed digest). The new password is set only
    # while it is still the one: a journey finishes once, even submitted twice or from two tabs.
    password_was: str = ""
    # Where the person was going when they forgot it (a relying service's sign-in, checked by safe_goto): "Sign in"
    # at the end leads back there.
    goto: str = ""

    # Journeys kept by an older release start again, whatever the address: that release gave a code only to an
    # address that could reset, so going on with those alone would tell which addresses are Care Identities.
    VERSION = 2

    @classmethod
    def of(cls, request: HttpRequest, step: str) -> PasswordReset | None:
        data = request.session.get(SESSION_RESET)
        if not isinstance(data, dict) or data.get("v") != cls.VERSION:
            return None
        known = {item.name for item in fields(cls)}
        reset = cls(**{name: value for name, value in data.items() if name in known})
        if reset.step != step or time.time() - reset.at > RESET_TTL_SECONDS:
            return None
        return reset

    @staticmethod
    def goto_of(request: HttpRequest) -> str:
        """Where the person was going, from this browser's reset even once it has expired or moved on (for the
        page that starts it again; the caller checks it again)."""
        data = request.session.get(SESSION_RESET)
        return str(data.get("goto") or "") if isinstance(data, dict) else ""

    def save(self, request: HttpRequest) -> None:
        request.session[SESSION_RESET] = {**asdict(self), "v": self.VERSION}

    def load_user(self) -> User | None:
        return User.objects.filter(pk=self.user).first() if self.user else None


# No Care Identity has this id: what is looked for when an address is nobody's, so that its reset makes the
# statements a Care Identity's makes (and finds nothing).
NOBODY = 0


def _reset_refusal(user: User | None, email: str) -> str | None:
    """Why this Care Identity cannot reset its password from `email` (the address the reset was started for),
    if it cannot (told only to its own address); "unknown email" for an address that is nobody's."""
    # Looked for whatever the address, as the WebAuthn sign-in page looks for an unknown address's credential.
    has_app = AuthenticatorApp.objects.registered(user.pk if user else NOBODY).exists()
    if user is None:
        return "unknown email"
    if user.email.lower() != email:  # (normalised by EmailForm) an RA changed it since: the old address proves nothing
        return "email changed"
    if not user.is_active:
        return f"profile {user.status}"
    if user.is_locked and not user.lock_is_lifted_by_password_reset:
        return "locked"
    if not has_app:
        return "no authenticator app"
    return None


def start_password_reset(request: HttpRequest, email: str, *, goto: str = "") -> bool:
    """Send a One Time Password to `email` (normalised: EmailForm) if it can reset a password; False when this client has
    started too many resets (the answer is otherwise the same for every address). Without the throttle
    store, refused (the 503 page) and audited. `goto` (already checked) is kept for the journey's end."""
    with signin_flows.failing_closed(request, Event.PASSWORD_RESET_STARTED, email=email[:254]):
        return _start_password_reset(request, email, goto)


def _start_password_reset(request: HttpRequest, email: str, goto: str) -> bool:
    user = signin_flows.find_user_for_signin(email)
    if not throttle.within_limit(f"password-reset:{throttle.client_key(request)}", RESET_STARTS_PER_HOUR,
                                 timedelta(hours=1)):
        record(Event.PASSWORD_RESET_STARTED, request=request, subject=user, outcome=Outcome.FAILURE,
               email=email[:254], reason="ip_throttled")
        return False
    # Posted again from this browser for the same address within the minute (a double click, an impatient
    # second try): its journey goes on with the code it has, e-mailed or not, for every address alike; a new one
    # could not be e-mailed yet, and the code that arrives would not be its code.
    if (kept := PasswordReset.of(request, "otp")) is not None and kept.email == email:
        code = EmailOneTimePassword.objects.filter(pk=kept.code).first()
        if code is not None and code.resend_wait():
            return True
    # A code of this reset's own, e-mailed unless the address cannot reset (the notice why goes instead, to a Care
    # Identity), a reset e-mail went to it less than a minute ago (from any journey, browser or client address:
    # starting again does not skip the wait; the new journey's "Send a new code" sends one once the wait is
    # over) or the day's e-mails are used up: then it is one that nobody has.
    # The same statements and Celery hand-over whatever the address, in the same order (no enumeration by
    # timing): the app looked for, the wait claimed and the day's e-mails counted for the address asked for
    # (whoever's it is, or nobody's), the code row written, one audit event, and where an e-mail is due one outbox row
    # handed to Celery: the code, the notice, or for an unknown address one that no worker sends.
    whom = PasswordResetWait.key_for(email)
    with transaction.atomic():
        why = _reset_refusal(user, email)
        held_back = _reset_email_held_back(request, whom)
        emailed = why is None and held_back is None
        code = EmailOneTimePassword.issue(user=user, email=user.email if user else "", purpose=RESET_PURPOSE,
                                          emailed=emailed)
        if held_back is None:
            _count_reset_email(request, whom)
        # One audit event: whether a code was e-mailed, and why not (the profile's refusal, "cooldown", "daily limit").
        details: dict = {"emailed": emailed} if user else {"emailed": False, "email": email[:254]}
        if why:
            details["reason"] = why
            if user is not None:
                details["notified"] = held_back is None
            if held_back:
                details["held_back"] = held_back
        elif held_back:
            details["reason"] = held_back
        started = record(Event.PASSWORD_RESET_STARTED, request=request, subject=user,
                         outcome=Outcome.FAILURE if why else Outcome.SUCCESS, **details)
        if emailed:
            send_email_code(code)
        elif held_back is None and user is not None:
            notify_person(started)
        elif held_back is None:
            send_decoy_email_code(code)
        PasswordReset(email=email, step="otp", at=time.time(), user=user.pk if user else None,
                      code=code.pk, goto=goto).save(request)
    return True


def _reset_email_keys(request: HttpRequest, whom: str) -> tuple[str, str]:
    """The day's reset e-mails to `whom` (PasswordResetWait.key_for) counted from this client and in all."""
    return f"password-reset-emails:{whom}:{throttle.client_key(request)}", f"password-reset-emails:{whom}"


def _reset_email_held_back(request: HttpRequest, whom: str) -> str | None:
    """Why no reset e-mail may go to `whom` (PasswordResetWait.key_for) now ("daily limit", "cooldown"); None
    when one may, and then the wait before the next has started (in the caller's transaction: held by it, given
    back if it fails). Nothing is counted against the day's limits here (_count_reset_email does, once it
    goes): a reset held back costs no e-mail, so the person's own restarts within a stranger's minute do not
    use up their day. An unknown address is counted and waits the same way, though nothing is ever sent."""
    from_client, in_all = _reset_email_keys(request, whom)
    if throttle.peek(from_client) >= RESET_EMAILS_PER_DAY or throttle.peek(in_all) >= RESET_EMAILS_PER_DAY_IN_ALL:
        return "daily limit"
    if not PasswordResetWait.objects.claim(whom):
        return "cooldown"
    return None


def _count_reset_email(request: HttpRequest, whom: str) -> None:
    from_client, in_all = _reset_email_keys(request, whom)
    day = timedelta(days=1)
    throttle.count(from_client, day)
    throttle.count(in_all, day)


def resend_reset_code(request: HttpRequest, reset: PasswordReset) -> bool:
    """A new code for this journey; False while its code (or its start, if none was sent) is less than a minute
    old, or while a reset e-mail from another journey is (the code this journey has goes on working, rather
    than being replaced by one that cannot be sent). Otherwise answered as sent, and e-mailed to a Care Identity that can reset its password, a minute
    after any reset e-mail to it and within the day's limits; else it is one that nobody has (a code whose
    expiry stayed would tell), its wait and expiry those of a sent one. The same statements and Celery
    hand-over whatever the address (_start_password_reset says which)."""
    code = EmailOneTimePassword.objects.filter(pk=reset.code).select_related("user").first()
    if code is None or code.resend_wait():
        return False
    user = code.user
    whom = PasswordResetWait.key_for(reset.email)
    with signin_flows.failing_closed(request, Event.OTP_SENT, purpose=RESET_PURPOSE), transaction.atomic():
        why = _reset_refusal(user, reset.email)
        held_back = _reset_email_held_back(request, whom)
        if held_back == "cooldown":  # another journey's e-mail went less than a minute ago: this code still works
            return False
        if not code.replace(emailed=why is None and held_back is None):
            transaction.set_rollback(True)  # resent meanwhile from another tab of this journey: the wait is given back
            return False
        if held_back is None:
            _count_reset_email(request, whom)
        if why is None and held_back is None:
            send_code(request, code)
        else:
            record(Event.OTP_SENT, request=request, subject=user, outcome=Outcome.FAILURE, purpose=RESET_PURPOSE,
                   email=code.email if user else reset.email[:254], reason=why or held_back)
            if held_back is None:  # the work of a send, for the timing: the notice went with the start
                send_decoy_email_code(code)
    return True


def check_reset_code(request: HttpRequest, reset: PasswordReset, entered: str) -> EmailOneTimePassword.Result:
    Result = EmailOneTimePassword.Result
    # Every journey has its code, e-mailed or not, so its wrong tries are counted on the code's row, atomically,
    # whatever the address: overlapping requests run out alike. A code nobody was sent is never right.
    code = EmailOneTimePassword.objects.filter(pk=reset.code).select_related("user").first()
    with transaction.atomic():
        result = code.verify(entered) if code is not None else Result.EXHAUSTED
        if result == Result.ACCEPTED:
            reset.step = "app"
        else:
            record(Event.OTP_FAILED, request=request, subject=code.user if code else None, outcome=Outcome.FAILURE,
                   purpose=RESET_PURPOSE, reason=result.value)
        if result == Result.ACCEPTED:
            reset.save(request)  # only then: a double submission's loser must not save the journey back a step
        elif result == Result.EXHAUSTED:
            request.session.pop(SESSION_RESET, None)
    return result


def _refuse_reset(request: HttpRequest, user: User | None, why: str) -> None:
    """A reset that got past the e-mailed code and can no longer go on (the profile was suspended, locked
    for wrong codes or lost its app since)."""
    record(Event.PASSWORD_RESET, request=request, subject=user, outcome=Outcome.FAILURE, method=KIND.key, reason=why)


def check_reset_app_code(request: HttpRequest, reset: PasswordReset, token: str) -> str | None:
    """The authenticator app's code proves the second factor; None when right, else the message."""
    user = reset.load_user()
    if user is None or (why := _reset_refusal(user, reset.email)):
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
    reset.password_was = _password_digest(user)
    reset.save(request)
    return None


def _password_digest(user: User) -> str:
    return salted_hmac("careid.password-reset", user.password).hexdigest()


def finish_password_reset(request: HttpRequest, reset: PasswordReset, password: str) -> User | None:
    """Set the new password: a lock that wrong passwords caused is lifted, every session of the
    person ends, and they are e-mailed. None when the reset can no longer go on."""
    request.session.pop(SESSION_RESET, None)
    with transaction.atomic():
        # Read and held until the new password is in: what the reset decides from (the lock it may lift) is
        # what it writes over, not a lock for wrong codes counted meanwhile, which only an RA lifts.
        user = User.objects.select_for_update().filter(pk=reset.user).first() if reset.user else None
        if user is None or (why := _reset_refusal(user, reset.email)):
            _refuse_reset(request, user, why if user else "no Care Identity")
            return None
        if not constant_time_compare(reset.password_was, _password_digest(user)):  # finished already, or changed
            _refuse_reset(request, user, "password changed since the app's code")
            return None
        user.set_password(password)
        user.save(update_fields=["password"])
        unlocked = user.is_locked
        if unlocked:
            user.unlock()
        else:  # wrong passwords' run and the wait it built up, as a lift of the lock clears them: the password is new
            User.objects.filter(pk=user.pk).update(password_failures=0, password_blocked_until=None)
        ended = signin_flows.end_sessions(user, reason="password reset")
        notify_person(record(Event.PASSWORD_RESET, request=request, subject=user, method=KIND.key,
                             unlocked=unlocked, sessions_ended=ended))
    signed_in_here = getattr(request, "user", None)
    if signed_in_here is not None and signed_in_here.is_authenticated and signed_in_here.pk == user.pk:
        # This browser was signed in as the person (asked to sign in again, they had forgotten the password): its
        # session ended with the others, so it starts anew here; saving the ended one found it gone (a 400 page).
        logout(request)
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
