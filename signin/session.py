"""The session's level: how and when the person signed in, as every part of careid reads it.

Written once per sign-in (signin.flows.complete_signin) and read by the timeouts, the
re-authentication gate, the admin and the OpenID Connect provider (acr, amr, auth_time, sid).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest

SESSION_AUTH = "careid_auth"
SESSION_LAST_SEEN = "careid_last_seen"
# Left in the browser's new session by a timeout, so that the sign-in page the request leads to says so (once).
SESSION_TIMED_OUT = "careid_timed_out"


@dataclass(frozen=True)
class Authentication:
    method: str  # registry key of the login method
    aal: int
    acr: str  # the class the method reaches, e.g. AAL2_TOTP
    amr: tuple[str, ...]
    at: float  # auth_time, seconds since the epoch
    sid: str  # the OpenID Connect session id: stable while the same person stays signed in

    @classmethod
    def from_session(cls, session: Mapping[str, Any]) -> Authentication | None:
        data = session.get(SESSION_AUTH)
        if not isinstance(data, dict):
            return None
        try:
            return cls(method=data["method"], aal=int(data["aal"]), acr=data["acr"], amr=tuple(data.get("amr", ())),
                       at=float(data["at"]), sid=data.get("sid", ""))
        except (KeyError, TypeError, ValueError):
            return None

    def to_session(self) -> dict[str, Any]:
        return {**asdict(self), "amr": list(self.amr)}

    def age(self, now: float | None = None) -> float:
        return (now or time.time()) - self.at


def current(request: HttpRequest) -> Authentication | None:
    """How the signed-in person signed in; None when nobody is signed in."""
    if not request.user.is_authenticated:
        return None
    return Authentication.from_session(request.session)


def is_recent(request: HttpRequest) -> bool:
    """Whether the person signed in, or again, within CAREID_REAUTHENTICATION_MAX_AGE: what adding or
    removing an authenticator or an e-mail address needs."""
    auth = current(request)
    return auth is not None and auth.age() <= settings.CAREID_REAUTHENTICATION_MAX_AGE.total_seconds()


def has_timed_out(session: Mapping[str, Any], now: float | None = None) -> bool:
    """True when the session is past its idle or absolute timeout for the level it was signed in at
    (or carries no sign-in at all): the middleware and the expired-session sweep use this one rule."""
    auth = Authentication.from_session(session)
    if auth is None:
        return True
    now = now or time.time()
    idle = settings.CAREID_SESSION_IDLE_TIMEOUT[auth.aal].total_seconds()
    absolute = settings.CAREID_SESSION_ABSOLUTE_TIMEOUT[auth.aal].total_seconds()
    last_seen = session.get(SESSION_LAST_SEEN, auth.at)
    return now - auth.at > absolute or now - last_seen > idle
