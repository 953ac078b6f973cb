from __future__ import annotations

import requests
from celery import shared_task
from django.conf import settings

from . import flows
from .models import UsedAssertion


@shared_task(bind=True, max_retries=None, acks_late=True)
def send_backchannel_logout_task(self, logout_id: int) -> None:
    """Retries with backoff (1 min doubling, at most an hour apart) until CAREID_BACKCHANNEL_GIVE_UP_AFTER."""
    try:
        flows.deliver_backchannel_logout(logout_id)
    except requests.RequestException as error:
        if self.request.is_eager or self.request.retries >= settings.CAREID_BACKCHANNEL_MAX_RETRIES:
            flows.give_up_backchannel_logout(logout_id, str(error))
            return
        raise self.retry(exc=error, countdown=min(60 * 2**self.request.retries, 3600)) from error


@shared_task
def sweep_timed_out_sessions_task() -> int:
    """Every few minutes (CELERY_BEAT_SCHEDULE): back-channel logouts for sessions that timed out."""
    return flows.sweep_timed_out_sessions()


@shared_task
def forget_used_assertions_task() -> int:
    """Hourly: client assertion jtis past their expiry can never be replayed."""
    return UsedAssertion.objects.forget_expired()
