"""The pages of the four WebAuthn types: one set of views, given the type by its URLs (urls.py).

Registration: "Register … with your Care Identity" (what is needed, sole access) → the ceremony page →
"Registration successful". From a registration link the e-mail address and its One Time Password come
between (authenticators/email_steps.py). Sign-in: the e-mail address, then the ceremony; a passkey
needs no address.
"""

from __future__ import annotations

from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from authenticators import flows as link_flows
from authenticators import registry
from authenticators.forms import EmailForm, SoleAccessForm
from authenticators.journeys import JourneyError
from authenticators.models import RegistrationLink
from authenticators.registry import AuthenticatorType
from authenticators.views import (
    code_step,
    email_step,
    journey_error,
    journey_step,
    resend_step,
    the_code_page,
)
from careid.http import posted
from signin.decorators import recent_authentication_required
from signin.views import after_signin_url, choose_another_url, requested_goto, signin_method, signin_url

from . import ceremony as ceremonies
from . import flows, kinds
from .forms import CeremonyForm


def namespace(kind: AuthenticatorType) -> str:
    return kinds.namespace(kind.key)


def _url(kind: AuthenticatorType, name: str) -> str:
    return reverse(f"{namespace(kind)}:{name}")


def _page(request: HttpRequest, kind: AuthenticatorType, template: str, form=None, **context) -> HttpResponse:
    return render(request, f"authenticators/webauthn/{template}",
                  {"form": form, "kind": kind, "profile": ceremonies.profile(kind), **context},
                  status=400 if form is not None and form.errors else 200)


# --- registration -------------------------------------------------------------------------------


@recent_authentication_required
def register(request: HttpRequest, kind: AuthenticatorType) -> HttpResponse:
    """"Add other authenticators": what is needed and sole access; then straight to the ceremony."""
    if kind.model.objects.registered(request.user).exists():
        return journey_error(request, flows.already_registered(kind))
    form = SoleAccessForm(posted(request), label=ceremonies.profile(kind).sole_access)
    if request.method == "POST" and form.is_valid():
        try:
            flows.start_signed_in_registration(request, kind)
        except JourneyError as error:  # suspended or closed meanwhile
            return journey_error(request, error)
        return redirect(_url(kind, "ceremony"))
    return _page(request, kind, "register.html", form, signed_in=True)


def registration_link(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    """A link (via authenticators.views): sole access when not yet confirmed, then the e-mail address."""
    kind = registry.get_enabled(link.kind)
    try:
        flows.open_link(request, link, kind)
        if link.confirmed_at is None:
            form = SoleAccessForm(posted(request), label=ceremonies.profile(kind).sole_access)
            if request.method == "POST" and form.is_valid():
                link = link_flows.confirm_sole_access(request, link)
                return redirect("registration_link", link.token)
            return _page(request, kind, "register.html", form, signed_in=False, expires=link.expiry_in_words)
        return email_step(request, link, code_url=_url(kind, "code"))
    except JourneyError as error:
        return journey_error(request, error)


def _this_types_journey(request: HttpRequest, step: str, kind: AuthenticatorType) -> RegistrationLink:
    """This browser's journey for the URL's type at `step` (journey_step says why not)."""
    return flows.current_journey(request, kind, step)


@sensitive_post_parameters("code")
@journey_step(_this_types_journey, "otp")
def code(request: HttpRequest, link: RegistrationLink, kind: AuthenticatorType) -> HttpResponse:
    return code_step(request, link, next_step=flows.CEREMONY, next_url=_url(kind, "ceremony"),
                     resend_url=_url(kind, "resend"))


@require_POST
@journey_step(_this_types_journey, "otp", come_back_to=the_code_page)
def resend(request: HttpRequest, link: RegistrationLink, kind: AuthenticatorType) -> HttpResponse:
    return resend_step(request, link, code_url=_url(kind, "code"))


@journey_step(_this_types_journey, flows.CEREMONY)
def ceremony(request: HttpRequest, link: RegistrationLink, kind: AuthenticatorType) -> HttpResponse:
    """The browser's ceremony (navigator.credentials.create) and the server's check of its answer."""
    form = CeremonyForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            flows.complete_registration(request, link, kind, response=form.cleaned_data["credential"],
                                        client_error=form.cleaned_data["client_error"])
            return redirect(_url(kind, "done"))
        except ceremonies.Refused as refused:
            form.add_error(None, refused.message or f"Your {ceremonies.profile(kind).device} could not be "
                                                    "registered. Try again.")
    options = flows.registration_options(request, link, kind)
    return _page(request, kind, "ceremony.html", form, options=options)


def done(request: HttpRequest, kind: AuthenticatorType) -> HttpResponse:
    return _page(request, kind, "done.html")


# --- signing in ------------------------------------------------------------------------------------


def _signin_method(view):
    """signin.views.signin_method for the type the URL gives."""

    @wraps(view)
    def wrapper(request: HttpRequest, kind: AuthenticatorType) -> HttpResponse:
        return signin_method(kind)(lambda request: view(request, kind))(request)

    return wrapper


def _with_query(request: HttpRequest, url: str) -> str:
    query = request.GET.urlencode()
    return url + (f"?{query}" if query else "")


@_signin_method
def signin(request: HttpRequest, kind: AuthenticatorType) -> HttpResponse:
    """First step: the e-mail address (the same next page for every address)."""
    form = EmailForm(posted(request))
    if request.method == "POST" and form.is_valid():
        flows.remember_email(request, kind, form.cleaned_data["email"])
        return redirect(_with_query(request, _url(kind, "verify")))
    return _page(request, kind, "signin.html", form, choose_another=choose_another_url(request))


@_signin_method
def signin_verify(request: HttpRequest, kind: AuthenticatorType) -> HttpResponse:
    """Second step: the ceremony (navigator.credentials.get) with that address's credential."""
    email = flows.remembered_email(request, kind)
    if email is None:
        return redirect(signin_url(kind, requested_goto(request), request.GET.get("acr_values")))
    return _assertion_page(request, kind, email, "signin_verify.html")


@_signin_method
def passkey_signin(request: HttpRequest, kind: AuthenticatorType) -> HttpResponse:
    """A passkey: no e-mail address, the browser offers the person's passkeys by itself."""
    return _assertion_page(request, kind, None, "passkey_signin.html")


def _assertion_page(request: HttpRequest, kind: AuthenticatorType, email: str | None, template: str) -> HttpResponse:
    form = CeremonyForm(posted(request))
    if request.method == "POST" and form.is_valid():
        message = flows.finish_signin(request, kind, email=email, response=form.cleaned_data["credential"],
                                      client_error=form.cleaned_data["client_error"])
        if message is None:
            return redirect(after_signin_url(request))
        form.add_error(None, message)
    options = flows.signin_options(request, kind, email)
    return _page(request, kind, template, form, options=options, email=email,
                 another_email=_with_query(request, _url(kind, "signin")), choose_another=choose_another_url(request))
