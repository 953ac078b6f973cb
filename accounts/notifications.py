"""Every e-mail careid sends a person about their Care Identity, in one place.

Flows call the functions at the top inside their transaction; the e-mail is queued once that
transaction commits. The tasks below are thin: they take ids, fetch, render and send
(accounts.mail). Nothing here calls a flow, so every flow can use this module.
"""

from __future__ import annotations

from allauth.account.models import EmailAddress
from celery import shared_task
from django.conf import settings
from django.db import transaction

from audit.models import AuditEvent

from . import mail
from .models import EmailOneTimePassword

_RETRY = {"autoretry_for": (OSError,), "retry_backoff": True, "max_retries": 5}


def notify_person(event: AuditEvent) -> AuditEvent:
    """E-mail the person what the event changed about their access, once its transaction commits
    (templates/emails/notification_<event>)."""
    transaction.on_commit(lambda: send_notification_task.delay(event.pk), robust=True)
    return event


def tell_old_address(event: AuditEvent, old_email: str) -> None:
    """The Care Identity e-mail changed: the address it was is told too."""
    transaction.on_commit(lambda: send_email_changed_to_old_address_task.delay(event.pk, old_email), robust=True)


def tell_address_in_use(event: AuditEvent) -> None:
    """Someone tried to add an address that belongs to another Care Identity: that address is told."""
    transaction.on_commit(lambda: send_address_in_use_task.delay(event.pk), robust=True)


def send_email_code(code: EmailOneTimePassword) -> None:
    transaction.on_commit(lambda: send_email_code_task.delay(code.pk), robust=True)


def send_email_confirmation(address: EmailAddress) -> None:
    transaction.on_commit(lambda: send_email_confirmation_task.delay(address.pk), robust=True)


# --- tasks ------------------------------------------------------------------------------------


@shared_task(**_RETRY)
def send_email_code_task(code_id: int) -> None:
    code = EmailOneTimePassword.objects.select_related("user").get(pk=code_id)
    mail.send("email_code", code.email, {"user": code.user, "code": code.code, "minutes": code_ttl_minutes(),
                                         "purpose": code.purpose})


@shared_task(**_RETRY)
def send_notification_task(audit_event_id: int) -> None:
    """An e-mail to the person about a change to their access, described by its audit event."""
    event = AuditEvent.objects.select_related("subject").get(pk=audit_event_id)
    template = "notification_" + event.event.replace(".", "_")
    mail.send(template, event.subject.email, {"user": event.subject, "event": event})


@shared_task(**_RETRY)
def send_email_changed_to_old_address_task(audit_event_id: int, old_email: str) -> None:
    event = AuditEvent.objects.select_related("subject").get(pk=audit_event_id)
    mail.send("email_changed_old_address", old_email, {"user": event.subject, "event": event})


@shared_task(**_RETRY)
def send_address_in_use_task(audit_event_id: int) -> None:
    event = AuditEvent.objects.select_related("subject").get(pk=audit_event_id)
    mail.send("address_in_use", event.details["email"], {"event": event})


@shared_task(**_RETRY)
def send_email_confirmation_task(email_address_id: int) -> None:
    from allauth.account.models import EmailConfirmationHMAC

    address = EmailAddress.objects.select_related("user").get(pk=email_address_id)
    if not address.verified:
        EmailConfirmationHMAC(address).send(request=None, signup=False)


def code_ttl_minutes() -> int:
    return int(settings.CAREID_EMAIL_CODE_TTL.total_seconds() // 60)
