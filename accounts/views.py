from __future__ import annotations

from functools import wraps
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


def requested_goto(request: HttpRequest) -> str | None:
    # `next` is what Django's login_required sends; `goto` what relying services send.
    return safe_goto(request.GET.get("goto") or request.GET.get("next"))


def remember_cookie_name(level: str) -> str:
    # One cookie per requested level (as CIS2 does); __Host- wherever cookies are Secure.
    prefix = "__Host-" if settings.SESSION_COOKIE_SECURE else ""
    return f"{prefix}careid-login-method-{level}"


def signin_method(kind):
    """For the views of one login method: only when it is enabled and reaches the level asked for."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            level = registry.level(request.GET.get("acr_values"))
            if kind not in registry.types_for_level(level):
                query = {"acr_values": level, "choose": "1"}
                if goto := requested_goto(request):
                    query["goto"] = goto
                return redirect(f"{reverse('login')}?{urlencode(query)}")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def signin_url(kind, goto: str | None, level: str) -> str:
    query = {key: value for key, value in (("goto", goto), ("acr_values", level)) if value}
    return kind.signin_url() + (f"?{urlencode(query)}" if query else "")


def signin(request: HttpRequest) -> HttpResponse:
    """CIS2 Authentication: choose a login method (or go straight to the remembered one)."""
    goto = requested_goto(request)
    level = registry.level(request.GET.get("acr_values"))
    kinds = registry.types_for_level(level)
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
        email = form.cleaned_data["email"]
        if flows.add_email_address(request, email):
            messages.success(request, f"We have sent an email to {email}. Open the link in it to verify the address.")
            return redirect("profile")
        form.add_error("email", "You have added too many email addresses in the last hour. Try again later.")
    return render(request, "accounts/add_email.html", {"form": form}, status=400 if form.errors else 200)


def confirm_email(request: HttpRequest, key: str) -> HttpResponse:
    """The link from the verification e-mail: a page with a button (no change on GET)."""
    confirmation = EmailConfirmationHMAC.from_key(key)
    if confirmation is None or confirmation.email_address.verified:
        return render(request, "accounts/confirm_email_invalid.html", status=404)
    if request.method == "POST":
        address = flows.confirm_email_address(request, confirmation)
        if address is None:  # verified on another Care Identity meanwhile
            return render(request, "accounts/confirm_email_invalid.html", status=409)
        return render(request, "accounts/confirm_email_done.html", {"address": address})
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
