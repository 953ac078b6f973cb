"""Periodic tasks of the provider (they run flows; no flow imports this module)."""

from __future__ import annotations

from celery import shared_task

from . import (
    backchannel,  # noqa: F401  (registers the delivery task with the worker)
    flows,
)
from .models import RotatedRefreshToken, UsedAssertion


@shared_task
def sweep_timed_out_sessions_task() -> int:
    """Every five minutes (CELERY_BEAT_SCHEDULE): back-channel logouts for sessions that timed out."""
    return flows.sweep_timed_out_sessions()


@shared_task
def forget_used_assertions_task() -> int:
    """Hourly: client assertion jtis past their expiry can never be replayed."""
    return UsedAssertion.objects.forget_expired()


@shared_task
def sweep_backchannel_logouts_task() -> int:
    """Every minute (CELERY_BEAT_SCHEDULE): logout tokens due again, or left behind by a lost task or worker."""
    return backchannel.sweep()


@shared_task
def forget_rotated_refresh_tokens_task() -> int:
    """Hourly: a refresh token rotated longer ago than the refresh token lifetime left no live family."""
    return RotatedRefreshToken.objects.forget_expired()
