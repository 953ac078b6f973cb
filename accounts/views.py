from __future__ import annotations

from urllib.parse import urlencode

from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from authenticators import registry
from careid.http import posted

from . import flows
from .decorators import recent_authentication_required
from .forms import AddEmailForm, SignInMethodForm
from .redirects import safe_goto

# Levels a relying service may ask for (acr_values) and the AAL each needs.
LEVELS = {"AAL3_ANY": 3, "AAL2_OR_AAL3_ANY": 2, "AAL2_ANY": 2, "AAL1_USERPASS": 1}
DEFAULT_LEVEL = "AAL2_OR_AAL3_ANY"


def _level(request: HttpRequest) -> str:
    level = request.GET.get("acr_values", "")
    return level if level in LEVELS else DEFAULT_LEVEL


def remember_cookie_name(level: str) -> str:
    # One cookie per requested level (as CIS2 does); __Host- wherever cookies are Secure.
    prefix = "__Host-" if settings.SESSION_COOKIE_SECURE else ""
    return f"{prefix}careid-login-method-{level}"


def signin_url(kind, goto: str | None, level: str) -> str:
    query = {key: value for key, value in (("goto", goto), ("acr_values", level)) if value}
    return kind.signin_url() + (f"?{urlencode(query)}" if query else "")


def signin(request: HttpRequest) -> HttpResponse:
    """CIS2 Authentication: choose a login method (or go straight to the remembered one)."""
    goto = safe_goto(request.GET.get("goto"))
    level = _level(request)
    kinds = [kind for kind in registry.enabled_types() if kind.aal >= LEVELS[level]]
    cookie = remember_cookie_name(level)
    remembered = registry.get_enabled(request.COOKIES.get(cookie, ""))
    if request.method == "GET" and remembered in kinds and "choose" not in request.GET:
        return redirect(signin_url(remembered, goto, level))

    form = SignInMethodForm(posted(request), kinds=kinds, initial={"method": remembered and remembered.key})
    if request.method == "POST" and form.is_valid():
        kind = registry.get_enabled(form.cleaned_data["method"])
        response = redirect(signin_url(kind, goto, level))
        if form.cleaned_data["remember"]:
            response.set_cookie(
                cookie, kind.key, max_age=settings.CAREID_REMEMBER_METHOD_MAX_AGE,
                secure=settings.SESSION_COOKIE_SECURE, httponly=True, samesite="Lax",
            )
        else:
            response.delete_cookie(cookie, samesite="Lax")
        return response
    return render(
        request,
        "accounts/signin.html",
        {"form": form, "kinds": kinds, "reauth": "reauth" in request.GET,
         "timed_out": getattr(request, "session_timed_out", False)},
        status=400 if form.errors else 200,
    )


@require_POST
def signout(request: HttpRequest) -> HttpResponse:
    flows.sign_out(request)
    return render(request, "accounts/signed_out.html")


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/home.html")


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "accounts/profile.html",
        {
            "authenticators": registry.authenticators_of(request.user),
            "email_addresses": EmailAddress.objects.filter(user=request.user).order_by("-primary", "email"),
        },
    )


@recent_authentication_required
def add_email(request: HttpRequest) -> HttpResponse:
    form = AddEmailForm(posted(request), user=request.user)
    if request.method == "POST" and form.is_valid():
        address = flows.add_email_address(request, form.cleaned_data["email"])
        messages.success(request, f"We have sent a link to {address.email}. Open it to verify the address.")
        return redirect("profile")
    return render(request, "accounts/add_email.html", {"form": form}, status=400 if form.errors else 200)


def confirm_email(request: HttpRequest, key: str) -> HttpResponse:
    """The link from the verification e-mail: a page with a button (no change on GET)."""
    confirmation = EmailConfirmationHMAC.from_key(key)
    if confirmation is None or confirmation.email_address.verified:
        return render(request, "accounts/confirm_email_invalid.html", status=404)
    if request.method == "POST":
        flows.confirm_email_address(request, confirmation)
        return render(request, "accounts/confirm_email_done.html", {"address": confirmation.email_address})
    return render(request, "accounts/confirm_email.html", {"address": confirmation.email_address})


def page(template: str):
    def view(request: HttpRequest) -> HttpResponse:
        return render(request, template)

    return view


def admin_login(request: HttpRequest) -> HttpResponse:
    """The Django admin signs in through CIS2 Authentication like everything else."""
    if request.user.is_authenticated and not request.user.is_staff:
        return render(request, "403.html", {"message": "Your Care Identity does not give access to administration."}, status=403)
    goto = safe_goto(request.GET.get("next")) or reverse("admin:index")
    return redirect(f"{reverse('login')}?{urlencode({'goto': goto})}")
