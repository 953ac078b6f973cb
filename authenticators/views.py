from __future__ import annotations

from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.module_loading import import_string

from careid.http import posted
from signin.decorators import recent_authentication_required

from . import flows, registry
from .journeys import JourneyError, UnknownLink
from .models import RegistrationLink


class SelectTypeForm(forms.Form):
    kind = forms.ChoiceField(
        label="Select authenticator type", widget=forms.RadioSelect,
        error_messages={"required": "Select an authenticator type", "invalid_choice": "Select an authenticator type"},
    )


@login_required
def select_type(request: HttpRequest) -> HttpResponse:
    """Select authenticator type: one of each type, registered ones shown as such."""
    registered = {registered.kind.key for registered in registry.authenticators_of(request.user)}
    kinds = registry.enabled_types()
    form = SelectTypeForm(posted(request))
    form.fields["kind"].choices = [(kind.key, kind.name) for kind in kinds if kind.key not in registered]
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
    """Remove one of your authenticators (a page to confirm; never the last one)."""
    authenticator_type = registry.get(kind)
    registered = {item.kind.key for item in registry.authenticators_of(request.user)}
    if authenticator_type is None or kind not in registered:
        raise Http404
    problem = None
    if request.method == "POST":
        try:
            flows.remove_own_authenticator(request, kind=kind)
        except flows.LastAuthenticator as error:
            problem = str(error)
        else:
            messages.success(request, f"{authenticator_type.name} has been removed from your profile.")
            return redirect("profile")
    return render(request, "authenticators/remove.html", {"kind": authenticator_type, "problem": problem},
                  status=400 if problem else 200)


def journey_error(request: HttpRequest, error: JourneyError) -> HttpResponse:
    return render(request, "authenticators/journey_error.html", {"error": error}, status=error.status)


def journey_step(load, step: str):
    """For a journey step's view: `load(request, step)` gives the link, or the page says why not."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                return view(request, load(request, step), *args, **kwargs)
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
