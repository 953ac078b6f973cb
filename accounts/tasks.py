"""Thin tasks: take ids, fetch, send. Enqueued with transaction.on_commit by the flows."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from celery import shared_task

from audit.models import AuditEvent

from . import mail
from .models import EmailOneTimePassword, User

_RETRY = {"autoretry_for": (OSError,), "retry_backoff": True, "max_retries": 5}


@shared_task(**_RETRY)
def send_email_code_task(code_id: int) -> None:
    code = EmailOneTimePassword.objects.select_related("user").get(pk=code_id)
    mail.send("email_code", code.email, {"user": code.user, "code": code.code, "minutes": code_ttl_minutes()})


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
    """Someone tried to add an address that is verified on another Care Identity: tell that address."""
    event = AuditEvent.objects.select_related("subject").get(pk=audit_event_id)
    mail.send("address_in_use", event.details["email"], {"event": event})


@shared_task(**_RETRY)
def send_email_confirmation_task(email_address_id: int) -> None:
    from allauth.account.models import EmailConfirmationHMAC

    address = EmailAddress.objects.select_related("user").get(pk=email_address_id)
    if not address.verified:
        EmailConfirmationHMAC(address).send(request=None, signup=False)


@shared_task(**_RETRY)
def send_invitations_task(user_ids: list[int]) -> None:
    """Invite each of these Care Identities that was never invited (bulk onboarding queues them in
    chunks): a chunk delivered twice, or alongside a re-run, invites nobody twice."""
    from django.db import transaction

    from .flows import send_invitation

    for user_id in user_ids:
        with transaction.atomic():
            user = (User.objects.select_for_update()
                    .filter(pk=user_id, invited_at__isnull=True, status=User.Status.ACTIVE).first())
            if user is not None:
                send_invitation(user=user)


def code_ttl_minutes() -> int:
    from django.conf import settings

    return int(settings.CAREID_EMAIL_CODE_TTL.total_seconds() // 60)
