from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from . import session, store

ENDED_BY_CAREID = ("NHS Care Identity told this service that your session ended (back-channel logout), "
                   "so you have been logged out of the e-Referral Service (demo) too.")


def backchannel_logout(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """A demo session whose careid session (sid) was reported ended is logged out at its next
    request: the logout token arrives on careid's server-to-server call, without the person's cookie.
    So is a copy of a session cookie from before "Log out" (signed cookies cannot be deleted)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        person = session.person(request)
        if person is not None:
            if person.get("sid") in store.backchannel_sids():
                session.end(request, notice=ENDED_BY_CAREID)
            elif person.get("sid") in store.logged_out_sids():
                session.end(request)
        return get_response(request)

    return middleware


def security_headers(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """No inline script or style; forms may lead only here and to careid (the login and logout
    buttons redirect there, and Chromium applies form-action to the redirect). Pages show personal
    data, so nothing is cached unless a view says otherwise."""
    issuer = urlsplit(settings.DEMO_ERS_ISSUER)
    policy = "; ".join([
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "font-src 'self' https://assets.nhs.uk", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
        f"form-action 'self' {issuer.scheme}://{issuer.netloc}",
    ])

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.setdefault("Content-Security-Policy", policy)
        response.setdefault("Cache-Control", "no-store")
        return response

    return middleware
