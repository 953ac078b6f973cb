"""The registration authority back office: Care Identities in the Django admin.

Every change goes through accounts.flows (audit, notification, sessions); this module only
decides who may do what and shows it.
"""

from __future__ import annotations

from collections.abc import Callable

from allauth.account.models import EmailAddress
from allauth.usersessions.models import UserSession
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path, reverse

from audit.models import AuditEvent, Event, Outcome
from audit.record import record
from authenticators import flows as authenticator_flows
from authenticators import registry
from authenticators.journeys import NotActive
from authenticators.models import RegistrationLink
from careid.admin import DeclaredFiltersOnly
from oidc.models import Grant
from signin import flows as signin_flows
from signin.decorators import sign_in_again, sign_in_again_url
from signin.session import is_recent

from . import flows, outbox, roles
from .admin_forms import (
    SIGN_IN_AGAIN,
    AllowedEmailDomainForm,
    ChangeUserForm,
    CreateUserForm,
    IssueLinkForm,
    ReasonForm,
    RemoveAllowedEmailDomainForm,
)
from .models import AllowedEmailDomain, User

# E-mail addresses change only through careid's flows (verification, audit, notification):
# allauth's raw EmailAddress admin would bypass all three.
admin.site.unregister(EmailAddress)
# Sessions end only through careid's flows too (sign-out, suspension, closure: audited, the session
# store cleared with the record). allauth's UserSession admin showed session keys, edited or deleted
# rows without ending the session, and searched a username this User does not have; no RA role needs
# it, and who signed in, when and from where is in the audit trail.
admin.site.unregister(UserSession)


@admin.register(AllowedEmailDomain)
class AllowedEmailDomainAdmin(DeclaredFiltersOnly, admin.ModelAdmin):
    """Who may be given a Care Identity: every addition, change and removal is audited with its reason
    (SECURITY.md), so a domain leaves one at a time through the delete page, which asks it; there is no
    "Delete selected" action, which could not."""

    form = AllowedEmailDomainForm
    list_display = ["domain", "include_subdomains"]
    list_filter = ["include_subdomains"]
    search_fields = ["domain"]
    actions = None

    def save_model(self, request, obj, form, change) -> None:
        if not form.changed_fields:
            return  # saved unchanged: nothing done, nothing to record
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            details = {"before": {name: form.initial.get(name) for name in form.changed_fields}} if change else {}
            record(Event.ALLOW_LIST_CHANGED, request=request, domain=obj.domain, include_subdomains=obj.include_subdomains,
                   change="changed" if change else "added", reason=form.cleaned_data["reason"], **details)

    def delete_view(self, request, object_id, extra_context=None):
        """Django's "Are you sure?" page with a Reason box. Django's own view deletes on any POST, so this one
        checks the reason first; then Django's log entry, message and redirect, as its view gives them."""
        domain = self.get_object(request, unquote(object_id))
        if not self.has_delete_permission(request, domain):
            raise PermissionDenied
        if domain is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        form = RemoveAllowedEmailDomainForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            shown, pk = str(domain), domain.pk
            with transaction.atomic():
                self.log_deletions(request, [domain])
                record(Event.ALLOW_LIST_CHANGED, request=request, domain=domain.domain, change="removed",
                       reason=form.cleaned_data["reason"])
                domain.delete()
            return self.response_delete(request, shown, pk)
        deleted_objects, model_count, _perms_needed, _protected = self.get_deleted_objects([domain], request)
        response = self.render_delete_form(request, {
            **self.admin_site.each_context(request), "title": "Delete", "subtitle": None,
            "object_name": str(self.opts.verbose_name), "object": domain, "deleted_objects": deleted_objects,
            "model_count": dict(model_count).items(), "opts": self.opts, "app_label": self.opts.app_label,
            "preserved_filters": self.get_preserved_filters(request), "form": form, **(extra_context or {}),
        })
        response.status_code = 400 if form.errors else 200
        return response

    def delete_model(self, request, obj) -> None:
        raise PermissionDenied  # only through delete_view, with a reason

    def delete_queryset(self, request, queryset) -> None:
        raise PermissionDenied


