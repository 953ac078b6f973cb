from __future__ import annotations

from celery import shared_task

from . import chain


@shared_task
def seal_audit_trail_task() -> int:
    """Every ten seconds (CELERY_BEAT_SCHEDULE): chain the events written since."""
    return chain.seal()
