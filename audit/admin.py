"""The audit trail in the RA back office: read-only, filterable, exportable, fast at millions of rows."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.contrib import admin, messages
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.views.main import ORDER_VAR, PAGE_VAR, ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.functional import cached_property

from accounts.models import is_uid
from authenticators import registry
from careid.admin import DeclaredFiltersOnly, InputFilter, filter_problems, filters_refused, lookup_refused

from .export import export_lines
from .models import AuditEvent, Event, Outcome
from .record import record


class EstimatedCountPaginator(Paginator):
    """No full COUNT(*) over the whole trail: PostgreSQL's row estimate when nothing is filtered (the list
    leaving out heartbeats does not count as a filter: `whole_trail`)."""

    whole_trail = False

    @cached_property
    def count(self) -> int:
        query = self.object_list.query
        if connection.vendor == "postgresql" and (self.whole_trail or not query.where):
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [AuditEvent._meta.db_table])
                row = cursor.fetchone()
            if row and row[0] > 10_000:
                return row[0]
        return super().count


class PeriodFilter(admin.SimpleListFilter):
    title = "date"
    parameter_name = "period"
    PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}

    def lookups(self, request, model_admin):
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]

    def queryset(self, request, queryset):
        if self.value() in self.PERIODS:
            return queryset.filter(at__gte=timezone.now() - self.PERIODS[self.value()])
        return queryset


class MethodFilter(admin.SimpleListFilter):
    """The registry's methods (a DISTINCT over millions of rows would be the slow way)."""

    title = "method"
    parameter_name = "method"

    def lookups(self, request, model_admin):
        return [(kind.key, kind.signin_label) for kind in registry.all_types()]

    def queryset(self, request, queryset):
        return queryset.filter(method=self.value()) if self.value() else queryset


class UidFilter(InputFilter):
    label = "User ID"
    field = ""

    def parse(self, text: str) -> str:
        if not is_uid(text):
            raise ValueError("Enter a 12-digit user ID, like 123456789012")
        return text

    def narrow(self, queryset, value):
        return queryset.filter(**{f"{self.field}__uid": value})


class DateFilter(InputFilter):
    """A day in the service's time zone (Europe/London), as a range on `at` that the (time) index serves."""

    input_type = "date"
    label = "Date"
    lookup = ""
    EARLIEST, LATEST = date(1900, 1, 1), date(2999, 12, 31)

    def parse(self, text: str) -> datetime:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError("Enter a real date, like 2025-03-31") from None
        if not self.EARLIEST <= day <= self.LATEST:
            raise ValueError(f"Enter a date from {self.EARLIEST.year} to {self.LATEST.year}, like 2025-03-31")
        if self.lookup == "lte":
            day += timedelta(days=1)
        return timezone.make_aware(datetime.combine(day, time.min))

    def narrow(self, queryset, value):
        return queryset.filter(**{"at__gte" if self.lookup == "gte" else "at__lt": value})


class FromDateFilter(DateFilter):
    title = "from date"
    parameter_name = "from"
    lookup = "gte"


class ToDateFilter(DateFilter):
    title = "to date (inclusive)"
    parameter_name = "to"
    lookup = "lte"


class ActorFilter(UidFilter):
    title = "actor (user ID)"
    parameter_name = "actor_uid"
    field = "actor"


class SubjectFilter(UidFilter):
    title = "subject (user ID)"
    parameter_name = "subject_uid"
    field = "subject"


class ExportChangeList(ChangeList):
    """The list's filters, search and order without its page.

    The export streams the whole queryset: the COUNT over every matching event and the page that the
    list needs would only delay the first byte.
    """

    def get_results(self, request):
        pass


@admin.register(AuditEvent)
class AuditEventAdmin(DeclaredFiltersOnly, admin.ModelAdmin):
    list_display = ["at", "event", "outcome", "subject", "actor", "method", "aal", "ip"]
    list_filter = ["event", "outcome", PeriodFilter, FromDateFilter, ToDateFilter, MethodFilter, ActorFilter, SubjectFilter]
    list_select_related = ["subject", "actor"]
    search_fields = ["=subject__uid"]  # see get_search_results
    search_help_text = ("A 12-digit user ID or an email address (of the person the event is about, "
                        "now or before it was changed)")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    change_list_template = "admin/audit/auditevent/change_list.html"


    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if not request.user.has_perm("audit.view_all_auditevents"):
            return queryset.filter(actor=request.user)  # RA Agents: their own actions only
        match = request.resolver_match
        if (match is not None and match.url_name == "audit_auditevent_changelist"
                and request.GET.get("event__exact") != Event.AUDIT_HEARTBEAT):
            # The sealer's proof that it ran through quiet times belongs in the chain and the export (which
            # verifying a chain needs whole), not between the events an RA reads; its filter still lists it.
            queryset = queryset.exclude(event=Event.AUDIT_HEARTBEAT)
        return queryset

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        paginator = super().get_paginator(request, queryset, per_page, orphans, allow_empty_first_page)
        paginator.whole_trail = (request.user.has_perm("audit.view_all_auditevents")
                                 and set(request.GET) <= {PAGE_VAR, ORDER_VAR})
        return paginator

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term:
            return queryset.about_address(term), False
        return queryset.filter(subject__uid=term), False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        return [
            path("export/", self.admin_site.admin_view(self.export_view), name="audit_auditevent_export"),
        ] + super().get_urls()

    def get_changelist(self, request, **kwargs):
        match = request.resolver_match
        if match is not None and match.url_name == "audit_auditevent_export":
            return ExportChangeList
        return super().get_changelist(request, **kwargs)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "may_export": request.user.has_perm("audit.export_auditevent"),
                         "export_query": request.GET.urlencode()}
        response = super().changelist_view(request, extra_context)
        if response.status_code == 400 and getattr(response, "context_data", None):
            response.context_data["may_export"] = False  # the filters say what to correct first
        return response

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The events the list shows with the same filters and search, as CSV, streamed.

        Everything in the address is checked before a byte is sent: filters the list would refuse or
        show no rows for, and a search term Django's search form drops (the export would otherwise be
        of every event), refuse the export with a 400 page.
        """
        if not request.user.has_perm("audit.export_auditevent"):
            record(Event.RA_REFUSED, request=request, outcome="failure", attempted="export the audit trail")
            raise PermissionDenied
        filters = request.GET.urlencode()[:500]
        try:
            changelist = self.get_changelist_instance(request)
        except DisallowedModelAdminLookup as refused:
            problems = [str(refused)]
            lookup_refused(request, refused)
        else:
            problems = filter_problems(changelist)
            for problem in problems:
                messages.error(request, problem)
            search = changelist.search_form_class(request.GET)
            if not search.is_valid():  # Django has told the person why, in the messages
                problems += [f"Search: {error}" for errors in search.errors.values() for error in errors]
        if problems:
            record(Event.AUDIT_EXPORTED, request=request, outcome=Outcome.FAILURE, filters=filters, rows=0,
                   reason="; ".join(problems)[:500])
            return filters_refused(request, self, title="Nothing was exported",
                                   explanation="Correct the filters or the search, then export again.",
                                   back_query=request.GET.urlencode())
        response = StreamingHttpResponse(export_lines(changelist.queryset, request=request, filters=filters),
                                         content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="audit-{timezone.localtime():%Y%m%d-%H%M%S}.csv"'
        return response
