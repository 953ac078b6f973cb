"""How sign-in's events reach the provider without sign-in importing it."""

from __future__ import annotations

from django.dispatch import receiver

from signin.signals import session_key_changed, sessions_ended

from .flows import end_service_sessions
from .models import Grant


@receiver(sessions_ended, dispatch_uid="oidc.end_service_sessions")
def _end_service_sessions(sender, *, user, sids, reason: str, **kwargs) -> None:
    end_service_sessions(user=user, sids=sids, reason=reason)


@receiver(session_key_changed, dispatch_uid="oidc.follow_session_key")
def _follow_session_key(sender, *, user, before: str, after: str, **kwargs) -> None:
    """Signing in again (step-up, re-authentication) or a new password gives the session a new key but
    keeps its sid: the services' sessions follow the key, so the expiry sweep finds them."""
    Grant.objects.live().filter(user=user, session_key=before).update(session_key=after)
