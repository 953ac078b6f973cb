from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ChangeList
from django.core import checks
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, QueryDict
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.text import capfirst

# Where Django itself reports a refused lookup (SuspiciousOperation), so monitoring sees both alike.
_security_log = logging.getLogger("django.security.DisallowedModelAdminLookup")


class CareIdAdminSite(admin.AdminSite):
    """The RA back office: staff signed in through CIS2 Authentication at AAL2 or higher only."""

    site_header = "NHS Care Identity administration"
    site_title = "NHS Care Identity"
    index_title = "Registration authority"

    def has_permission(self, request: HttpRequest) -> bool:
        from signin.session import current

        auth = current(request)
        return super().has_permission(request) and auth is not None and auth.aal >= 2

    def login(self, request: HttpRequest, extra_context=None):
        from signin.views import admin_login

        return admin_login(request)

    def logout(self, request: HttpRequest, extra_context=None):
        """The admin's sign-out is careid's: audited, and the session record ends with it."""
        from signin.views import signout

        return signout(request)  # a GET asks first; only the POST signs out

    def password_change(self, request: HttpRequest, extra_context=None):
        from django.http import Http404

        raise Http404

    def password_change_done(self, request: HttpRequest, extra_context=None):
        from django.http import Http404

        raise Http404


class InputFilter(admin.SimpleListFilter, metaclass=ABCMeta):
    """A box to type a value in rather than a list to pick from (admin/careid/input_filter.html).

    parse() turns the typed text into what narrow() applies, or raises ValueError with the message shown
    beside the box. A value that cannot be parsed matches nothing: the list must never look filtered
    while it is not, and the text never reaches the database.
    """

    template = "admin/careid/input_filter.html"
    input_type = "text"
    label = ""

    def __init__(self, request, params, model, model_admin) -> None:
        super().__init__(request, params, model, model_admin)
        self.error = ""
        self.parsed: Any = None
        text = (self.value() or "").strip()
        if text:
            try:
                self.parsed = self.parse(text)
            except ValueError as error:
                self.error = str(error)

    @abstractmethod
    def parse(self, text: str) -> Any:
        """The typed text as the value narrow() applies; ValueError with the message to show otherwise."""

    @abstractmethod
    def narrow(self, queryset: QuerySet, value: Any) -> QuerySet:
        """The queryset narrowed to the parsed value."""

    def queryset(self, request, queryset):
        if self.error:
            return queryset.none()
        return queryset if self.parsed is None else self.narrow(queryset, self.parsed)

    def lookups(self, request, model_admin):
        return [("", "")]  # the box, not a list; Django needs something to show the filter

    def choices(self, changelist):
        # The box submits with the other filters kept, as hidden fields.
        others = QueryDict(changelist.get_query_string(remove=[self.parameter_name, "p"]).lstrip("?"))
        yield {"hidden": [(name, value) for name, values in others.lists() for value in values],
               "input_type": self.input_type, "label": self.label, "error": self.error}


class DeclaredFiltersOnly:
    """A ModelAdmin mixin: the list is filtered only through its declared filters, by values they offer.

    Django's changelist otherwise applies any lookup from the query string: `?password__startswith=…`
    answers one character of a password hash at a time, and `?status__regex=(` or a NUL byte reach
    PostgreSQL as errors. Here a parameter must be one a declared filter sets (`<field>__exact` for a
    field with choices or a boolean, a SimpleListFilter's parameter_name) with a value that filter offers;
    an InputFilter checks the text typed in its box itself. Anything else is refused with a 400 page
    before a query is built.
    """

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Raises rather than answering False, so that the refusal can say what was wrong.
        offered = self._offered_values(request)
        if lookup not in offered:
            raise DisallowedModelAdminLookup(f"This list has no filter called {_shown(lookup)}.")
        values, title = offered[lookup]
        if values is not None and value not in values:
            raise DisallowedModelAdminLookup(f"The {title} filter has no choice {_shown(value)}.")
        return True

    def _offered_values(self, request: HttpRequest | None) -> dict[str, tuple[frozenset[str] | None, str]]:
        """parameter -> (the values its filter offers, or None for a typed box; the filter's title)."""
        offered: dict[str, tuple[frozenset[str] | None, str]] = {}
        for item in self.get_list_filter(request):
            if isinstance(item, str):
                field = get_fields_from_path(self.model, item)[-1]
                offered[f"{item}__exact"] = (_field_values(field), str(field.verbose_name))
            elif issubclass(item, InputFilter):
                offered[item.parameter_name] = (None, str(item.title))
            else:
                spec = item(request, {}, self.model, self)
                offered[item.parameter_name] = (frozenset(str(key) for key, _ in spec.lookup_choices), str(item.title))
        return offered

    def changelist_view(self, request: HttpRequest, extra_context=None):
        try:
            response = super().changelist_view(request, extra_context)
        except DisallowedModelAdminLookup as refused:
            lookup_refused(request, refused)
            return filters_refused(request, self, title="This list cannot be filtered that way")
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        problems = filter_problems(changelist) if changelist is not None else []
        for problem in problems:
            messages.error(request, problem)
        if problems:
            response.status_code = 400
        return response

    def check(self, **kwargs) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        for item in self.list_filter:
            if isinstance(item, str):
                field = get_fields_from_path(self.model, item)[-1]
                supported = bool(field.choices) or isinstance(field, models.BooleanField)
            else:
                supported = isinstance(item, type) and issubclass(item, admin.SimpleListFilter)
            if not supported:
                errors.append(checks.Error(
                    f"{item!r}: DeclaredFiltersOnly takes fields with choices, booleans and SimpleListFilters",
                    obj=self.__class__, id="careid.E001"))
        return errors


def _field_values(field: models.Field) -> frozenset[str]:
    """The values Django's filter for this field offers (BooleanFieldListFilter's 1/0, or the choices)."""
    if isinstance(field, models.BooleanField):
        return frozenset({"1", "0"})
    return frozenset(str(value) for value, _label in field.flatchoices)


def _shown(text: str) -> str:
    """Text from the query string as a message may quote it: printable, short."""
    text = "".join(character if character.isprintable() else "?" for character in text)
    return f"“{text[:40]}…”" if len(text) > 40 else f"“{text}”"


def lookup_refused(request: HttpRequest, refused: DisallowedModelAdminLookup) -> None:
    """A lookup no declared filter offers (a list's or an export's address): logged where Django logs
    its own refusals, so monitoring sees every probe alike, and told to the person."""
    _security_log.warning("%s", refused)
    messages.error(request, str(refused))


def filter_problems(changelist: ChangeList) -> list[str]:
    """What the list's typed filter boxes could not use, one message each."""
    return [f"{capfirst(spec.title)}: {spec.error}" for spec in changelist.filter_specs if getattr(spec, "error", "")]


def filters_refused(request: HttpRequest, model_admin: admin.ModelAdmin, *, title: str, explanation: str = "",
                    back_query: str = "") -> TemplateResponse:
    """The 400 page for a list address that cannot be used (the reasons are in the request's messages)."""
    opts = model_admin.model._meta
    list_url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    context = {**model_admin.admin_site.each_context(request), "title": title, "opts": opts,
               "explanation": explanation, "list_url": list_url,
               "back_url": f"{list_url}?{back_query}" if back_query else ""}
    return TemplateResponse(request, "admin/careid/filters_refused.html", context, status=400)


class CareIdAdminConfig(AdminConfig):
    default_site = "careid.admin.CareIdAdminSite"
