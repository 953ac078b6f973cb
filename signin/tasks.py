from __future__ import annotations

from celery import shared_task

from . import flows
from .models import UnknownAddress


@shared_task
def forget_stale_unknown_addresses_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): throttle rows of unknown addresses with no failure in the window."""
    return UnknownAddress.objects.forget_stale()


@shared_task
def forget_expired_sessions_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): sessions past their expiry, and their rows on people's lists of sessions."""
    return flows.forget_expired_sessions()
