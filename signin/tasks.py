from __future__ import annotations

from celery import shared_task

from .models import UnknownAddress


@shared_task
def forget_stale_unknown_addresses_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): throttle rows of unknown addresses with no failure in the window."""
    return UnknownAddress.objects.forget_stale()
