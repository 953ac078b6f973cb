"""Relying services in the back office: platform operators (superusers, or staff given the
"Can register and change relying services" permission) only; RA Agents and Auditors never see them."""

from __future__ import annotations

from allauth.idp.oidc.models import Client, Token
from django.contrib import admin, messages
from django.utils.html import format_html

from careid.admin import DeclaredFiltersOnly

from . import flows
from .forms import RelyingServiceForm
from .models import RelyingService

admin.site.unregister(Client)  # allauth's raw client admin: no audit, no careid checks
admin.site.unregister(Token)  # tokens are secrets' hashes: nothing for people to read or change


@admin.register(RelyingService)
class RelyingServiceAdmin(DeclaredFiltersOnly, admin.ModelAdmin):
    form = RelyingServiceForm
    list_display = ["name", "id", "auth_method_shown", "created_at"]
    list_filter = ["type"]
    search_fields = ["=id", "name"]
    readonly_fields = ["id", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "id", "created_at"]}),
        ("Authentication", {"fields": ["auth_method", "new_secret", "jwks_uri", "jwks"]}),
        ("Addresses", {"fields": ["redirect_uris", "post_logout_redirect_uris", "backchannel_logout_uri"]}),
        ("What it may ask for", {"fields": ["allowed_scopes", "refresh_tokens"]}),
    ]

    def _may_manage(self, request) -> bool:
        return request.user.is_superuser or request.user.has_perm("oidc.manage_relyingservice")

    def has_module_permission(self, request) -> bool:
        return self._may_manage(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return self._may_manage(request)

    def has_add_permission(self, request) -> bool:
        return self._may_manage(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._may_manage(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a service stops by having its redirect URIs removed; its audit trail stays

    @admin.display(description="Client authentication")
    def auth_method_shown(self, service: RelyingService) -> str:
        return service.auth_method

    def save_model(self, request, obj, form, change) -> None:
        _service, secret = flows.save_relying_service(form, actor=request.user, request=request)
        if secret:
            self.message_user(request, format_html(
                "The client secret is shown only this once. Copy it now: <code>{}</code>", secret), messages.WARNING)

    def save_related(self, request, form, formsets, change) -> None:
        pass

    def log_addition(self, request, obj, message):
        return None  # the audit trail records it (client.changed)

    def log_change(self, request, obj, message):
        return None

