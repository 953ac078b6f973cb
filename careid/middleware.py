from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers

# Written by hand: Django 5.2 has no CSP support (it arrives in 6.0) and one fixed header
# does not justify another dependency. No inline script or style anywhere, so no nonces.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # NHS.UK frontend's stylesheet loads the Frutiger web fonts from the NHS asset host.
        "font-src 'self' https://assets.nhs.uk",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


def security_headers(get_response: Callable[[HttpRequest], HttpResponse]):
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        return response

    return middleware


def no_store_by_default(get_response: Callable[[HttpRequest], HttpResponse]):
    """Nothing careid renders may be kept by a browser or a proxy, unless its view says otherwise.

    Every page is personal or may carry a secret (a TOTP key, a registration link, a profile), and
    Back would show a kept copy without asking the server. A default rather than a decorator per
    view, so a new view cannot forget it. A view opts into caching by setting Cache-Control itself
    (django.views.decorators.cache.cache_control), which is left alone. Static files never get here:
    whitenoise answers them further out, with its own caching.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if "Cache-Control" not in response.headers:
            # What the admin's never_cache sends: no-store, private, max-age=0, no-cache, must-revalidate.
            add_never_cache_headers(response)
        return response

    return middleware
