"""What the demo keeps in its (signed-cookie) session: the person signed in, one notice to show, and the
careid sessions (sids) this browser has had, whose back-channel logouts it shows (no one else's)."""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest

PERSON = "demo_ers_person"
NOTICE = "demo_ers_notice"
ASKED_LEVEL = "demo_ers_asked_level"
SIDS = "demo_ers_sids"
KEPT_SIDS = 20


def person(request: HttpRequest) -> dict[str, Any] | None:
    return request.session.get(PERSON)


def sids(request: HttpRequest) -> list[str]:
    """The careid sessions this browser has had here, oldest first."""
    return request.session.get(SIDS, [])


def _flush(request: HttpRequest) -> None:
    """A fresh session that still knows which careid sessions this browser had."""
    had = sids(request)
    request.session.flush()
    if had:
        request.session[SIDS] = had


def sign_in(request: HttpRequest, *, id_token: str, claims: dict[str, Any], userinfo: dict[str, Any]) -> None:
    # A fresh session: nothing from before the sign-in (pending states, an earlier person) carries over.
    _flush(request)
    if claims.get("sid"):
        request.session[SIDS] = [*sids(request), claims["sid"]][-KEPT_SIDS:]
    request.session[PERSON] = {"id_token": id_token, "claims": claims, "userinfo": userinfo, "sid": claims.get("sid"),
                               "since": time.time()}


def end(request: HttpRequest, notice: str | None = None) -> dict[str, Any] | None:
    """Log the person out of the demo; returns who it was."""
    was = person(request)
    _flush(request)
    if notice:
        request.session[NOTICE] = notice
    return was


def pop_notice(request: HttpRequest) -> str | None:
    return request.session.pop(NOTICE, None)
