from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .session import SESSION_LAST_SEEN, has_timed_out

# Writing the session on every request would cost a write per page; a minute's
# granularity on a 15- or 30-minute idle timeout costs nothing.
_TOUCH_EVERY = 60


def session_timeouts(get_response: Callable[[HttpRequest], HttpResponse]):
    """Idle and absolute session timeouts by the level the person signed in at."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            from .flows import end_timed_out_session

            now = time.time()
            if has_timed_out(request.session, now):
                end_timed_out_session(request)
            elif now - request.session.get(SESSION_LAST_SEEN, now) > _TOUCH_EVERY:
                request.session[SESSION_LAST_SEEN] = now
                from .flows import seen_now

                seen_now(request)  # "last seen" on the list of the person's sessions
        return get_response(request)

    return middleware
