from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts.models import EmailOneTimePassword
from authenticators import flows as link_flows
from authenticators.journeys import JourneyError
from authenticators.models import RegistrationLink
from authenticators.views import (
    CODE_ERRORS,
    code_step,
    email_step,
    journey_error,
    journey_step,
    resend_step,
    the_code_page,
)
from careid.http import posted
from signin.decorators import recent_authentication_required
from signin.redirects import safe_goto, url_with_query
from signin.views import after_signin_url, choose_another_url, requested_goto, signin_method, signin_url

from . import codes, flows
from .forms import ConfirmForm, EmailCodeForm, EmailForm, PasswordForm, PasswordSignInForm, TokenForm
from .kind import KIND
from .models import AuthenticatorApp


def _page(request: HttpRequest, template: str, context: dict, form=None) -> HttpResponse:
    return render(request, f"authenticators/totp/{template}", {"form": form, **context},
                  status=400 if form is not None and form.errors else 200)


@recent_authentication_required
def register(request: HttpRequest) -> HttpResponse:
    """Register Microsoft Authenticator with your Care Identity (signed in): issues a 3-minute link."""
    if AuthenticatorApp.objects.registered(request.user).exists():
        return journey_error(request, flows.AppAlreadyRegistered())
    form = ConfirmForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            link = link_flows.issue_registration_link(
                user=request.user, kind=KIND.key, purpose=RegistrationLink.Purpose.PRESENCE, actor=request.user,
                request=request, confirmed=True,
            )
        except JourneyError as error:  # suspended or closed by an RA while this request was under way
            return journey_error(request, error)
        return redirect("registration_link", link.token)
    return _page(request, "register.html", {"expires": RegistrationLink.issued_now_expiry()}, form)


