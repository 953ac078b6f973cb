"""When a component is down or hangs: clear pages, fast answers, nothing unsafe."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.db import OperationalError
from django.test import Client, RequestFactory

from .conftest import ROOT, _free_port, require

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


@pytest.fixture
def throttle_unreachable(settings):
    """The throttle cache on a port nothing listens on (connection refused at once)."""
    require(settings.CACHES["throttle"]["BACKEND"].startswith("django_redis"), "Redis as the cache (CACHE_URL)")
    throttle = dict(settings.CACHES["throttle"])
    throttle["LOCATION"] = f"redis://127.0.0.1:{_free_port()}/0"
    settings.CACHES = {**settings.CACHES, "throttle": throttle}


@pytest.mark.parametrize("unknown", [False, True], ids=["known address", "unknown address"])
def test_a_sign_in_that_cannot_be_counted_is_refused_with_the_503_page_and_audited(db, person, throttle_unreachable,
                                                                                   unknown):
    from audit.models import AuditEvent, Event

    client = Client(raise_request_exception=False)
    email = "nobody@nhs.net" if unknown else person.user.email
    response = client.post("/login/authenticator-app/", {"email": email, "password": person.password})
    assert response.status_code == 503
    _branded(response, UNAVAILABLE)
    event = AuditEvent.objects.get(event=Event.SIGNIN_THROTTLED)
    assert event.outcome == "failure" and event.details["reason"] == "throttle store unavailable"
    assert event.details["email"] == email and event.subject_id == (None if unknown else person.user.pk)
    person.user.refresh_from_db()
    assert person.user.password_failures == 0  # nothing was checked, so nothing counts against the person


def test_a_password_reset_and_an_added_address_that_cannot_be_counted_are_refused_and_audited(
        signed_in, person, throttle_unreachable):
    from allauth.account.models import EmailAddress

    from accounts.models import EmailOneTimePassword
    from audit.models import AuditEvent, Event

    signed_in.raise_request_exception = False
    response = signed_in.post("/profile/email/add/", {"email": "edith.cavell@nhs.uk"})
    assert response.status_code == 503
    refused = AuditEvent.objects.get(event=Event.EMAIL_REFUSED)
    assert refused.details["reason"] == "throttle store unavailable" and refused.subject_id == person.user.pk
    assert not EmailAddress.objects.filter(email="edith.cavell@nhs.uk").exists()

    client = Client(raise_request_exception=False)
    response = client.post("/login/authenticator-app/forgotten-password/", {"email": person.user.email})
    assert response.status_code == 503
    _branded(response, UNAVAILABLE)
    started = AuditEvent.objects.get(event=Event.PASSWORD_RESET_STARTED)
    assert started.outcome == "failure" and started.details["reason"] == "throttle store unavailable"
    assert not EmailOneTimePassword.objects.exists()


def _settings_of(code: str, env: dict[str, str]) -> dict:
    """What a fresh process configured only by `env` ends up with (`code` prints JSON)."""
    import json

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAREID_", "DATABASE_URL", "CACHE_URL", "CELERY_"))}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**clean, "DJANGO_SETTINGS_MODULE": "careid.settings", "SECRET_KEY": "k", **env})
    return json.loads(result.stdout)


SETTINGS = ("import json; from django.conf import settings as s; print(json.dumps({"
            "'db': s.DATABASES['default'].get('OPTIONS', {}), 'caches': s.CACHES, 'broker': s.CELERY_BROKER_TRANSPORT_OPTIONS,"
            "'publish': s.CELERY_TASK_PUBLISH_RETRY_POLICY, 'email': s.EMAIL_TIMEOUT, 'session': s.SESSION_ENGINE}))")
COMPONENTS = {"DATABASE_URL": "postgres://careid@db:5432/careid", "CACHE_URL": "redis://redis:6379/2",
              "CELERY_BROKER_URL": "redis://redis:6379/1"}


def test_every_component_has_short_timeouts_and_the_throttle_fails_closed():
    s = _settings_of(SETTINGS, COMPONENTS)
    assert s["db"]["connect_timeout"] == 3 and "options" not in s["db"]  # no statement timeout for commands
    default, throttle = s["caches"]["default"], s["caches"]["throttle"]
    assert default["LOCATION"] == throttle["LOCATION"] == "redis://redis:6379/2"
    assert default["OPTIONS"]["IGNORE_EXCEPTIONS"] is True and throttle["OPTIONS"]["IGNORE_EXCEPTIONS"] is False
    for options in default["OPTIONS"], throttle["OPTIONS"]:
        assert options["SOCKET_CONNECT_TIMEOUT"] == options["SOCKET_TIMEOUT"] == 0.5
    assert s["broker"]["socket_timeout"] == s["broker"]["socket_connect_timeout"] == 0.5
    assert s["broker"]["visibility_timeout"] > 3600  # the longest countdown: back-channel logout retries
    assert s["publish"]["max_retries"] <= 1 and s["email"] == 10
    assert s["session"] == "django.contrib.sessions.backends.db"

    s = _settings_of(SETTINGS, {**COMPONENTS, "CAREID_REDIS_TIMEOUT": "0.25", "CAREID_DB_CONNECT_TIMEOUT": "5"})
    assert s["caches"]["throttle"]["OPTIONS"]["SOCKET_TIMEOUT"] == s["broker"]["socket_timeout"] == 0.25
    assert s["db"]["connect_timeout"] == 5


def test_web_processes_get_a_statement_timeout_and_commands_do_not():
    web = _settings_of("import json, careid.wsgi; from django.conf import settings as s; "
                       "print(json.dumps(s.DATABASES['default']['OPTIONS']))", COMPONENTS)
    assert web["options"] == "-c statement_timeout=30000"
    assert "options" not in _settings_of(SETTINGS, COMPONENTS)["db"]


def test_health_says_only_ok_or_unavailable_and_operators_get_the_details(db, throttle_unreachable, client):
    from django.core.management import call_command

    response = client.get("/health/")
    assert (response.status_code, response.content) == (503, b"Unavailable\n")
    assert "no-store" in response["Cache-Control"]

    output = StringIO()
    with pytest.raises(SystemExit) as exit:
        call_command("health_check", "health", "--no-http", stdout=output)
    assert exit.value.code == 1
    report = output.getvalue()
    assert "Database(alias='default'): OK" in report and "Cache(alias='throttle'): Unexpected Result" in report


def test_health_is_ok_when_every_component_answers(db, client):
    response = client.get("/health/")
    assert (response.status_code, response.content) == (200, b"OK\n")
