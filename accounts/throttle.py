"""Sign-in throttling and lockout that hold across every web process.

Known accounts count on their row (accounts.User); addresses that belong to nobody count
in the shared cache with the same rules, so a locked or throttled answer tells an attacker
nothing about whether an account exists. A per-IP counter stops one address walking
through many accounts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from math import ceil

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

from audit.record import client_ip

from .models import User, throttle_delay_remaining

BAD_CREDENTIALS = "Enter a correct email address and password"
LOCKED = (
    "Your Care Identity is locked after too many failed sign-in attempts. "
    "Contact your registration authority to unlock it."
)


@dataclass(frozen=True)
class Refusal:
    reason: str  # "locked" | "throttled" | "ip_throttled"
    message: str


def wait_message(wait: timedelta) -> str:
    seconds = max(1, ceil(wait.total_seconds()))
    unit = "second" if seconds == 1 else "seconds"
    return f"Too many failed attempts. Wait {seconds} {unit} and try again."


def _unknown_key(email: str) -> str:
    return "signin-unknown:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _ip_key(request: HttpRequest) -> str:
    return f"signin-ip:{client_ip(request)}"


def refusal(request: HttpRequest, email: str, user: User | None) -> Refusal | None:
    """Why this attempt may not even be checked, or None."""
    if cache.get(_ip_key(request), 0) >= settings.CAREID_IP_FAILURE_LIMIT:
        return Refusal("ip_throttled", wait_message(settings.CAREID_IP_FAILURE_WINDOW))
    if user is not None:
        locked, wait = user.is_locked, user.signin_delay_remaining()
    else:
        failures, last_at = cache.get(_unknown_key(email), (0, None))
        locked = failures >= settings.CAREID_SIGNIN_LOCK_AFTER
        wait = throttle_delay_remaining(failures, last_at)
    if locked:
        return Refusal("locked", LOCKED)
    if wait:
        return Refusal("throttled", wait_message(wait))
    return None


def count_failure(request: HttpRequest, email: str, user: User | None) -> bool:
    """Count one failed attempt; True when this failure locked the account."""
    ip_key = _ip_key(request)
    window = int(settings.CAREID_IP_FAILURE_WINDOW.total_seconds())
    if not cache.add(ip_key, 1, window):
        try:
            cache.incr(ip_key)
        except ValueError:  # expired between add and incr
            cache.add(ip_key, 1, window)
    if user is not None:
        was_locked = user.is_locked
        user.record_signin_failure()
        return user.is_locked and not was_locked
    key = _unknown_key(email)
    failures, _ = cache.get(key, (0, None))
    cache.set(key, (failures + 1, timezone.now()), 24 * 3600)
    return False
