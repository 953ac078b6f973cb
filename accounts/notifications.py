"""Every e-mail careid sends a person about their Care Identity, in one place.

Flows call the functions at the top inside their transaction: each owes an e-mail in the outbox
(accounts/outbox.py), written with the change and sent once it commits. The renderers below build the
message when it is sent, from ids: a one-time password is derived from its nonce then, so the
database never holds it. Nothing here calls a flow, so every flow can use this module.
"""

from __future__ import annotations

from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent

from . import outbox
from .models import EmailOneTimePassword, OutgoingEmail


def notify_person(event: AuditEvent) -> AuditEvent:
    """E-mail the person what the event changed about their access (templates/emails/notification_<event>)."""
    outbox.queue("notification", object_id=event.pk, to=event.subject.email, user=event.subject)
    return event


def tell_old_address(event: AuditEvent, old_email: str) -> None:
    """The Care Identity e-mail changed: the address it was is told too."""
    outbox.queue("email_changed_old_address", object_id=event.pk, to=old_email, user=event.subject)


def tell_address_in_use(event: AuditEvent) -> None:
    """Someone tried to add an address that belongs to another Care Identity: that address is told."""
    outbox.queue("address_in_use", object_id=event.pk, to=event.details["email"])


def send_email_code(code: EmailOneTimePassword) -> None:
    outbox.queue("email_code", object_id=code.pk, to=code.email, user=code.user)


def send_decoy_email_code(code: EmailOneTimePassword) -> None:
    """For a password reset code that nobody is sent: the work of send_email_code, with an outbox row that is
    never sent (outbox.queue_decoy)."""
    outbox.queue_decoy("email_code", object_id=code.pk)


def send_email_confirmation(address: EmailAddress) -> None:
    outbox.queue("email_confirmation", object_id=address.pk, to=address.email, user=address.user)


# --- what each e-mail says, rendered when it is sent ---------------------------------------------


@outbox.kind("email_code", "One Time Password")
def _email_code(email: OutgoingEmail) -> outbox.Message | None:
    code = EmailOneTimePassword.objects.select_related("user").filter(pk=email.object_id).first()
    if code is None or not code.emailed:
        return None  # gone, or replaced since by a code that nobody is sent (a password reset held back)
    if code.used_at is not None or code.is_exhausted or code.expires_at <= timezone.now():
        return None  # used, dead or expired (the outbox tries for a day): a late copy would only confuse
    return outbox.Message("email_code", {"user": code.user, "code": code.code, "minutes": code_ttl_minutes(),
                                         "purpose": code.purpose})


@outbox.kind("notification", "Notification of a change")
def _notification(email: OutgoingEmail) -> outbox.Message:
    event = AuditEvent.objects.select_related("subject").get(pk=email.object_id)
    return outbox.Message("notification_" + event.event.replace(".", "_"), {"user": event.subject, "event": event})


@outbox.kind("email_changed_old_address", "E-mail changed (to the old address)")
def _email_changed_old_address(email: OutgoingEmail) -> outbox.Message:
    event = AuditEvent.objects.select_related("subject").get(pk=email.object_id)
    return outbox.Message("email_changed_old_address", {"user": event.subject, "event": event})


@outbox.kind("address_in_use", "Address already in use")
def _address_in_use(email: OutgoingEmail) -> outbox.Message:
    return outbox.Message("address_in_use", {"event": AuditEvent.objects.get(pk=email.object_id)})


@outbox.kind("email_confirmation", "Verify an added address")
def _email_confirmation(email: OutgoingEmail) -> outbox.Message | None:
    address = EmailAddress.objects.select_related("user").filter(pk=email.object_id).first()
    if address is None or address.verified:
        return None
    confirmation = EmailConfirmationHMAC(address)
    return outbox.Message("email_confirmation", {
        "user": address.user, "email": address.email,
        "activate_url": get_account_adapter().get_email_confirmation_url(None, confirmation),
        "lifetime": verification_link_lifetime(),
    })


def verification_link_lifetime() -> str:
    """"1 day", "2 days": how long a verification link lasts (allauth's ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS,
    counted from when it is sent), as its e-mail and the page that sends a new one say."""
    days = settings.ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS
    return f"{days} day{'' if days == 1 else 's'}"


def code_ttl_minutes() -> int:
    return int(settings.CAREID_EMAIL_CODE_TTL.total_seconds() // 60)
