"""Sign-in throttling and lockout that hold across every web process.

An attempt is *begun* before the password or code is checked and *ended* after, so that:
- one account has one attempt in flight at a time (parallel guesses wait, they are not all checked);
- growing delays from the 5th consecutive failure of a factor; wrong passwords lock at the 100th (the
  person lifts it by resetting their password), wrong codes at the 30th (a registration authority
  unlocks); a whole sign-in resets both counts.
Care Identities keep this state on their row (accounts.User); addresses that belong to nobody keep
the same state on an UnknownAddress row with the same rules, so the answers never tell whether an
account exists, whatever happens to the cache. A per-IP counter in the shared cache, taken before
each check, stops one address walking through many accounts.

The counters live in the "throttle" cache (Redis in production), which fails closed: when it cannot
be reached, counting raises StoreUnavailable and the step is refused with the 503 page (signin.flows
audits it), never let through uncounted.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from math import ceil

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from django.utils import timezone
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from accounts.models import User
from audit.record import client_ip
from careid.errors import ServiceUnavailable

from .models import Factor, SigninThrottle, UnknownAddress

BAD_CREDENTIALS = "Enter a correct email address and password"
LOCKED = (
    "Your Care Identity is locked after too many failed sign-in attempts. "
    "Reset your password to unlock it, or contact your registration authority."
)
LOCKED_CODES = (
    "Your Care Identity is locked after too many wrong security codes. "
    "Contact your registration authority to unlock it."
)
STORE_UNAVAILABLE = "throttle store unavailable"

logger = logging.getLogger(__name__)


class StoreUnavailable(ServiceUnavailable):
    """The cache holding the counters cannot be reached (down, or not answering within
    CAREID_REDIS_TIMEOUT): the step that wanted to count is refused."""


@dataclass(frozen=True)
class Refusal:
    reason: str  # "locked" | "throttled" | "ip_throttled"
    message: str


def wait_message(wait: timedelta) -> str:
    seconds = max(1, ceil(wait.total_seconds()))
    unit = "second" if seconds == 1 else "seconds"
    return f"Too many failed attempts. Wait {seconds} {unit} and try again."


def lock_message(subject: SigninThrottle, factor: Factor = Factor.CODE) -> str:
    """What a locked account tells someone trying `factor`: how the lock can be lifted.

    At the password step nothing is proven yet, and an unknown address can only ever be locked by
    wrong passwords, so every lock answers there as one for passwords (LOCKED): saying more would
    tell a real account from an unknown address, and a stranger that someone else had the password.
    Past a proven factor (a right password, a good key, the e-mailed code of a reset) the real lock."""
    if factor == Factor.PASSWORD:
        return LOCKED
    return LOCKED if subject.lock_is_lifted_by_password_reset else LOCKED_CODES


def _refusal(subject: SigninThrottle, factor: Factor) -> Refusal:
    if subject.lock_stops(factor):
        return Refusal("locked", lock_message(subject, factor))
    blocked_until = subject.blocked_until(factor)
    wait = (blocked_until - timezone.now()) if blocked_until else settings.CAREID_SIGNIN_ATTEMPT_HOLD
    return Refusal("throttled", wait_message(wait))


# --- counters in the shared cache ------------------------------------------------------------


@contextmanager
def _reaching_store() -> Iterator[None]:
    try:
        yield
    except (RedisError, ConnectionInterrupted, OSError) as error:
        raise StoreUnavailable(STORE_UNAVAILABLE) from error


def count(key: str, window: timedelta, by: int = 1) -> int:
    """Add to a counter in the shared cache that lasts `window` from its first count (atomic).
    Raises StoreUnavailable when the cache cannot be reached."""
    seconds = int(window.total_seconds())
    store = caches["throttle"]
    with _reaching_store():
        if store.add(key, by, seconds):
            return by
        try:
            return store.incr(key, by)
        except ValueError:  # expired between add and incr
            store.add(key, by, seconds)
            return by


def peek(key: str) -> int:
    """A counter's value (0 when it has none), without counting. Raises StoreUnavailable when the cache
    cannot be reached."""
    with _reaching_store():
        return int(caches["throttle"].get(key, 0))


def uncount(key: str) -> None:
    """Give back one count (never below zero, never recreating an expired counter). One that cannot be
    given back, the cache being unreachable, stays counted: stricter, never looser."""
    store = caches["throttle"]
    try:
        with _reaching_store():
            if store.decr(key) < 0:
                store.incr(key)
    except ValueError:
        pass
    except StoreUnavailable:
        logger.warning("Could not give back a count of %s: the throttle store is unavailable", key.split(":")[0])


def within_limit(key: str, limit: int, window: timedelta) -> bool:
    """Count one use; False once more than `limit` uses fall in the window."""
    return count(key, window) <= limit


def client_key(request: HttpRequest) -> str:
    """The client as the per-IP limits count it: its IPv4 address, or its IPv6 /64 (a subscriber's usual
    block, from which its holder can take a new address for every request)."""
    ip = client_ip(request) or ""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(getattr(address, "ipv4_mapped", None) or address)


def _ip_key(request: HttpRequest) -> str:
    return f"signin-ip:{client_key(request)}"


# --- the attempt ------------------------------------------------------------------------------


def _subject(email: str, user: User | None) -> SigninThrottle:
    return user if user is not None else UnknownAddress.objects.for_email(email)


def begin_for_client(request: HttpRequest) -> Refusal | None:
    """Count the attempt against the client's address only, or say why it may not be checked (then
    nothing stays counted). Alone, this is how a key's answer is throttled: a signature cannot be
    guessed, so counting refusals against the account would only let a stranger lock its holder out."""
    ip_key = _ip_key(request)
    if count(ip_key, settings.CAREID_IP_FAILURE_WINDOW) > settings.CAREID_IP_FAILURE_LIMIT:
        uncount(ip_key)
        return Refusal("ip_throttled", wait_message(settings.CAREID_IP_FAILURE_WINDOW))
    return None


def begin(request: HttpRequest, email: str, user: User | None, factor: Factor = Factor.PASSWORD) -> Refusal | None:
    """Count the attempt against the client's address and hold the account for it, or say why the
    attempt may not even be checked (then nothing stays counted)."""
    refused = begin_for_client(request)
    if refused is not None:
        return refused
    subject = _subject(email, user)
    if subject.hold_signin_attempt(factor):
        return None
    uncount(_ip_key(request))
    return _refusal(subject, factor)


def fail(request: HttpRequest, email: str, user: User | None, factor: Factor = Factor.PASSWORD) -> str | None:
    """End the attempt as a failure (it stays counted against the address); the lock message when it locked."""
    subject = _subject(email, user)
    return lock_message(subject, factor) if subject.end_signin_attempt(factor, failed=True) else None


def release_client(request: HttpRequest) -> None:
    """Give back the client's count of an attempt that was right."""
    uncount(_ip_key(request))


def release(request: HttpRequest, user: User, factor: Factor, *, succeeded: bool = False) -> None:
    """End the attempt without a failure: a right password or code; `succeeded` for a whole sign-in,
    which resets both counts."""
    release_client(request)
    user.end_signin_attempt(factor, failed=False, succeeded=succeeded)
