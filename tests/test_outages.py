"""When a component is down or hangs: clear pages, fast answers, nothing unsafe."""

from __future__ import annotations

from django.db import OperationalError
from django.test import RequestFactory

UNAVAILABLE = "Sorry, the service is unavailable"


def _branded(response, heading: str) -> None:
    text = response.text if hasattr(response, "text") else response.content.decode()
    assert "<h1>" + heading + "</h1>" in text, text[:2000]
    assert 'class="nhsuk-header"' in text and "/static/nhsuk/nhsuk-frontend.min.css" in text
    assert "Traceback" not in text and "Sign out" not in text


# --- in-process ---------------------------------------------------------------------------------


class _Untouchable:
    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str):
        raise AssertionError(f"the page touched {self.what}.{name}")


def test_every_error_page_renders_without_a_session_a_user_or_the_database():
    """A request whose session and user raise when touched (as its messages would, through the
    session), and no database: without pytest-django's db fixture any query raises."""
    from django.contrib.messages.storage.fallback import FallbackStorage

    from careid import views

    request = RequestFactory().get("/somewhere/")
    request.session, request.user = _Untouchable("the session"), _Untouchable("the user")
    request._messages = FallbackStorage(request)
    pages = [
        (views.bad_request(request), 400, "There is a problem with your request"),
        (views.permission_denied(request), 403, "You cannot do that"),
        (views.page_not_found(request), 404, "Page not found"),
        (views.csrf_failure(request), 403, "Your form could not be sent"),
        (views.server_error(request), 500, "Sorry, there is a problem with the service"),
        (views.service_unavailable(request), 503, UNAVAILABLE),
    ]
    for response, status, heading in pages:
        assert response.status_code == status
        _branded(response, heading)
        assert 'href="/terms/"' in response.content.decode()


def test_the_500_handler_answers_503_for_a_component_that_is_down():
    from careid import views

    request = RequestFactory().get("/somewhere/")
    try:
        raise OperationalError("connection to server failed")
    except OperationalError:
        response = views.server_error(request)
    assert response.status_code == 503 and response["Retry-After"] == "120"
    _branded(response, UNAVAILABLE)
