"""Use cases of the OpenID Connect provider: ending a person's sessions at relying services
(back-channel logout), signing out at a service's request, sweeping sessions that timed out."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from itertools import islice

from allauth.idp.oidc.adapter import get_adapter
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User
from audit.models import Event
from audit.record import record
from signin import flows as signin_flows
from signin.session import Authentication, current, has_timed_out

from . import backchannel
from .models import SECRET_METHODS, BackchannelLogout, Grant, RelyingService


def end_service_sessions(*, user: User, sids: Iterable[str] | None, reason: str, except_client_id: str | None = None) -> int:
    """The person's careid session(s) ended: their services' tokens stop at once, and so do the codes
    not exchanged yet (a code issued before the end brings no tokens after it); each service that asked
    for back-channel logout is owed a logout token (queued in this transaction, sent by Celery after it
    commits). Returns how many logout tokens are owed."""
    grants = Grant.objects.live().filter(user=user)
    if sids is not None:
        grants = grants.filter(sid__in=list(sids))
    grants = list(grants.select_related("client"))
    if not grants:
        return 0
    Grant.objects.filter(pk__in=[grant.pk for grant in grants]).end()
    owed, now = {}, timezone.now()  # as accounts.outbox.queue: due and handed over at the same instant
    for grant in grants:
        if grant.client.backchannel_logout_uri and grant.client_id != except_client_id:
            owed[(grant.client_id, grant.sid)] = BackchannelLogout(client_id=grant.client_id, user=user, sid=grant.sid,
                                                                  reason=reason, next_attempt_at=now, handed_over_at=now)
    logouts = BackchannelLogout.objects.bulk_create(owed.values())
    for logout in logouts:
        transaction.on_commit(lambda pk=logout.pk: backchannel.publish(pk), robust=True)
    return len(logouts)


def sign_out_at_service_request(request: HttpRequest, *, client: RelyingService | None, proven: bool) -> None:
    """RP-initiated logout: the careid session ends, and with it every service's session. Only a service that
    proved it asked (`proven`: its ID token of this very session came as id_token_hint) knows already and gets
    no logout token; one only named by client_id could have been named by anyone, so it is told like the others."""
    auth = current(request)
    with transaction.atomic():
        if request.user.is_authenticated:
            record(Event.OIDC_LOGOUT, request=request, subject=request.user,
                   client=client.pk if client else "", service=client.name if client else "")
            if auth is not None and client is not None:
                end_service_sessions(user=request.user, sids=[auth.sid], reason="signed out at a service",
                                     except_client_id=client.pk if proven else None)
        signin_flows.sign_out(request)


def sweep_timed_out_sessions(chunk: int = 1000) -> int:
    """Periodic: careid sessions with services that ended without a request (the person walked away:
    idle or absolute timeout, or the store lost them) get their back-channel logouts. Returns how many.
    The sessions are read a chunk at a time (sessions live in the database only: settings.py)."""
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    ended = 0
    live = Grant.objects.live().values_list("user_id", "sid", "session_key").distinct().iterator(chunk_size=chunk)
    while rows := list(islice(live, chunk)):
        stored = {key: store_class().decode(data) for key, data in store_class.get_model_class().objects.filter(
            session_key__in=[key for _, _, key in rows if key], expire_date__gt=timezone.now(),
        ).values_list("session_key", "session_data")}
        for user_id, sid, session_key in rows:
            data = stored.get(session_key, {})
            auth = Authentication.from_session(data)
            if data and auth is not None and auth.sid == sid and not has_timed_out(data):
                continue
            with transaction.atomic():
                user = User.objects.get(pk=user_id)
                if data and auth is not None and auth.sid == sid:  # timed out but still in the store
                    store_class(session_key).delete()
                    UserSession.objects.filter(session_key=session_key).delete()
                record(Event.SESSION_EXPIRED, subject=user, reason="timed out (swept)",
                       method=auth.method if auth else "")
                end_service_sessions(user=user, sids=[sid], reason="session timed out")
            ended += 1
    return ended


# --- registering relying services (the admin and `manage.py register_client`) ------------------


def save_relying_service(form, *, actor: User | None, request: HttpRequest | None = None) -> tuple[RelyingService, str | None]:
    """Register or change a relying service from a valid RelyingServiceForm; audited. A service that
    authenticates with a secret gets a new one when it is registered, when it is switched to a secret
    method, and when the form's `new_secret` is ticked (the old one stops at once). Returns the service and that
    secret: shown once, stored hashed."""
    adding = form.instance._state.adding
    had_secret = not adding and form.instance.auth_method in SECRET_METHODS
    with transaction.atomic():
        service = form.apply()
        secret = None
        if service.auth_method in SECRET_METHODS:
            if not had_secret or form.cleaned_data.get("new_secret"):
                secret = get_adapter().generate_client_secret()
                service.set_secret(secret)
        else:
            service.secret = make_password(None)  # no secret will ever match: it authenticates otherwise
        service.save()
        record(Event.CLIENT_CHANGED, request=request, actor=actor, client=service.pk, service=service.name,
               change="registered" if adding else "changed", auth_method=service.auth_method,
               redirect_uris=service.get_redirect_uris(), scopes=service.get_scopes(),
               backchannel_logout_uri=service.backchannel_logout_uri, new_credentials=secret is not None)
    return service, secret
