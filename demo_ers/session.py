"""What the demo keeps in its (signed-cookie) session: the person signed in, and one notice to show."""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest

PERSON = "demo_ers_person"
NOTICE = "demo_ers_notice"
ASKED_LEVEL = "demo_ers_asked_level"


def person(request: HttpRequest) -> dict[str, Any] | None:
    return request.session.get(PERSON)


def sign_in(request: HttpRequest, *, id_token: str, claims: dict[str, Any], userinfo: dict[str, Any]) -> None:
    # A fresh session: nothing from before the sign-in (pending states, an earlier person) carries over.
    request.session.flush()
    request.session[PERSON] = {"id_token": id_token, "claims": claims, "userinfo": userinfo, "sid": claims.get("sid"),
                               "since": time.time()}


def end(request: HttpRequest, notice: str | None = None) -> dict[str, Any] | None:
    """Log the person out of the demo; returns who it was."""
    was = person(request)
    request.session.flush()
    if notice:
        request.session[NOTICE] = notice
    return was


def pop_notice(request: HttpRequest) -> str | None:
    return request.session.pop(NOTICE, None)
