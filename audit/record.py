"""The one way to write the audit trail: `record(...)`, inside the change's transaction."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from allauth.account.adapter import get_adapter
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest

from .models import AuditEvent, Event, Outcome

# Keys that must never reach the trail, whatever a caller passes.
_SECRET_WORDS = ("password", "secret", "token", "code", "key", "otp")


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or behind CAREID_TRUSTED_PROXY_COUNT proxies the
    X-Forwarded-For entry they vouch for (allauth's reading of the header; never the leftmost,
    which the client writes). Read once per request: a sign-in step asks for it several times."""
    try:
        return request.careid_client_ip
    except AttributeError:
        pass
    peer = request.META.get("REMOTE_ADDR") or None
    if settings.ALLAUTH_TRUSTED_PROXY_COUNT and not _is_proxy(peer):
        ip = peer  # X-Forwarded-For is the proxy's word; from anyone else, the client's own
    else:
        try:
            ip = get_adapter().get_client_ip(request)
        except (ImproperlyConfigured, PermissionDenied):  # fewer X-Forwarded-For entries than proxies
            ip = peer
    request.careid_client_ip = ip
    return ip


def _is_proxy(peer: str | None) -> bool:
    """Whether the connection comes from the proxy in front of careid (CAREID_PROXY_IPS)."""
    if peer is None:
        return False
    networks = _proxy_networks(tuple(settings.CAREID_PROXY_IPS))
    if networks is None:  # "*"
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


@lru_cache(maxsize=8)
def _proxy_networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    """CAREID_PROXY_IPS parsed once (settings checked each entry at start); None for "*", any peer."""
    if "*" in proxies:
        return None
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def user_agent(request: HttpRequest | None) -> str:
    if request is None:
        return ""
    return _neutralise(request.META.get("HTTP_USER_AGENT", ""))[:512]


def _neutralise(value: Any) -> Any:
    """CR/LF and other control characters in user-supplied text become spaces (log injection)."""
    if isinstance(value, str):
        return "".join(ch if ch.isprintable() else " " for ch in value)
    if isinstance(value, dict):
        return {str(k): _neutralise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_neutralise(v) for v in value]
    return value


def record(
    event: Event,
    *,
    request: HttpRequest | None = None,
    actor=None,
    subject=None,
    outcome: Outcome = Outcome.SUCCESS,
    method: str = "",
    aal: int | None = None,
    **details: Any,
) -> AuditEvent:
    for name in details:
        if any(word in name.lower() for word in _SECRET_WORDS):
            raise ValueError(f"Refusing to write {name!r} to the audit trail")
    if actor is None and request is not None and getattr(request, "user", None) is not None:
        if request.user.is_authenticated:
            actor = request.user
    return AuditEvent.objects.create(
        event=event,
        outcome=outcome,
        actor=actor,
        subject=subject,
        ip=client_ip(request) if request is not None else None,
        user_agent=user_agent(request),
        method=method,
        aal=aal,
        details=_neutralise(details),
    )