def registration_link(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    """A link (via authenticators.views): confirm sole access when not yet done, then the e-mail address."""
    try:
        flows.open_link(request, link)
        if link.confirmed_at is None:
            form = ConfirmForm(posted(request))
            if request.method == "POST" and form.is_valid():
                link = link_flows.confirm_sole_access(request, link)
                return redirect("registration_link", link.token)
            return _page(request, "register.html", {"expires": link.expiry_in_words}, form)
        return email_step(request, link, code_url="totp:code", on_start=flows.start_journey_state)
    except JourneyError as error:
        return journey_error(request, error)


@sensitive_post_parameters("code")
@journey_step(flows.current_journey, "otp")
def code(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    return code_step(request, link, next_step="password", next_url="totp:password", resend_url=reverse("totp:resend"))


@require_POST
@journey_step(flows.current_journey, "otp", come_back_to=the_code_page)
def resend(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    return resend_step(request, link, code_url="totp:code")


@sensitive_post_parameters("password1", "password2")
@journey_step(flows.current_journey, "password")
def password(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    form = PasswordForm(posted(request), user=link.user)
    if request.method == "POST":
        if form.is_valid():
            flows.choose_password(request, link, form.cleaned_data["password1"])
            return redirect("totp:qr")
        flows.refuse_password(request, link, [error.code or "invalid" for errors in form.errors.as_data().values()
                                              for error in errors])
    return _page(request, "password.html", {}, form)


@journey_step(flows.current_journey, "qr")
def qr(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    if request.method == "POST":
        flows.continue_to_verify(request, link)
        return redirect("totp:verify")
    secret = link.app_registration.pending_secret
    uri = codes.provisioning_uri(secret, link.user.email)
    return _page(request, "qr.html", {"qr_svg": codes.qr_svg(uri), "secret": codes.grouped(secret),
                                       "account": link.user.email})


@sensitive_post_parameters("token")
@journey_step(flows.current_journey, "verify")
def verify(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    form = TokenForm(posted(request))
    if request.method == "POST" and form.is_valid():
        if flows.complete_registration(request, link, form.cleaned_data["token"]):
            return redirect("totp:done")
        form.add_error("token", "The code is not correct. Enter the latest 6-digit code from your authenticator app.")
    return _page(request, "verify.html", {}, form)


def done(request: HttpRequest) -> HttpResponse:
    return render(request, "authenticators/totp/done.html")


# --- sign in -----------------------------------------------------------------------------


@sensitive_post_parameters("password")
@signin_method(KIND)
def signin(request: HttpRequest) -> HttpResponse:
    """Authenticator app, first step: e-mail address and password."""
    form = PasswordSignInForm(posted(request))
    if request.method == "POST" and form.is_valid():
        message = flows.start_signin(request, email=form.cleaned_data["email"], password=form.cleaned_data["password"])
        if message is None:
            query = request.GET.urlencode()
            return redirect(reverse("totp:signin_code") + (f"?{query}" if query else ""))
        form.add_error(None, message)
    return render(request, "authenticators/totp/signin.html",
                  {"form": form, "choose_another": choose_another_url(request),
                   "forgotten_password": url_with_query(reverse("totp:forgotten_password"),
                                                        goto=requested_goto(request))},
                  status=400 if form.errors else 200)


@sensitive_post_parameters("token")
@signin_method(KIND)
def signin_code(request: HttpRequest) -> HttpResponse:
    """Authenticator app, second step: the 6-digit code."""
    if not flows.signin_pending(request):
        return redirect(signin_url(KIND, requested_goto(request), request.GET.get("acr_values")))
    form = TokenForm(posted(request))
    if request.method == "POST" and form.is_valid():
        user = flows.pending_signin_user(request)
        if user is None:  # gone since the password step
            return redirect(signin_url(KIND, requested_goto(request), request.GET.get("acr_values")))
        message = flows.finish_signin(request, user, form.cleaned_data["token"])
        if message is None:
            return redirect(after_signin_url(request))
        form.add_error("token" if flows.signin_pending(request) else None, message)
    return render(request, "authenticators/totp/signin_code.html",
                  {"form": form, "choose_another": choose_another_url(request)},
                  status=400 if form.errors else 200)


# --- forgotten password --------------------------------------------------------------------------


def reset_step(step: str):
    """For a reset step's view: this browser's reset journey at `step`, or back to its start."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            reset = flows.PasswordReset.of(request, step)
            if reset is None:  # back to the start, still on the way to where the person was going
                return redirect(url_with_query(reverse("totp:forgotten_password"), expired="1",
                                               goto=safe_goto(flows.PasswordReset.goto_of(request))))
            return view(request, reset, *args, **kwargs)

        return wrapper

    return decorator


def forgotten_password(request: HttpRequest) -> HttpResponse:
    """Forgotten your password? The e-mail address registered to the Care Identity."""
    form = EmailForm(posted(request))
    if request.method == "POST" and form.is_valid():
        if flows.start_password_reset(request, form.cleaned_data["email"], goto=requested_goto(request) or ""):
            return redirect("totp:reset_code")
        form.add_error(None, "You have asked to reset a password too many times. Try again in an hour.")
    return _page(request, "forgotten_password.html", {"expired": request.GET.get("expired") == "1"}, form)


@sensitive_post_parameters("code")
@reset_step("otp")
def reset_code(request: HttpRequest, reset: flows.PasswordReset) -> HttpResponse:
    form = EmailCodeForm(posted(request))
    Result = EmailOneTimePassword.Result
    if request.method == "POST" and form.is_valid():
        result = flows.check_reset_code(request, reset, form.cleaned_data["code"])
        if result == Result.ACCEPTED:
            return redirect("totp:reset_app")
        if result == Result.EXHAUSTED:
            return _reset_stopped(request, reset)
        form.add_error("code", CODE_ERRORS[result])
    return render(request, "authenticators/code.html", {
        "form": form, "sent": request.GET.get("sent") == "1", "resend_url": reverse("totp:reset_resend"), "purpose": "reset",
        "resend_refused": ("You can ask for a new code once a minute. Wait, then try again."
                           if request.GET.get("resend") == "refused" else None),
    }, status=400 if form.errors else 200)


@require_POST
@reset_step("otp")
def reset_resend(request: HttpRequest, reset: flows.PasswordReset) -> HttpResponse:
    sent = flows.resend_reset_code(request, reset)
    return redirect(reverse("totp:reset_code") + ("?sent=1" if sent else "?resend=refused"))


@sensitive_post_parameters("token")
@reset_step("app")
def reset_app(request: HttpRequest, reset: flows.PasswordReset) -> HttpResponse:
    form = TokenForm(posted(request))
    if request.method == "POST" and form.is_valid():
        message = flows.check_reset_app_code(request, reset, form.cleaned_data["token"])
        if message is None:
            return redirect("totp:reset_password")
        form.add_error("token", message)
    return _page(request, "verify.html", {}, form)  # the same page as registration's last step


@sensitive_post_parameters("password1", "password2")
@reset_step("password")
def reset_password(request: HttpRequest, reset: flows.PasswordReset) -> HttpResponse:
    user = reset.load_user()
    form = PasswordForm(posted(request), user=user)
    if request.method == "POST" and form.is_valid():
        if flows.finish_password_reset(request, reset, form.cleaned_data["password1"]) is None:
            return _reset_stopped(request, reset, cannot_go_on=True)
        return redirect(url_with_query(reverse("totp:reset_done"), goto=reset.goto))
    return _page(request, "password.html", {"purpose": "reset"}, form)


def _reset_stopped(request: HttpRequest, reset: flows.PasswordReset, *, cannot_go_on: bool = False) -> HttpResponse:
    """The reset has stopped; "Start again" keeps where the person was going."""
    return _page(request, "reset_stopped.html", {
        "cannot_go_on": cannot_go_on,
        "start_again": url_with_query(reverse("totp:forgotten_password"), goto=reset.goto)})


def reset_done(request: HttpRequest) -> HttpResponse:
    """"Sign in" leads back to the service the person came from, if any (checked again: it is the query's)."""
    return render(request, "authenticators/totp/reset_done.html",
                  {"sign_in": url_with_query(reverse("login"), goto=requested_goto(request))})


@sensitive_post_parameters("password1", "password2")
@recent_authentication_required
def change_password(request: HttpRequest) -> HttpResponse:
    """Change the password used with the Authenticator app (a recent sign-in first)."""
    form = PasswordForm(posted(request), user=request.user)
    if request.method == "POST" and form.is_valid():
        ended = flows.change_password(request, form.cleaned_data["password1"])
        messages.success(request, "Your password has been changed." + (
            f" {ended} other session{'s' if ended != 1 else ''} signed out." if ended else ""))
        return redirect("profile")
    return _page(request, "password.html", {"purpose": "change"}, form)
