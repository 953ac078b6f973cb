from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest


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
        from django.shortcuts import render

        from signin.flows import sign_out

        if request.method == "POST":
            sign_out(request)
        return render(request, "signin/signed_out.html")

    def password_change(self, request: HttpRequest, extra_context=None):
        from django.http import Http404

        raise Http404

    def password_change_done(self, request: HttpRequest, extra_context=None):
        from django.http import Http404

        raise Http404


class DeclaredFiltersOnly:
    """A ModelAdmin mixin: the list can be filtered only by its declared filters.

    Django's changelist otherwise accepts any lookup on a field from the query string, and
    `?password__startswith=…` answers one character of a password hash at a time.
    """

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        declared = set()
        for item in self.list_filter:
            if isinstance(item, str):
                declared.add(item.split("__")[0])
            elif isinstance(item, tuple):
                declared.add(item[0].split("__")[0])
            else:
                declared.add(getattr(item, "parameter_name", None))
        return lookup.split("__")[0] in declared and super().lookup_allowed(lookup, value, request)


class CareIdAdminConfig(AdminConfig):
    default_site = "careid.admin.CareIdAdminSite"
