"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): a signed logout token POSTed to a
service, from the BackchannelLogout outbox row that owes it, retried by Celery until delivered."""

from __future__ import annotations

import time
import uuid

import requests
from allauth.idp.oidc.adapter import get_adapter
from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from jwt import encode as jwt_encode

from audit.models import Event, Outcome
from audit.record import record

from . import signing
from .models import BackchannelLogout

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
    jwk, private_key = signing.load_jwk_from_pem(adapter.get_signing_key().pem)
    return jwt_encode(claims, private_key, algorithm="RS256", headers={"kid": jwk["kid"], "typ": "logout+jwt"})


def deliver_backchannel_logout(logout_id: int) -> bool:
    """POST the logout token to the service; True once delivered (or nothing is owed any more).
    Raises OSError (requests' errors are OSErrors) for the task to retry."""
    logout = BackchannelLogout.objects.select_related("client", "user").filter(pk=logout_id).first()
    if logout is None or logout.state != BackchannelLogout.State.QUEUED:
        return True
    uri = logout.client.backchannel_logout_uri
    BackchannelLogout.objects.filter(pk=logout.pk).update(attempts=logout.attempts + 1)
    try:
        response = requests.post(uri, data={"logout_token": logout_token(logout)}, timeout=settings.CAREID_BACKCHANNEL_TIMEOUT,
                                 allow_redirects=False)
        if response.status_code not in (200, 204):
            raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
    except requests.RequestException as error:
        BackchannelLogout.objects.filter(pk=logout.pk).update(last_error=str(error)[:300])
        raise
    with transaction.atomic():
        BackchannelLogout.objects.filter(pk=logout.pk).update(state=BackchannelLogout.State.DELIVERED,
                                                              delivered_at=timezone.now(), last_error="")
        record(Event.OIDC_BACKCHANNEL_LOGOUT, subject=logout.user, client=logout.client_id,
               service=logout.client.name, reason=logout.reason, attempts=logout.attempts + 1)
    return True


def give_up_backchannel_logout(logout_id: int, error: str) -> None:
    with transaction.atomic():
        logout = BackchannelLogout.objects.select_related("client", "user").get(pk=logout_id)
        BackchannelLogout.objects.filter(pk=logout.pk).update(state=BackchannelLogout.State.FAILED, last_error=error[:300])
        record(Event.OIDC_BACKCHANNEL_LOGOUT, subject=logout.user, outcome=Outcome.FAILURE, client=logout.client_id,
               service=logout.client.name, reason=logout.reason, error=error[:300], attempts=logout.attempts)


def retry_countdown(retries: int) -> int | None:
    """Seconds until the next try after `retries` failed ones: 1 minute doubling to an hour apart, for
    more than 24 hours in all; None once CAREID_BACKCHANNEL_MAX_RETRIES are spent."""
    if retries >= settings.CAREID_BACKCHANNEL_MAX_RETRIES:
        return None
    return min(60 * 2**retries, 3600)


@shared_task(bind=True, max_retries=None, acks_late=True)
def send_backchannel_logout_task(self, logout_id: int) -> None:
    try:
        deliver_backchannel_logout(logout_id)
    except requests.RequestException as error:
        countdown = None if self.request.is_eager else retry_countdown(self.request.retries)
        if countdown is None:  # in-process Celery (make run) tries once
            give_up_backchannel_logout(logout_id, str(error))
            return
        raise self.retry(exc=error, countdown=countdown) from error
