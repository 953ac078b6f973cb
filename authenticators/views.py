from __future__ import annotations

from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.template.defaultfilters import pluralize
from django.utils.module_loading import import_string

from accounts.models import EmailOneTimePassword
from careid.http import posted
from signin.decorators import recent_authentication_required, sign_in_again

from . import email_steps, flows, registry
from .forms import EmailCodeForm, EmailForm
from .journeys import JourneyError, SignInAgain, TooManyFailures, UnknownLink
from .models import RegistrationLink

CODE_ERRORS = {
    EmailOneTimePassword.Result.WRONG: "The One Time Password is not correct. Check the email and try again.",
    EmailOneTimePassword.Result.EXPIRED: "The One Time Password has expired. Select 'Send a new code'.",
    EmailOneTimePassword.Result.USED: "This One Time Password has already been used.",
}


class SelectTypeForm(forms.Form):
    kind = forms.ChoiceField(
        label="Select authenticator type", widget=forms.RadioSelect,
        error_messages={"required": "Select an authenticator type", "invalid_choice": "Select an authenticator type"},
    )


@login_required
def select_type(request: HttpRequest) -> HttpResponse:
    """Select authenticator type: one of each type. A type already registered is listed as such, apart
    from the choices (a disabled radio could still be posted, and its faded hint was hard to read)."""
    registered_keys = {registered.kind.key for registered in registry.authenticators_of(request.user)}
    types = registry.types_for_registration()
    kinds = [kind for kind in types if kind.key not in registered_keys]
    registered = [kind for kind in types if kind.key in registered_keys]
    form = SelectTypeForm(posted(request))
    form.fields["kind"].choices = [(kind.key, kind.name) for kind in kinds]
    if request.method == "POST" and form.is_valid():
        return redirect(registry.get_enabled(form.cleaned_data["kind"]).enrol_url())
    return render(
        request,
        "authenticators/select_type.html",
        {"form": form, "kinds": kinds, "registered": registered},
        status=400 if form.errors else 200,
    )


@recent_authentication_required
def remove_own(request: HttpRequest, kind: str) -> HttpResponse:
    """Remove one of your authenticators (a page to confirm); the last one you can sign in with, the page
    says why not, and offers no button."""
    authenticator_type = registry.get(kind)
    if authenticator_type is None:
        raise Http404
    problem = cannot = None
    if request.method == "POST":
        try:
            ended = flows.remove_own_authenticator(request, kind=kind)
        except flows.LastAuthenticator as error:
            problem = cannot = str(error)
        else:
            if ended is None:
                raise Http404
            messages.success(request, f"{authenticator_type.name} has been removed from your profile."
                                      f"{_signed_out_elsewhere(ended)}")
            return redirect("profile")
    else:
        registered = registry.authenticators_of(request.user)
        if kind not in {item.kind.key for item in registered}:
            raise Http404
        if kind not in flows.removable_by_the_person(registered):
            cannot = str(flows.LastAuthenticator())
    return render(request, "authenticators/remove.html", {"kind": authenticator_type, "problem": problem,
                                                           "cannot": cannot}, status=400 if problem else 200)


def _signed_out_elsewhere(ended: int) -> str:
    if not ended:
        return ""
    return f" It had signed you in elsewhere: {ended} other session{pluralize(ended)} signed out."


def journey_error(request: HttpRequest, error: JourneyError) -> HttpResponse:
    return render(request, "authenticators/journey_error.html", {"error": error}, status=error.status)


def the_code_page(request: HttpRequest) -> str:
    """Where "Send a new code" (a POST beside the code page, at …/code/resend/) comes back to."""
    return request.path.removesuffix("resend/")


def journey_step(load, step: str, come_back_to=None):
    """For a journey step's view: `load(request, step, *the URL's arguments)` gives the link, or the
    page says why not (or, for a journey started signed in, sends the person to sign in again and back here,
    or to `come_back_to(request)` for a view that answers POST only)."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                return view(request, load(request, step, *args, **kwargs), *args, **kwargs)
            except SignInAgain:
                return sign_in_again(request, come_back_to(request) if come_back_to else None)
            except JourneyError as error:
                return journey_error(request, error)

        return wrapper

    return decorator


def registration_link(request: HttpRequest, token: str) -> HttpResponse:
    """Every registration link has this one address; its type's own view takes it from here."""
    link = RegistrationLink.objects.by_token(token)
    kind = registry.get_enabled(link.kind) if link else None
    if kind is None:
        return journey_error(request, flows.refuse(request, link, UnknownLink()))
    return import_string(kind.link_view)(request, link)


# --- the e-mail steps every registration from a link starts with (email_steps.py) ----------------
# Each type mounts them under its own URLs and says where the journey goes next.


def _form_page(request: HttpRequest, template: str, form, **context) -> HttpResponse:
    return render(request, template, {"form": form, **context}, status=400 if form.errors else 200)


def email_step(request: HttpRequest, link: RegistrationLink, *, code_url: str, on_start=None) -> HttpResponse:
    """"Enter your email address": the link is used and the One Time Password sent."""
    form = EmailForm(posted(request))
    if request.method == "POST" and form.is_valid():
        if email_steps.start_registration(request, link, form.cleaned_data["email"], on_start=on_start):
            return redirect(code_url)
        form.add_error("email", "Enter the email address registered to your NHS Care Identity")
    return _form_page(request, "authenticators/email.html", form)


def code_step(request: HttpRequest, link: RegistrationLink, *, next_step: str, next_url: str,
              resend_url: str) -> HttpResponse:
    """"Check your inbox": the One Time Password moves the journey on to `next_step`."""
    form = EmailCodeForm(posted(request))
    Result = EmailOneTimePassword.Result
    if request.method == "POST" and form.is_valid():
        result = email_steps.check_email_code(request, link, form.cleaned_data["code"], next_step=next_step)
        if result == Result.ACCEPTED:
            return redirect(next_url)
        if result == Result.EXHAUSTED:
            return journey_error(request, TooManyFailures())
        form.add_error("code", CODE_ERRORS[result])
    return _form_page(request, "authenticators/code.html", form, sent=request.GET.get("sent") == "1",
                      resend_refused=_resend_refused(link) if request.GET.get("resend") == "refused" else None,
                      resend_url=resend_url)


def _resend_refused(link: RegistrationLink) -> str | None:
    """Why 'Send a new code' sent none, as it stands when the code page is shown."""
    code = link.email_code
    if code is None or code.is_exhausted:
        return "A new code cannot be sent for this registration. Ask for a new registration link."
    if wait := code.resend_wait():
        return f"You can ask for a new code in {int(wait.total_seconds()) + 1} seconds."
    return None


def resend_step(request: HttpRequest, link: RegistrationLink, *, code_url: str) -> HttpResponse:
    """'Send a new code' (a POST): the failures so far still count. Either way back to the code page, whose
    form is where a code typed next must go (saying why, when none was sent)."""
    sent = email_steps.resend_code(request, link)
    return redirect(resolve_url(code_url) + ("?sent=1" if sent else "?resend=refused"))  # a URL name or a path
