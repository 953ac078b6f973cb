"""CIS2 Authentication: the method page every sign-in starts from, and signing out."""

from __future__ import annotations

from functools import lru_cache, wraps
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse

from authenticators import registry
from careid.http import posted

from . import flows
from .forms import SignInMethodForm
from .redirects import safe_goto, url_with_query
from .session import SESSION_TIMED_OUT


def requested_goto(request: HttpRequest) -> str | None:
    # `next` is what Django's login_required sends; `goto` what relying services send.
    return safe_goto(request.GET.get("goto") or request.GET.get("next"))


def after_signin_url(request: HttpRequest) -> str:
    """Where a completed sign-in goes: the page asked for, or home, saying so when the address asked
    for was refused (not careid's own and not a registered service)."""
    if goto := requested_goto(request):
        return goto
    asked = request.GET.get("goto") or request.GET.get("next")
    return reverse("home") + ("?goto_refused=1" if asked else "")


def remember_cookie_name(level: str) -> str:
    # One cookie per requested level (as CIS2 does); __Host- wherever cookies are Secure.
    prefix = "__Host-" if settings.SESSION_COOKIE_SECURE else ""
    return f"{prefix}careid-login-method-{level}"


def signin_method(kind):
    """For the views of one login method: only when it is enabled and reaches the level asked for."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            asked = " ".join(registry.levels(request.GET.get("acr_values")))
            if kind not in registry.types_for_level(asked):
                query = {"acr_values": asked, "choose": "1"}
                if goto := requested_goto(request):
                    query["goto"] = goto
                return redirect(f"{reverse('login')}?{urlencode(query)}")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def choose_another_url(request: HttpRequest) -> str:
    """'Choose another login method': the method page, keeping where the person was going."""
    query = request.GET.copy()
    query["choose"] = "1"
    return f"{reverse('login')}?{query.urlencode()}"


def signin_url(kind, goto: str | None, level: str | None) -> str:
    return url_with_query(kind.signin_url(), goto=goto, acr_values=level)


@lru_cache(maxsize=256)
def _method_radios(kinds: tuple, checked: str | None) -> str:
    """The radios of "Select your login method", rendered once per process for each list of methods and
    choice: they are the same for everyone, and a loop over every type was the page's largest cost
    (bench/signin_page.py)."""
    return render_to_string("signin/_method_radios.html", {"kinds": kinds, "checked": checked})


def signin(request: HttpRequest) -> HttpResponse:
    """CIS2 Authentication: choose a login method (or go straight to the remembered one)."""
    goto = requested_goto(request)
    asked = " ".join(registry.levels(request.GET.get("acr_values")))  # what the method pages get passed on
    kinds = registry.types_for_level(asked)
    cookie = remember_cookie_name(registry.level(asked))  # one per preferred level, as CIS2 keeps
    remembered = registry.get_enabled(request.COOKIES.get(cookie, ""))
    # Why the person must sign in (again) is said on this page only: then it is shown, the remembered method chosen.
    notices = {"reauth": "reauth" in request.GET, "timed_out": request.session.pop(SESSION_TIMED_OUT, False)}
    if request.method == "GET" and remembered in kinds and "choose" not in request.GET and not any(notices.values()):
        return redirect(signin_url(remembered, goto, asked))

    form = SignInMethodForm(posted(request), kinds=kinds, initial={"method": remembered and remembered.key})
    if request.method == "POST" and form.is_valid():
        kind = registry.get_enabled(form.cleaned_data["method"])
        response = redirect(signin_url(kind, goto, asked))
        if form.cleaned_data["remember"]:
            response.set_cookie(
                cookie, kind.key, max_age=settings.CAREID_REMEMBER_METHOD_MAX_AGE,
                secure=settings.SESSION_COOKIE_SECURE, httponly=True, samesite="Lax",
            )
        else:
            response.delete_cookie(cookie, samesite="Lax")
        return response
    checked = form["method"].value()
    radios = _method_radios(tuple(kinds), checked if checked in {kind.key for kind in kinds} else None)
    return render(
        request,
        "signin/signin.html",
        {"form": form, "kinds": kinds, "method_radios": radios, **notices},
        status=400 if form.errors else 200,
    )


def signout(request: HttpRequest) -> HttpResponse:
    """Sign out (a POST: the header's button). The address opened (a bookmark, typed) asks first: nothing
    changes on a GET."""
    if request.method == "POST":
        flows.sign_out(request)
        return render(request, "signin/signed_out.html")
    if not request.user.is_authenticated:
        return redirect("login")
    return render(request, "signin/sign_out.html")


def admin_login(request: HttpRequest) -> HttpResponse:
    """The Django admin signs in through CIS2 Authentication like everything else."""
    if request.user.is_authenticated and not request.user.is_staff:
        return render(request, "403.html", {"message": "Your Care Identity does not give access to administration."}, status=403)
    goto = safe_goto(request.GET.get("next")) or reverse("admin:index")
    return redirect(url_with_query(reverse("login"), goto=goto))
