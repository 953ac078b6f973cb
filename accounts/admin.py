from django.contrib import admin

from .models import AllowedEmailDomain, User


@admin.register(AllowedEmailDomain)
class AllowedEmailDomainAdmin(admin.ModelAdmin):
    list_display = ["domain", "include_subdomains"]
    list_filter = ["include_subdomains"]
    search_fields = ["domain"]


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    """Care Identities. The RA back office (roles, actions) builds on this."""

    list_display = ["uid", "first_name", "last_name", "email", "status", "last_login"]
    list_filter = ["status"]
    search_fields = ["=uid", "email", "first_name", "last_name"]
    show_full_result_count = False
    fields = ["uid", "title", "first_name", "last_name", "email", "status", "date_joined", "last_login"]
    readonly_fields = ["uid", "email", "status", "date_joined", "last_login"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # profiles are closed, never deleted: a uid is never reused
