from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

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