class AuthenticatorTypeFilter(admin.SimpleListFilter):
    title = "registered authenticator"
    parameter_name = "authenticator"

    def lookups(self, request, model_admin):
        return [(kind.key, kind.name) for kind in registry.all_types()] + [("none", "None")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(*[~_registered(kind) for kind in registry.all_types()])
        for kind in registry.all_types():
            if self.value() == kind.key:
                return queryset.filter(_registered(kind))
        return queryset


class LockedFilter(admin.SimpleListFilter):
    title = "locked"
    parameter_name = "locked"

    def lookups(self, request, model_admin):
        return [("yes", "Locked"), ("no", "Not locked")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(locked_at__isnull=self.value() == "no")
        return queryset


class SignedInFilter(admin.SimpleListFilter):
    title = "signed in"
    parameter_name = "signed_in"

    def lookups(self, request, model_admin):
        return [("never", "Never signed in"), ("yes", "Has signed in")]

    def queryset(self, request, queryset):
        if self.value() in ("never", "yes"):
            return queryset.filter(last_login__isnull=self.value() == "never")
        return queryset


def _registered(kind) -> Exists:
    return Exists(kind.model.objects.filter(user=OuterRef("pk"), confirmed=True))


class UserChangeList(ChangeList):
    """The list marks the page's users with their registered types after fetching the page.

    An Exists() annotation on the list's queryset reads the same, but PostgreSQL plans it as a hashed
    subplan that reads every confirmed authenticator, whatever the LIMIT: ~30 ms a page at 100k users
    (bench/admin_lists.py). Looking up the 50 users of the page costs well under a millisecond.
    """

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        registered = registry.registered_types_of(self.result_list)
        for user in self.result_list:
            user.registered_types = registered.get(user.pk, [])


# name -> (permission, page title, button, flow); each needs a reason.
USER_ACTIONS = {
    "suspend": ("accounts.suspend_user", "Suspend this Care Identity", "Suspend", flows.suspend_user),
    "reinstate": ("accounts.suspend_user", "Reinstate this Care Identity", "Reinstate", flows.reinstate_user),
    "close": ("accounts.close_user", "Close this Care Identity", "Close the profile", flows.close_user),
    "unlock": ("accounts.unlock_user", "Unlock this Care Identity", "Unlock", flows.unlock_user),
    "sign_out": ("accounts.suspend_user", "Sign this Care Identity out everywhere", "Sign out everywhere",
                 flows.sign_out_everywhere),
}


@admin.register(User)
class UserAdmin(DeclaredFiltersOnly, admin.ModelAdmin):
    list_display = ["uid", "full_name", "email", "status", "authenticator_types", "last_login", "is_locked"]
    list_filter = ["status", AuthenticatorTypeFilter, LockedFilter, SignedInFilter]
    search_fields = ["=uid"]  # see get_search_results
    search_help_text = ("A 12-digit user ID, an email address (the Care Identity one or one verified on the profile), "
                        "an HR/ESR number, or the start of a first or last name")
    ordering = ["-id"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["suspend_selected", "reinstate_selected", "unlock_selected"]
    change_form_template = "admin/accounts/user/change_form.html"
    readonly_fields = ["uid", "external_id", "status", "date_joined", "last_login", "locked_at", "lock_reason"]

    # --- the list ---------------------------------------------------------------------------
    def get_changelist(self, request, **kwargs):
        return UserChangeList  # registered authenticator types looked up for the page only

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit() and len(term) == 12:
            return queryset.filter(uid=term), False
        if "@" in term:
            # Whoever holds the address: as their Care Identity e-mail or verified on their profile (each half an
            # exact match on its own index, as holding_email says).
            return queryset.filter(pk__in=User.objects.holding_email(term).values("pk")), False
        words = term.split()
        if len(words) >= 2:
            return queryset.filter(first_name__istartswith=words[0], last_name__istartswith=words[-1]), False
        return queryset.filter(
            Q(last_name__istartswith=term) | Q(first_name__istartswith=term) | Q(external_id=term)
        ), False

    @admin.display(description="Name", ordering="last_name")
    def full_name(self, user: User) -> str:
        return user.get_full_name()

    @admin.display(description="Authenticators")
    def authenticator_types(self, user: User) -> str:
        return ", ".join(kind.name for kind in user.registered_types) or "None"

    @admin.display(description="Locked", boolean=True)
    def is_locked(self, user: User) -> bool:
        return user.locked_at is not None

    # --- who may do what ----------------------------------------------------------------------
    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # profiles are closed, never deleted: a uid is never reused

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and roles.is_protected_from(obj, request.user):
            return False
        return super().has_change_permission(request, obj)

    def _refuse(self, request: HttpRequest, subject: User | None, what: str, **details) -> None:
        record(Event.RA_REFUSED, request=request, subject=subject, outcome=Outcome.FAILURE, attempted=what, **details)
        raise PermissionDenied

    def _sign_in_again(self, request: HttpRequest, subject: User, what: str) -> HttpResponse | None:
        """Issuing a link and removing an authenticator (as a new e-mail, see ChangeUserForm) can hand the
        profile to someone else: they need the RA's sign-in at most 5 minutes old, as the person's own
        journeys do, or whoever finds an RA's desk left signed in takes over anyone the RA may act on. The
        RA signs in again and comes back to the page (its address answers GET too); a POST is audited."""
        if is_recent(request):
            return None
        if request.method == "POST":
            record(Event.RA_REFUSED, request=request, subject=subject, outcome=Outcome.FAILURE, attempted=what,
                   reason=REAUTHENTICATION_NEEDED)
        return sign_in_again(request)

    # --- add and change -------------------------------------------------------------------------
    def get_fields(self, request, obj=None):
        if obj is None:
            return ["email", "title", "first_name", "last_name", "reason"]
        fields = ["uid", "external_id", "title", "first_name", "last_name", "email", "status", "locked_at", "lock_reason", "last_login",
                  "date_joined"]
        if roles.assignable_roles(request.user) and obj.pk != request.user.pk:
            fields.append("roles")
        return [*fields, "reason"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            return CreateUserForm
        actor = request.user
        stale = None if is_recent(request) else sign_in_again_url(request)

        class Form(ChangeUserForm):
            def __init__(self, *args, **kw):
                super().__init__(*args, actor=actor, sign_in_again_url=stale, **kw)

        return Form

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        target = self.get_object(request, object_id) if object_id and request.method == "POST" else None
        if request.method == "POST":
            crafted = sorted(name for name in roles.PRIVILEGE_FIELDS if name in request.POST)
            allowed_roles = set(roles.assignable_roles(request.user))
            asked_roles = set(request.POST.getlist("roles")) | set(request.POST.getlist("initial-roles"))  # as ticked, as shown
            if crafted or (asked_roles - allowed_roles) or (asked_roles and target is not None and target.pk == request.user.pk):
                self._refuse(request, target, "change privileges", fields=crafted, roles=sorted(asked_roles))
            if target is not None and roles.is_protected_from(target, request.user):
                self._refuse(request, target, "change a protected account")
        try:
            response = super().changeform_view(request, object_id, form_url, extra_context)
        except (ValidationError, IntegrityError):
            if object_id or request.method != "POST":
                raise
            # "Add user" saved twice at once (a double click), or the address given to someone else or its domain
            # taken off the allow list since the form checked it: invite_user refused, and everything was rolled
            # back. Checked again, the form says why, as it would have a moment later.
            response = super().changeform_view(request, object_id, form_url, extra_context)
        form = getattr((getattr(response, "context_data", None) or {}).get("adminform"), "form", None)
        if target is not None and form is not None and form.has_error("email", SIGN_IN_AGAIN):
            record(Event.RA_REFUSED, request=request, subject=target, outcome=Outcome.FAILURE,
                   attempted="change the email address", email=form.data.get("email", ""), reason=REAUTHENTICATION_NEEDED)
        return response

    def save_model(self, request, obj, form, change) -> None:
        data = form.cleaned_data
        if not change:
            user, _link = flows.create_user(actor=request.user, email=data["email"], first_name=data["first_name"],
                                            last_name=data["last_name"], title=data.get("title", ""),
                                            reason=data.get("reason", ""), request=request)
            obj.pk, obj.uid = user.pk, user.uid
            return
        current = User.objects.get(pk=obj.pk)
        details = ("title", "first_name", "last_name", "email")
        flows.change_user_details(user=current, actor=request.user, reason=data["reason"], request=request,
                                  changes={name: data[name] for name in details if name in form.changed_data})
        if "roles" in form.changed_data:
            shown, wanted = set(form.shown("roles")), set(data["roles"])
            flows.change_roles(user=current, actor=request.user, add=wanted - shown, remove=shown - wanted,
                               reason=data["reason"], assignable=set(roles.assignable_roles(request.user)),
                               request=request)

    def save_related(self, request, form, formsets, change) -> None:
        pass  # no related objects are edited here

    def log_addition(self, request, obj, message):
        return None  # the audit trail records it (user.created), with the reason and the actor

    def log_change(self, request, obj, message):
        return None

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and context["adminform"].form.is_bound:
            # A refused change: the form has put what the RA typed on `obj` (and keeps it in its fields); the
            # heading, title, breadcrumbs and the rest of the page are about the person as stored.
            obj = User.objects.get(pk=obj.pk)
            context.update(subtitle=str(obj), original=obj)
        if obj is not None:
            protected = roles.is_protected_from(obj, request.user)
            may_remove = request.user.has_perm("accounts.remove_authenticator") and not protected
            context["registered_authenticators"] = [
                (item, reverse("admin:accounts_user_remove_authenticator", args=[obj.pk, item.kind.key]) if may_remove else None)
                for item in registry.authenticators_of(obj)
            ]
            # The person's own trail, sessions, e-mails and services, for answering "who signed in, when, with
            # what"; not for the accounts an RA Agent may not touch (other RA staff's are the Auditors' and RA
            # Managers' to read).
            readable = request.user.has_perm("audit.view_all_auditevents") or not protected
            context["readable"] = readable
            context["services"] = Grant.objects.services_of(obj) if readable else None
            context["sessions"] = signin_flows.sessions_of(obj) if readable else None
            context["emails"] = [(email, outbox.label(email.kind))
                                 for email in obj.outgoing_emails.order_by("-created_at")[:20]] if readable else None
            context["recent_events"] = (
                AuditEvent.objects.filter(subject=obj).select_related("actor")[:50] if readable else None
            )
            context["ra_actions"] = [
                (reverse(f"admin:accounts_user_{name}", args=[obj.pk]), button)
                for name, (permission, _title, button, _flow) in USER_ACTIONS.items()
                if request.user.has_perm(permission) and not protected and _applies(name, obj, sessions=context["sessions"])
            ]
            if request.user.has_perm("accounts.issue_registration_link") and not protected and obj.is_active:
                context["ra_actions"].append((reverse("admin:accounts_user_link", args=[obj.pk]), "Issue a registration link"))
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- RA actions on one person -------------------------------------------------------------------
    def get_urls(self):
        own = [
            path(f"<int:pk>/{name}/", self.admin_site.admin_view(self._action_view), {"action": name},
                 name=f"accounts_user_{name}")
            for name in USER_ACTIONS
        ]
        own += [
            path("<int:pk>/link/", self.admin_site.admin_view(self.issue_link_view), name="accounts_user_link"),
            path("<int:pk>/authenticators/<str:kind>/remove/", self.admin_site.admin_view(self.remove_authenticator_view),
                 name="accounts_user_remove_authenticator"),
        ]
        return own + super().get_urls()

    def _target(self, request: HttpRequest, pk: int, permission: str, what: str) -> User:
        user = get_object_or_404(User, pk=pk)
        if not request.user.has_perm(permission) or roles.is_protected_from(user, request.user):
            if request.method == "POST":
                self._refuse(request, user, what)
            raise PermissionDenied
        return user

    def _page(self, request, user, title, form, button, extra=None) -> TemplateResponse:
        context = {**self.admin_site.each_context(request), "title": title, "subject": user, "form": form,
                   "button": button, "opts": self.model._meta, **(extra or {})}
        return TemplateResponse(request, "admin/careid/action_form.html", context, status=400 if form.errors else 200)

    def _action_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        permission, title, button, flow = USER_ACTIONS[action]
        user = self._target(request, pk, permission, action)
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid() and not _applies(action, user):
            form.add_error(None, f"{button} does not apply: this Care Identity is {user.get_status_display().lower()}"
                                 f"{' and not locked' if action == 'unlock' else ''}.")
        if request.method == "POST" and form.is_valid():
            try:
                flow(user=user, actor=request.user, reason=form.cleaned_data["reason"], request=request)
            except ValueError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"{button}: done for {user}.")
                return HttpResponseRedirect(reverse("admin:accounts_user_change", args=[user.pk]))
        return self._page(request, user, title, form, button)

    def issue_link_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        user = self._target(request, pk, "accounts.issue_registration_link", "issue a registration link")
        if stale := self._sign_in_again(request, user, "issue a registration link"):
            return stale
        form = IssueLinkForm(request.POST if request.method == "POST" else None, user=user)
        if request.method == "POST" and not user.is_active:
            self._refuse(request, user, "issue a registration link", reason=f"profile {user.status}")
        if request.method == "POST" and form.is_valid():
            try:
                link = authenticator_flows.issue_registration_link(
                    user=user, kind=form.cleaned_data["kind"], purpose=form.cleaned_data["purpose"], actor=request.user,
                    request=request, reason=form.cleaned_data["reason"],
                )
            except NotActive:  # suspended or closed (the status as committed, perhaps by another RA just now)
                self._refuse(request, user, "issue a registration link", reason=f"profile {user.status}")
            return TemplateResponse(request, "admin/careid/link_issued.html", {
                **self.admin_site.each_context(request), "title": "Registration link issued", "subject": user,
                "link": link, "shown": link.purpose == RegistrationLink.Purpose.PRESENCE,
                "kind": registry.get(link.kind), "opts": self.model._meta,
            })
        return self._page(request, user, "Issue a registration link", form, "Issue the link")

    def remove_authenticator_view(self, request: HttpRequest, pk: int, kind: str) -> HttpResponse:
        user = self._target(request, pk, "accounts.remove_authenticator", "remove an authenticator")
        authenticator_type = registry.get(kind)
        if authenticator_type is None or not authenticator_type.model.objects.filter(user=user).exists():
            raise PermissionDenied
        if stale := self._sign_in_again(request, user, "remove an authenticator"):
            return stale
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            ended = authenticator_flows.remove_authenticator(user=user, kind=kind, actor=request.user,
                                                             reason=form.cleaned_data["reason"], request=request) or 0
            messages.success(request, f"{authenticator_type.name} removed from {user}. {ended or 'No'} session"
                                      f"{pluralize(ended)} signed in with it {pluralize(ended, 'was,were')} ended.")
            return HttpResponseRedirect(reverse("admin:accounts_user_change", args=[user.pk]))
        return self._page(request, user, f"Remove {authenticator_type.name}", form, "Remove")

    # --- bulk actions (with a reason page in between) -----------------------------------------------------
    def _bulk(self, request, queryset, action: str):
        permission, title, button, flow = USER_ACTIONS[action]
        if not request.user.has_perm(permission):
            raise PermissionDenied
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, protected, not_applying = 0, [], []
            for user in queryset:
                if roles.is_protected_from(user, request.user):
                    record(Event.RA_REFUSED, request=request, subject=user, outcome=Outcome.FAILURE, attempted=action)
                    protected.append(user)
                    continue
                if not _applies(action, user):
                    not_applying.append(user)
                    continue
                try:
                    flow(user=user, actor=request.user, reason=form.cleaned_data["reason"], request=request)
                except ValueError:  # another RA changed their status since the list was read
                    not_applying.append(user)
                    continue
                done += 1
            self.message_user(request, f"{button}: done for {_care_identities(done)}.")
            # The RA selected these people: say who was left out and why, not only how many were done.
            for skipped, why in [(protected, _PROTECTED), (not_applying, _APPLIES[action][1])]:
                if skipped:
                    self.message_user(request, f"{button}: {_care_identities(len(skipped))} left as "
                                               f"{'it was' if len(skipped) == 1 else 'they were'} ({why}): "
                                               f"{_listed(skipped)}.", level=messages.WARNING)
            return None
        # "Select all N" on a list longer than a page: the page lists all N, so its form carries that choice on (with
        # the boxes ticked on the list's page alone, the action would be done for those only).
        select_across = forms.BooleanField(required=False).clean(request.POST.get("select_across"))
        context = {**self.admin_site.each_context(request), "title": f"{title} ({queryset.count()} selected)",
                   "form": form, "button": button, "opts": self.model._meta, "queryset": queryset, "action": f"{action}_selected",
                   "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME), "select_across": select_across}
        return TemplateResponse(request, "admin/careid/bulk_action_form.html", context, status=400 if form.errors else 200)

    @admin.action(description="Suspend selected Care Identities", permissions=["suspend"])
    def suspend_selected(self, request, queryset):
        return self._bulk(request, queryset, "suspend")

    @admin.action(description="Reinstate selected Care Identities", permissions=["suspend"])
    def reinstate_selected(self, request, queryset):
        return self._bulk(request, queryset, "reinstate")

    @admin.action(description="Unlock selected Care Identities", permissions=["unlock"])
    def unlock_selected(self, request, queryset):
        return self._bulk(request, queryset, "unlock")

    def has_suspend_permission(self, request) -> bool:
        return request.user.has_perm("accounts.suspend_user")

    def has_unlock_permission(self, request) -> bool:
        return request.user.has_perm("accounts.unlock_user")


# Why an action needing a recent sign-in was refused (as signing in again is in the person's own journeys).
REAUTHENTICATION_NEEDED = "re-authentication needed"

# Why a bulk action left someone as they were: roles.is_protected_from(), or _APPLIES's reason for the action.
_PROTECTED = "you may not act on your own Care Identity or on staff your role does not manage"


def _care_identities(count: int) -> str:
    return f"{count} Care {'Identity' if count == 1 else 'Identities'}"


def _listed(users: list[User], shown: int = 10) -> str:
    """'Name (UID), …' for a message: the first `shown`, then how many more."""
    names = ", ".join(str(user) for user in users[:shown])
    return names + (f" and {len(users) - shown} more" if len(users) > shown else "")


# Each action: whether it would change anything for a person (given their sessions, when already loaded),
# and, when it would not, why they are left as they were.
_APPLIES: dict[str, tuple[Callable[[User, list | None], bool], str]] = {
    "suspend": (lambda user, sessions: user.status == User.Status.ACTIVE, "not active"),
    "reinstate": (lambda user, sessions: user.status == User.Status.SUSPENDED, "not suspended"),
    "close": (lambda user, sessions: user.status != User.Status.CLOSED, "closed already"),
    "unlock": (lambda user, sessions: user.locked_at is not None or user.password_failures > 0
               or user.code_failures > 0, "not locked"),
    "sign_out": (lambda user, sessions: bool(sessions) if sessions is not None
                 else UserSession.objects.filter(user=user).exists(), "signed in nowhere"),
}


def _applies(action: str, user: User, *, sessions: list | None = None) -> bool:
    """Whether `action` would change anything for `user` (`sessions`: theirs, when already loaded)."""
    return _APPLIES[action][0](user, sessions)
