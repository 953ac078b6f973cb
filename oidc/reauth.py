"""Recognising the sign-in careid asked for (prompt=login, max_age) when the person comes back to
/oidc/authorize.

The authorization URL careid sends the person back to carries a random id; when careid asked this
browser to sign in is kept under that id in a signed cookie. A time in the URL alone would be bound
to nothing: one fetched in any browser before a person's last sign-in would make that sign-in count as
fresh. The id is forgotten once a code is issued for it, so replaying the URL asks again. A cookie,
not the session: the session is flushed when another person signs in at the same browser, and that
person would have to sign in twice.
"""

from __future__ import annotations

import json
import secrets
import time

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse

PARAM = "careid_reauth"  # in the URL: which of this browser's requests to sign in again it is
_SALT = "careid.oidc.reauth"
_MAX_AGE = 3600  # seconds: an older request to sign in again no longer counts
_KEPT = 5  # the newest requests kept, so several tabs each asking at once all work


def _cookie_name() -> str:
    # __Host- wherever cookies are Secure (as signin.views.remember_cookie_name).
    return f"{'__Host-' if settings.SESSION_COOKIE_SECURE else ''}careid-reauth"


def _asked(request: HttpRequest) -> dict[str, float]:
    """This browser's requests to sign in again: id -> when careid asked (missing, forged or expired: none)."""
    try:
        asked = json.loads(request.get_signed_cookie(_cookie_name(), salt=_SALT, max_age=_MAX_AGE))
    except (KeyError, signing.BadSignature, ValueError):
        return {}
    if not isinstance(asked, dict):
        return {}
    oldest = time.time() - _MAX_AGE
    return {key: at for key, at in asked.items() if isinstance(at, (int, float)) and at >= oldest}


def _keep(response: HttpResponse, asked: dict[str, float]) -> None:
    if not asked:
        response.delete_cookie(_cookie_name(), path="/", samesite="Lax")
        return
    newest = dict(sorted(asked.items(), key=lambda item: item[1])[-_KEPT:])
    response.set_signed_cookie(_cookie_name(), json.dumps(newest), salt=_SALT, max_age=_MAX_AGE, path="/",
                               secure=settings.SESSION_COOKIE_SECURE, httponly=True, samesite="Lax")


def new_id() -> str:
    return secrets.token_urlsafe(16)


def remember(request: HttpRequest, response: HttpResponse, request_id: str) -> None:
    """careid sends this browser to sign in again now, for the authorization URL carrying `request_id`."""
    _keep(response, {**_asked(request), request_id: time.time()})


def asked_at(request: HttpRequest) -> float | None:
    """When careid sent this browser to sign in for this authorization request (the URL's id), if it did."""
    return _asked(request).get(request.GET.get(PARAM, ""))


def forget(request: HttpRequest, response: HttpResponse) -> None:
    """A code was issued for this authorization request: its id no longer counts."""
    asked = _asked(request)
    if asked.pop(request.GET.get(PARAM, ""), None) is not None:
        _keep(response, asked)
