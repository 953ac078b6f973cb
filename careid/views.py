"""Error pages, which must render when what failed is the session store, the database or Redis.

So they are rendered without the request: no context processor runs (the messages one reads the
session, the auth one loads the user), no {% csrf_token %} (they have no form and no "Sign out"),
and the header and footer links and asset URLs, worked out once per process, are passed as they are.
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template import loader

from .context_processors import _site
from .errors import ServiceUnavailable

# Failures that pass when the component is back: the person is asked to try again in a few minutes.
# (psycopg's errors for a server that is down, restarting or cancelling on statement_timeout, and
# deadlocks or serialization failures, all reach Django as OperationalError.)
UNAVAILABLE = (ServiceUnavailable, OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 120


def error_page(template: str, status: int, **context) -> HttpResponse:
    return HttpResponse(loader.render_to_string(template, {**_site(), **context}), status=status)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return error_page("403_csrf.html", 403)


def bad_request(request: HttpRequest, exception=None) -> HttpResponse:
    return error_page("400.html", 400)


def permission_denied(request: HttpRequest, exception=None) -> HttpResponse:
    return error_page("403.html", 403)


def page_not_found(request: HttpRequest, exception=None) -> HttpResponse:
    return error_page("404.html", 404)


def service_unavailable(request: HttpRequest | None = None) -> HttpResponse:
    response = error_page("503.html", 503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: Django calls it while handling the exception, which says which page is right."""
    if isinstance(sys.exception(), UNAVAILABLE):
        return service_unavailable(request)
    return error_page("500.html", 500)
