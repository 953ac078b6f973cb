from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

from .flows import SESSION_AUTH, SESSION_LAST_SEEN

# Writing the session on every request would cost a write per page; a minute's
# granularity on a 15- or 30-minute idle timeout costs nothing.
_TOUCH_EVERY = 60


def session_timeouts(get_response: Callable[[HttpRequest], HttpResponse]):
    """Idle and absolute session timeouts by the level the person signed in at."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            auth = request.session.get(SESSION_AUTH)
            now = time.time()
            if auth is None:
                logout(request)
            else:
                aal = auth.get("aal", 2)
                idle = settings.CAREID_SESSION_IDLE_TIMEOUT[aal].total_seconds()
                absolute = settings.CAREID_SESSION_ABSOLUTE_TIMEOUT[aal].total_seconds()
                last_seen = request.session.get(SESSION_LAST_SEEN, auth["at"])
                if now - auth["at"] > absolute or now - last_seen > idle:
                    logout(request)
                    request.session_timed_out = True
                elif now - last_seen > _TOUCH_EVERY:
                    request.session[SESSION_LAST_SEEN] = now
        return get_response(request)

    return middleware
