from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from .redirects import url_with_query
from .session import is_recent


def sign_in_again_url(request: HttpRequest, goto: str | None = None) -> str:
    """The sign-in page's address, saying the person must sign in again, then back to this page (or `goto`,
    for a POST whose address answers no GET)."""
    return url_with_query(reverse("login"), goto=goto or request.get_full_path(), reauth="1")


def sign_in_again(request: HttpRequest, goto: str | None = None) -> HttpResponse:
    """To the sign-in page, saying the person must sign in again, then back to this page (or `goto`)."""
    return redirect(sign_in_again_url(request, goto))


def recent_authentication_required(view):
    """Adding authenticators or e-mail addresses needs a sign-in at most 5 minutes old."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not is_recent(request):
            return sign_in_again(request)
        return view(request, *args, **kwargs)

    return wrapper
