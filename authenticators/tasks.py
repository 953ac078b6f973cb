from __future__ import annotations

from celery import shared_task

from accounts import mail

from . import registry
from .models import RegistrationLink


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_registration_link_task(link_id: int) -> None:
    link = RegistrationLink.objects.select_related("user").get(pk=link_id)
    if link.is_used:
        return
    template = "invitation" if link.purpose == RegistrationLink.Purpose.INVITATION else "registration_link"
    mail.send(template, link.user.email, {"user": link.user, "link": link, "kind": registry.get(link.kind)})


@shared_task
def forget_abandoned_registrations_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): pending secrets of journeys nobody finished."""
    from .totp.models import AppRegistration

    return AppRegistration.objects.forget_abandoned()
