"""The steps every registration from a link starts with, whatever the type: the person's e-mail
address, then the One Time Password sent to it ("Check your inbox"). The code is kept on the link.

Apart from authenticators/flows.py because these steps verify the address through accounts.flows,
which itself uses authenticators/flows.py to issue links (invitations, the RA's links).
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.http import HttpRequest

from accounts import flows as account_flows
from accounts.models import EmailOneTimePassword, EmailTaken
from accounts.notifications import send_email_code
from audit.models import Event, Outcome
from audit.record import record

from . import flows
from .journeys import EmailInUse, NoJourney, TooManyWrongEmails, UsedLink
from .models import RegistrationLink

STEP = "otp"


def start_registration(request: HttpRequest, link: RegistrationLink, email: str, *,
                       on_start: Callable[[RegistrationLink], None] | None = None) -> bool:
    """Use the link, bind the journey to this browser and send the One Time Password; `on_start`
    runs in the same transaction (a type's own journey state).

    False (nothing used) when `email` is not the person's Care Identity address; five of those
    and the link is dead.
    """
    if email.lower() != link.user.email.lower():
        with transaction.atomic():
            record(Event.LINK_REFUSED, request=request, subject=link.user, outcome=Outcome.FAILURE,
                   link_id=link.pk, reason="email does not match")
            stopped = flows.count_journey_failure(link)
        if stopped:
            raise TooManyWrongEmails()
        return False
    with transaction.atomic():
        code = EmailOneTimePassword.issue(user=link.user, email=link.user.email, purpose="registration")
        if not flows.begin_journey(request, link, step=STEP, email_code=code):
            raise UsedLink()
        if on_start is not None:
            on_start(link)
        send_code(request, code)
    return True


def send_code(request: HttpRequest, code: EmailOneTimePassword) -> None:
    record(Event.OTP_SENT, request=request, subject=code.user, email=code.email, purpose=code.purpose)
    send_email_code(code)


def resend_code(request: HttpRequest, link: RegistrationLink) -> bool:
    """A new code, to the Care Identity e-mail as it is now: an RA may have replaced the address it went to."""
    code = link.email_code
    with transaction.atomic():
        if code is None or not code.replace(email=link.user.email):
            return False
        send_code(request, code)
    return True


def check_email_code(request: HttpRequest, link: RegistrationLink, entered: str, *,
                     next_step: str) -> EmailOneTimePassword.Result:
    """The One Time Password proves the address and moves the journey to `next_step`; EmailInUse
    (nothing changed, the refusal audited) when the address belongs to another Care Identity, so
    the RA can sort it out and the person carry on from this step. A code sent to an address that is no longer
    the Care Identity e-mail (an RA replaced it since) proves nothing: it answers as expired, and "Send a new code"
    sends one to the new address."""
    code = link.email_code
    Result = EmailOneTimePassword.Result
    try:
        with flows.journey_step(request, link), transaction.atomic():
            if code is not None and code.email.lower() != link.user.email.lower():
                result, reason = Result.EXPIRED, "email changed"
            else:
                result = code.verify(entered) if code else Result.EXHAUSTED
                reason = result.value
            if result == Result.ACCEPTED:
                if not link.advance(STEP, next_step):
                    raise NoJourney()
                account_flows.verify_email_by_code(request, link.user, code.email)
            else:
                record(Event.OTP_FAILED, request=request, subject=link.user, outcome=Outcome.FAILURE,
                       reason=reason, failures=code.failures if code else None)
    except EmailTaken:
        account_flows.refuse_taken_email(request, user=link.user, email=code.email, via="one-time password",
                                         link_id=link.pk)
        raise EmailInUse() from None
    return result
