"""`manage.py check --deploy`: the throttle's counters must be shared by every process (SECURITY.md)."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

SHARED = ("redis",)  # the backends whose counters every web process sees


@checks.register(checks.Tags.security, deploy=True)
def throttle_shared(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    backend = settings.CACHES.get("throttle", {}).get("BACKEND", "")
    if any(name in backend.lower() for name in SHARED):
        return []
    return [checks.Error(
        f"The throttle's counters (per-IP limits, reset e-mails, an unknown address's tries) are kept in {backend}: "
        "each web process would count on its own and allow every limit again.",
        hint="Set CACHE_URL to the Redis every web process shares (README, 'When a component is down').",
        id="careid.E003")]
