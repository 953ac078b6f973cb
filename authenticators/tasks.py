from __future__ import annotations

from celery import shared_task


@shared_task
def forget_abandoned_registrations_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): pending secrets of journeys nobody finished."""
    from .totp.models import AppRegistration

    return AppRegistration.objects.forget_abandoned()
