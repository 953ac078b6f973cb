"""Use cases shared by every authenticator type: registration links."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.models import Event
from audit.record import record

from . import registry
from .models import RegistrationLink


def issue_registration_link(
    *,
    user,
    kind: str,
    purpose: str,
    actor=None,
    request: HttpRequest | None = None,
    confirmed: bool = False,
) -> RegistrationLink:
    """A single-use link for `user` to register `kind`; e-mailed unless issued for immediate use."""
    from .tasks import send_registration_link_task

    if registry.get_enabled(kind) is None:
        raise LookupError(f"No enabled authenticator type {kind!r}")
    now = timezone.now()
    with transaction.atomic():
        link = RegistrationLink.objects.create(
            user=user,
            kind=kind,
            purpose=purpose,
            issued_by=actor,
            created_at=now,
            expires_at=now + RegistrationLink.ttl_for(purpose),
            confirmed_at=now if confirmed else None,
        )
        record(Event.LINK_ISSUED, request=request, actor=actor, subject=user, kind=kind, purpose=purpose,
               link_id=link.pk, expires_at=link.expires_at.isoformat())
        if purpose != RegistrationLink.Purpose.PRESENCE:
            transaction.on_commit(lambda: send_registration_link_task.delay(link.pk))
    return link
