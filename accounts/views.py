from __future__ import annotations

from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from authenticators import registry
from careid.http import posted
from signin.decorators import recent_authentication_required

from . import flows
from .forms import AddEmailForm
from .models import EmailTaken


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
        try:
            address = flows.confirm_email_address(request, confirmation)
        except EmailTaken:  # another Care Identity's since the link was sent
            return render(request, "accounts/confirm_email_in_use.html", status=409)
        if address is None:
            return render(request, "accounts/confirm_email_invalid.html", status=409)
        return render(request, "accounts/confirm_email_done.html", {"address": address})
    return render(request, "accounts/confirm_email.html", {"address": confirmation.email_address})


def page(template: str):
    def view(request: HttpRequest) -> HttpResponse:
        return render(request, template)

    return view
