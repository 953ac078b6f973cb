from allauth.account.models import EmailAddress
from django.contrib import admin
from django.http import Http404

from .models import AllowedEmailDomain, User

# E-mail addresses change only through careid's flows (verification, audit, notification), and
# passwords only through the Authenticator app journey: allauth's raw EmailAddress admin and the
# admin's own password form would bypass all three.
admin.site.unregister(EmailAddress)


def _no_password_change(request, extra_context=None):
    raise Http404


admin.site.password_change = _no_password_change


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
