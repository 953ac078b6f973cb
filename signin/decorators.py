from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.urls import reverse

from .session import current


def recent_authentication_required(view):
    """Adding authenticators or e-mail addresses needs a sign-in at most 5 minutes old."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        auth = current(request)
        if auth is None or auth.age() > settings.CAREID_REAUTHENTICATION_MAX_AGE.total_seconds():
            query = urlencode({"goto": request.get_full_path(), "reauth": "1"})
            return redirect(f"{reverse('login')}?{query}")
        return view(request, *args, **kwargs)

    return wrapper
