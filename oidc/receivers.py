"""How sign-in's events reach the provider without sign-in importing it."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from signin.session import Authentication
from signin.signals import sessions_ended

from .flows import end_service_sessions
from .models import Grant


@receiver(sessions_ended, dispatch_uid="oidc.end_service_sessions")
def _end_service_sessions(sender, *, user, sids, reason: str, **kwargs) -> None:
    end_service_sessions(user=user, sids=sids, reason=reason)


@receiver(user_logged_in, dispatch_uid="oidc.follow_session_key")
def _follow_session_key(sender, request, user, **kwargs) -> None:
    """Signing in again (step-up, re-authentication) gives the session a new key but keeps its sid:
    the services' sessions follow the key, so the expiry sweep finds them."""
    session = getattr(request, "session", None)
    auth = Authentication.from_session(session) if session is not None else None
    if auth is not None and auth.sid and session.session_key:
        Grant.objects.live().filter(user=user, sid=auth.sid).update(session_key=session.session_key)
