from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers


def permissions_policy(get_response: Callable[[HttpRequest], HttpResponse]):
    """No page may use the camera, microphone or location (Content-Security-Policy is django-csp's)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
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
