"""Tasks that run a use case (they call flows; flows never import this module).

The e-mail task that flows queue lives in accounts.outbox.
"""

from __future__ import annotations

from celery import shared_task
from django.core.exceptions import ValidationError
from django.db import transaction

from . import outbox
from .flows import send_invitation
from .models import EmailOneTimePassword, User


@shared_task
def send_invitations_task(user_ids: list[int]) -> None:
    """Invite each of these Care Identities that was never invited (bulk onboarding queues them in
    chunks): a chunk delivered twice, or alongside a re-run, invites nobody twice. One whose address's
    domain is not on the allow list (any more) is not invited; the refusal is audited."""
    for user_id in user_ids:
        with transaction.atomic():
            user = (User.objects.select_for_update()
                    .filter(pk=user_id, invited_at__isnull=True, status=User.Status.ACTIVE).first())
            if user is not None:
                try:
                    send_invitation(user=user)
                except ValidationError:
                    continue  # not on the allow list: the refusal, audited, commits


@shared_task
def sweep_outbox_task() -> int:
    """Every minute (CELERY_BEAT_SCHEDULE): e-mails due again, or left behind by a lost task or worker."""
    return outbox.sweep()


@shared_task
def forget_expired_email_codes_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): One Time Password rows that nothing reads any more (one per reset started, by
    anyone, for any address)."""
    return EmailOneTimePassword.objects.forget_expired()
