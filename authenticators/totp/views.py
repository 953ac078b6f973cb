from __future__ import annotations

from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.decorators import recent_authentication_required
from accounts.models import EmailOneTimePassword
from accounts.redirects import safe_goto
from accounts.views import signin_url
from authenticators.flows import issue_registration_link
from authenticators.journeys import TOO_MANY_FAILURES, JourneyError
from authenticators.models import RegistrationLink
from careid.http import posted

from . import codes, flows
from .forms import ConfirmForm, EmailCodeForm, EmailForm, PasswordForm, PasswordSignInForm, TokenForm
from .kind import KIND
from .models import AuthenticatorApp


def _journey_error(request: HttpRequest, error: JourneyError) -> HttpResponse:
    return render(request, "authenticators/journey_error.html", {"error": error}, status=error.status)


def journey_step(step: str):
    """Load this browser's registration at `step`; any other state gets a clear page."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                link = flows.current_journey(request, step)
                return view(request, link, *args, **kwargs)
            except JourneyError as error:
                return _journey_error(request, error)

        return wrapper

    return decorator


def _page(request, template, context, form=None):
    return render(request, f"authenticators/totp/{template}", {"form": form, **context},
                  status=400 if form is not None and form.errors else 200)


@recent_authentication_required
def register(request: HttpRequest) -> HttpResponse:
    """Register Microsoft Authenticator with your Care Identity (signed in)."""
    if AuthenticatorApp.objects.filter(user=request.user, confirmed=True).exists():
        return _journey_error(request, flows.ALREADY_REGISTERED)
    form = ConfirmForm(posted(request))
    if request.method == "POST" and form.is_valid():
        link = issue_registration_link(
            user=request.user, kind=KIND.key, purpose=RegistrationLink.Purpose.PRESENCE, actor=request.user,
            request=request, confirmed=True,
        )
        return redirect("registration_link", link.token)
    return _page(request, "register.html", {}, form)


def registration_link(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    """The link itself (via authenticators.views): confirm sole access when not yet done, then the e-mail address."""
    token = link.token
    try:
        flows.open_link(request, link)
        if link.confirmed_at is None:
            form = ConfirmForm(posted(request))
            if request.method == "POST" and form.is_valid():
                flows.confirm_sole_access(request, link)
                return redirect("registration_link", token)
            return _page(request, "register.html", {"link": link}, form)
        form = EmailForm(posted(request))
        if request.method == "POST" and form.is_valid():
            if flows.start_registration(request, link, form.cleaned_data["email"]):
                return redirect("totp:code")
            form.add_error("email", "Enter the email address registered to your NHS Care Identity")
        return _page(request, "email.html", {"link": link}, form)
    except JourneyError as error:
        return _journey_error(request, error)


@journey_step("otp")
def code(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    form = EmailCodeForm(posted(request))
    Result = EmailOneTimePassword.Result
    if request.method == "POST" and form.is_valid():
        result = flows.check_email_code(request, link, form.cleaned_data["code"])
        if result == Result.ACCEPTED:
            return redirect("totp:password")
        if result == Result.EXHAUSTED:
            return _journey_error(request, TOO_MANY_FAILURES)
        form.add_error("code", {
            Result.WRONG: "The One Time Password is not correct. Check the email and try again.",
            Result.EXPIRED: "The One Time Password has expired. Select 'Send a new code'.",
            Result.USED: "This One Time Password has already been used.",
        }[result])
    return _page(request, "code.html", {"link": link, "sent": request.GET.get("sent") == "1"}, form)


@require_POST
@journey_step("otp")
def resend(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    if flows.resend_code(request, link):
        return redirect(reverse("totp:code") + "?sent=1")
    wait = link.email_code.resend_wait() if link.email_code else None
    form = EmailCodeForm()
    seconds = int(wait.total_seconds()) + 1 if wait else 0
    message = (
        f"You can ask for a new code in {seconds} seconds." if seconds
        else "A new code cannot be sent for this registration. Ask for a new registration link."
    )
    return _page(request, "code.html", {"link": link, "resend_refused": message}, form)


@journey_step("password")
def password(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    form = PasswordForm(posted(request), user=link.user)
    if request.method == "POST" and form.is_valid():
        flows.choose_password(request, link, form.cleaned_data["password1"])
        return redirect("totp:qr")
    return _page(request, "password.html", {"link": link}, form)


@journey_step("qr")
def qr(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    if request.method == "POST":
        flows.continue_to_verify(request, link)
        return redirect("totp:verify")
    uri = codes.provisioning_uri(link.pending_secret, link.user.email)
    return _page(request, "qr.html", {"qr_svg": codes.qr_svg(uri), "secret": codes.grouped(link.pending_secret),
                                       "account": link.user.email})


@journey_step("verify")
def verify(request: HttpRequest, link: RegistrationLink) -> HttpResponse:
    form = TokenForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            if flows.complete_registration(request, link, form.cleaned_data["token"]):
                return redirect("totp:done")
        except JourneyError as error:
            return _journey_error(request, error)
        form.add_error("token", "The code is not correct. Enter the latest 6-digit code from your authenticator app.")
    return _page(request, "verify.html", {"link": link}, form)


def done(request: HttpRequest) -> HttpResponse:
    return render(request, "authenticators/totp/done.html")


# --- sign in -----------------------------------------------------------------------------


def _choose_another(request: HttpRequest) -> str:
    query = request.GET.copy()
    query["choose"] = "1"
    return f"{reverse('login')}?{query.urlencode()}"


def signin(request: HttpRequest) -> HttpResponse:
    """Authenticator app, first step: e-mail address and password."""
    form = PasswordSignInForm(posted(request))
    if request.method == "POST" and form.is_valid():
        message = flows.start_signin(request, email=form.cleaned_data["email"], password=form.cleaned_data["password"])
        if message is None:
            return redirect(signin_url_for_code(request))
        form.add_error(None, message)
    return render(request, "authenticators/totp/signin.html",
                  {"form": form, "choose_another": _choose_another(request)},
                  status=400 if form.errors else 200)


def signin_url_for_code(request: HttpRequest) -> str:
    query = request.GET.urlencode()
    return reverse("totp:signin_code") + (f"?{query}" if query else "")


def signin_code(request: HttpRequest) -> HttpResponse:
    """Authenticator app, second step: the 6-digit code."""
    user = flows.pending_signin_user(request)
    if user is None:
        return redirect(signin_url(KIND, safe_goto(request.GET.get("goto")), request.GET.get("acr_values")))
    form = TokenForm(posted(request))
    if request.method == "POST" and form.is_valid():
        message = flows.finish_signin(request, user, form.cleaned_data["token"])
        if message is None:
            return redirect(safe_goto(request.GET.get("goto")) or "home")
        form.add_error(None if flows.pending_signin_user(request) is None else "token", message)
    return render(request, "authenticators/totp/signin_code.html",
                  {"form": form, "choose_another": _choose_another(request)},
                  status=400 if form.errors else 200)
