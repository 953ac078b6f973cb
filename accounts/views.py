from __future__ import annotations

from datetime import timedelta

from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from allauth.usersessions.models import UserSession
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from audit.models import AuditEvent, Event
from authenticators import registry
from authenticators.flows import removable_by_the_person
from careid.http import posted
from oidc.models import Grant
from signin import flows as signin_flows
from signin.decorators import recent_authentication_required

from . import flows
from .emails import NOT_ON_ALLOW_LIST
from .forms import AddEmailForm
from .models import AllowedEmailDomain, EmailTaken, User
from .notifications import verification_link_lifetime
from .roles import registration_authorities


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/home.html")


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    authenticators = registry.authenticators_of(request.user)
    return render(
        request,
        "accounts/profile.html",
        {
            "authenticators": authenticators,
            "removable": removable_by_the_person(authenticators),
            "email_addresses": EmailAddress.objects.filter(user=request.user).order_by("-primary", "email"),
        },
    )


@recent_authentication_required
def add_email(request: HttpRequest) -> HttpResponse:
    form = AddEmailForm(posted(request), user=request.user)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        try:
            if flows.add_email_address(request, email):
                messages.success(request, f"We have sent an email to {email}. Open the link in it to verify the address.")
                return redirect("profile")
            form.add_error("email", "You have added too many email addresses in the last hour. Try again later.")
        except ValidationError as error:  # added meanwhile (a double click)
            form.add_error("email", error)
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
        except ValidationError:  # its domain left the allow list since the link was sent
            return _not_allowed(request, confirmation.email_address)
        if address is None:
            return render(request, "accounts/confirm_email_invalid.html", status=409)
        return render(request, "accounts/confirm_email_done.html", {"address": address})
    if not AllowedEmailDomain.objects.allows(confirmation.email_address.email):
        return _not_allowed(request, confirmation.email_address)
    return render(request, "accounts/confirm_email.html", {"address": confirmation.email_address})


def _not_allowed(request: HttpRequest, address: EmailAddress) -> HttpResponse:
    """The page of a verification link whose address's domain is no longer on the allow list (no button): the
    words "Send a new link" refuses it with."""
    return render(request, "accounts/confirm_email_not_allowed.html",
                  {"address": address, "problem": NOT_ON_ALLOW_LIST}, status=409)


def allowed_domains(request: HttpRequest) -> HttpResponse:
    """The e-mail allow list, public: people check an address before adding it."""
    return render(request, "pages/allowed_domains.html", {"domains": AllowedEmailDomain.objects.all()})


def page(template: str):
    def view(request: HttpRequest) -> HttpResponse:
        return render(request, template)

    return view


# --- where you are signed in, your activity, your addresses -------------------------------------------


@login_required
def sessions(request: HttpRequest) -> HttpResponse:
    """Where you are signed in: each session, with the services it signed into; sign one or all others out."""
    if request.method == "POST":
        if request.POST.get("session") == "others":
            ended = signin_flows.end_other_sessions(request, reason="signed out from another session")
            messages.success(request, f"Signed out of {ended} other session{'s' if ended != 1 else ''}.")
        else:
            session = get_object_or_404(UserSession, pk=_int(request.POST.get("session")), user=request.user)
            if session.session_key == request.session.session_key:
                messages.info(request, "That is this session: to end it, select Sign out at the top of the page.")
                return redirect("sessions")
            signin_flows.end_session(user=request.user, session=session, actor=request.user,
                                     reason="signed out from another session", request=request)
            messages.success(request, "That session is signed out. The browser will be asked to sign in again.")
        return redirect("sessions")
    listed = signin_flows.sessions_of(request.user)
    services = Grant.objects.services_by_session(request.user, [session.session_key for session in listed])
    rows = [(session, session.session_key == request.session.session_key, services.get(session.session_key, []))
            for session in listed]
    return render(request, "accounts/sessions.html", {"rows": rows})


ACTIVITY_DAYS = 90


_AT_THE_SIGNIN_PAGES = frozenset(event.value for event in (
    Event.SIGNIN_SUCCEEDED, Event.SIGNIN_FAILED, Event.SIGNIN_THROTTLED, Event.ACCOUNT_LOCKED, Event.OTP_FAILED,
    Event.OTP_SENT, Event.PASSWORD_RESET_STARTED, Event.PASSWORD_RESET))  # OTP_SENT: a reset's "Send a new code"


@login_required
def activity(request: HttpRequest) -> HttpResponse:
    """Your activity: your own audit events of the last 90 days, newest first, 25 a page."""
    since = timezone.now() - timedelta(days=ACTIVITY_DAYS)
    events = (AuditEvent.objects.filter(subject=request.user, at__gte=since).order_by("-at", "-id")
              # An address added while it was another's reads as any added address (flows.add_email_address).
              .exclude(event=Event.EMAIL_REFUSED, details__via=flows.ADDED_UNVERIFIED))
    page = Paginator(events, 25).get_page(request.GET.get("page"))
    methods = {kind.key: kind.signin_label for kind in registry.all_types()}
    # "By your registration authority" only for those who act as one: an event's actor is whoever was signed
    # in at the browser (record() takes request.user), a colleague at a shared PC too; never their name.
    # Nor for what anyone does at the sign-in and reset pages (a wrong password, a lock, a reset asked for):
    # whoever was signed in at that browser, an RA at a shared PC too, did not do it as an RA.
    others = {event.actor_id for event in page if event.event not in _AT_THE_SIGNIN_PAGES} - {None, request.user.pk}
    by_ra = set(registration_authorities(User.objects.filter(pk__in=others)).values_list("pk", flat=True)) if others else set()
    rows = [(event, methods.get(event.method, event.method),
             event.actor_id in by_ra and event.event not in _AT_THE_SIGNIN_PAGES) for event in page]
    return render(request, "accounts/activity.html", {"page": page, "rows": rows, "days": ACTIVITY_DAYS})


@recent_authentication_required
def email_address(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Remove an address, send a new link to verify it, or make a verified one your Care Identity email address
    (a page to confirm)."""
    address = get_object_or_404(EmailAddress, pk=pk, user=request.user)
    problem = None
    if request.method == "POST":
        try:
            if action == "remove":
                flows.remove_email_address(request, address=address)
                messages.success(request, f"{address.email} has been removed from your profile.")
            elif action == "verify":
                if not flows.send_verification_link(request, address=address):
                    raise ValueError("You have asked for too many emails in the last hour. Try again later.")
                messages.success(request, f"We have sent an email to {address.email}. Open the link in it to verify "
                                          f"the address.")
            else:
                flows.make_care_identity_email(request, address=address)
                messages.success(request, f"{address.email} is now your Care Identity email address. Use it to sign in.")
            return redirect("profile")
        except (ValueError, ValidationError) as error:
            problem = "; ".join(getattr(error, "messages", [str(error)]))
        except EmailTaken:
            problem = "This email address cannot be your Care Identity email address. Contact your registration authority."
    return render(request, "accounts/email_address.html", {"address": address, "action": action, "problem": problem,
                                                           "link_lifetime": verification_link_lifetime()},
                  status=400 if problem else 200)


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
