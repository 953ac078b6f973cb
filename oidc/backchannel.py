"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): a signed logout token POSTed to a
service, from the BackchannelLogout outbox row that owes it; delivered like the e-mails
(accounts/outbox.py): claimed by one worker, tried again with growing waits, swept every minute."""

from __future__ import annotations

import logging
import time
import uuid

import requests
from allauth.idp.oidc.adapter import get_adapter
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import outbox
from audit.models import Event, Outcome
from audit.record import record

from . import signing
from .models import BackchannelLogout

logger = logging.getLogger(__name__)
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME = 120


def logout_token(logout: BackchannelLogout) -> str:
    """A signed logout token (OpenID Connect Back-Channel Logout 1.0, section 2.4)."""
    adapter = get_adapter()
    now = int(time.time())
    claims = {
        "iss": adapter.get_issuer(), "aud": logout.client_id, "iat": now, "exp": now + LOGOUT_TOKEN_LIFETIME,
        "jti": uuid.uuid4().hex, "sub": logout.user.uid, "sid": logout.sid, "events": {BACKCHANNEL_EVENT: {}},
    }
    return signing.sign(claims, typ="logout+jwt")


def deliver_backchannel_logout(logout_id: int) -> BackchannelLogout.State | None:
    """POST the logout token to the service if it is due and nobody else is; returns the new state (None
    when it was not this call's to send, or its failure came after another worker had taken it). A failure of any kind (an error answer, no answer, the task cut
    off at its time limit) counts as an attempt, waits (accounts.outbox.backoff, the e-mails' rule) and is
    tried again by the sweep, until CAREID_BACKCHANNEL_GIVE_UP_AFTER."""
    claim = timezone.now() + settings.CAREID_BACKCHANNEL_CLAIM
    claimed = BackchannelLogout.objects.due().filter(pk=logout_id).update(claimed_until=claim)
    if not claimed:
        return None
    logout = BackchannelLogout.objects.select_related("client", "user").get(pk=logout_id)
    logout.claimed_until = claim  # what a failure's write is conditional on (_claimed)
    attempts = logout.attempts + 1
    try:
        response = requests.post(logout.client.backchannel_logout_uri, data={"logout_token": logout_token(logout)},
                                 timeout=settings.CAREID_BACKCHANNEL_TIMEOUT, allow_redirects=False)
        if response.status_code not in (200, 204):
            raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
    except requests.RequestException as error:
        return _failed_attempt(logout, attempts, f"{type(error).__name__}: {error}")
    except SoftTimeLimitExceeded:  # the service kept the POST going past the task's soft limit
        return _failed_attempt(logout, attempts, "SoftTimeLimitExceeded: no whole answer within the task's time limit")
    except Exception as error:  # a token that could not be signed, ...: an attempt all the same, never left claimed
        logger.exception("Could not deliver back-channel logout %s", logout.pk)
        return _failed_attempt(logout, attempts, f"{type(error).__name__}: {error}")
    return outbox.record_delivery(lambda: _delivered(logout, attempts), what=f"back-channel logout {logout.pk}",
                                  within=10)


def _delivered(logout: BackchannelLogout, attempts: int) -> BackchannelLogout.State:
    with transaction.atomic():
        # Not when a try whose answer the connection lost had committed it (record_delivery), audited already.
        if BackchannelLogout.objects.filter(pk=logout.pk, state=BackchannelLogout.State.QUEUED).update(
                state=BackchannelLogout.State.DELIVERED, delivered_at=timezone.now(), attempts=attempts,
                claimed_until=None, last_error=""):
            record(Event.OIDC_BACKCHANNEL_LOGOUT, subject=logout.user, client=logout.client_id,
                   service=logout.client.name, reason=logout.reason, attempts=attempts)
    return BackchannelLogout.State.DELIVERED


def _claimed(logout: BackchannelLogout):
    """The row, while the claim `logout` was read with still holds it. A POST can outlive its claim where the task's
    time limit is not enforced (a solo or threads pool): another worker may then take the logout and deliver it, and
    a failure written by the row's id alone replaced that (given up and audited as failed, or due again)."""
    return BackchannelLogout.objects.filter(pk=logout.pk, state=BackchannelLogout.State.QUEUED,
                                            claimed_until=logout.claimed_until)


def _claim_lost(logout: BackchannelLogout) -> None:
    logger.warning("Back-channel logout %s: a failed attempt not recorded, as the claim it follows ran out "
                   "(CAREID_BACKCHANNEL_CLAIM) and another worker has taken the logout since", logout.pk)


def _failed_attempt(logout: BackchannelLogout, attempts: int, error: str) -> BackchannelLogout.State | None:
    now = timezone.now()
    if now - logout.created_at < settings.CAREID_BACKCHANNEL_GIVE_UP_AFTER:
        if not _claimed(logout).update(attempts=attempts, claimed_until=None, last_error=error[:300],
                                       next_attempt_at=now + outbox.backoff(attempts)):
            return _claim_lost(logout)
        return BackchannelLogout.State.QUEUED
    with transaction.atomic():
        if not _claimed(logout).update(state=BackchannelLogout.State.FAILED, attempts=attempts, claimed_until=None,
                                       last_error=error[:300]):
            return _claim_lost(logout)
        record(Event.OIDC_BACKCHANNEL_LOGOUT, subject=logout.user, outcome=Outcome.FAILURE, client=logout.client_id,
               service=logout.client.name, reason=logout.reason, error=error[:300], attempts=attempts)
    return BackchannelLogout.State.FAILED


def publish(logout_id: int) -> None:
    """Hand one owed logout to Celery after the commit; with the broker down the sweep does it later."""
    outbox.publish(BackchannelLogout, logout_id, send_backchannel_logout_task, "back-channel logout")


def sweep() -> int:
    """Hand Celery the logout tokens due again, or left behind by a lost task or worker; returns how many."""
    return outbox.hand_over(BackchannelLogout.objects.due(), send_backchannel_logout_task,
                            lost_after=settings.CAREID_BACKCHANNEL_CLAIM)


@shared_task(acks_late=True, ignore_result=True, **settings.CAREID_BACKCHANNEL_TASK_LIMITS)
def send_backchannel_logout_task(logout_id: int) -> None:
    deliver_backchannel_logout(logout_id)
