from __future__ import annotations

from celery import shared_task

from . import registry


@shared_task
def forget_abandoned_registrations_task() -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): every type's own clean-up of registrations nobody finished."""
    return registry.run_cleanups()
