"""Sign-in throttling and lockout that hold across every web process.

An attempt is *begun* before the password or code is checked and *ended* after, so that:
- one account has one attempt in flight at a time (parallel guesses wait, they are not all checked);
- growing delays from the 5th consecutive failure, a lock at the 30th; success resets the count.
Known accounts keep this state on their row (accounts.User); addresses that belong to nobody keep
the same state in the shared cache with the same rules, so the answers never tell whether an
account exists. A per-IP counter stops one address walking through many accounts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User, signin_delay
from audit.record import client_ip

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


def _refusal(locked: bool, blocked_until: datetime | None) -> Refusal:
    if locked:
        return Refusal("locked", LOCKED)
    wait = (blocked_until - timezone.now()) if blocked_until else settings.CAREID_SIGNIN_ATTEMPT_HOLD
    return Refusal("throttled", wait_message(wait))


# --- addresses that belong to nobody: the same rules in the shared cache ---------------------


@dataclass
class _UnknownState:
    failures: int = 0
    last_failure_at: datetime | None = None
    blocked_until: datetime | None = None
    locked: bool = False


def _unknown_key(email: str) -> str:
    return "signin-unknown:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _window_seconds() -> int:
    return int(settings.CAREID_SIGNIN_FAILURE_WINDOW.total_seconds())


def _hold_seconds() -> int:
    return max(1, int(settings.CAREID_SIGNIN_ATTEMPT_HOLD.total_seconds()))


# --- per IP ---------------------------------------------------------------------------------


def _ip_key(request: HttpRequest) -> str:
    return f"signin-ip:{client_ip(request)}"


def count(key: str, window: timedelta) -> int:
    """Add one to a counter in the shared cache that lasts `window` from its first count."""
    seconds = int(window.total_seconds())
    if cache.add(key, 1, seconds):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, seconds)
        return 1


def within_limit(key: str, limit: int, window: timedelta) -> bool:
    """Count one use; False once more than `limit` uses fall in the window."""
    return count(key, window) <= limit


def _count_ip_failure(request: HttpRequest) -> None:
    count(_ip_key(request), settings.CAREID_IP_FAILURE_WINDOW)


# --- the attempt ------------------------------------------------------------------------------


def begin(request: HttpRequest, email: str, user: User | None) -> Refusal | None:
    """Hold the account for one attempt, or say why the attempt may not even be checked."""
    if cache.get(_ip_key(request), 0) >= settings.CAREID_IP_FAILURE_LIMIT:
        return Refusal("ip_throttled", wait_message(settings.CAREID_IP_FAILURE_WINDOW))
    if user is not None:
        if user.hold_signin_attempt():
            return None
        return _refusal(user.is_locked, user.signin_blocked_until)
    key = _unknown_key(email)
    if not cache.add(f"{key}:held", 1, _hold_seconds()):
        return _refusal(False, None)
    state: _UnknownState = cache.get(key) or _UnknownState()
    if state.locked or (state.blocked_until and state.blocked_until > timezone.now()):
        cache.delete(f"{key}:held")
        return _refusal(state.locked, state.blocked_until)
    return None


def fail(request: HttpRequest, email: str, user: User | None) -> bool:
    """End the attempt as a failure; True when this failure locked the account."""
    _count_ip_failure(request)
    if user is not None:
        return user.end_signin_attempt(failed=True)
    key = _unknown_key(email)
    state: _UnknownState = cache.get(key) or _UnknownState()
    now = timezone.now()
    if state.last_failure_at and now - state.last_failure_at > settings.CAREID_SIGNIN_FAILURE_WINDOW:
        state = _UnknownState()
    state.failures += 1
    state.last_failure_at, state.blocked_until = now, now + signin_delay(state.failures)
    state.locked = state.failures >= settings.CAREID_SIGNIN_LOCK_AFTER
    cache.set(key, state, _window_seconds())
    cache.delete(f"{key}:held")
    return state.locked


def release(user: User, *, succeeded: bool) -> None:
    """End the attempt without a failure: a password that was right, or a whole sign-in (resets)."""
    user.end_signin_attempt(failed=False, reset=succeeded)
