from django.contrib import admin

from . import registry

# Only what every type shares is shown: a type's own fields (TOTP keys, credential data) never are.
SHARED_FIELDS = ["user", "name", "confirmed", "created_at", "last_used_at"]


class AuthenticatorAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "created_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["=user__uid", "user__email"]
    fields = SHARED_FIELDS
    readonly_fields = SHARED_FIELDS
    show_full_result_count = False

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return False  # no filtering on a type's own fields from the query string (e.g. ?key__startswith=)

    def has_add_permission(self, request) -> bool:
        return False  # authenticators are registered by their owner, through the journey

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Removal is an RA action on the person's page (accounts.admin, authenticators.flows.remove_authenticator):
        # with a reason, an audit event and an e-mail to the person. Django's delete view and delete_selected
        # action did none of the three.
        return False


for kind in registry.all_types():
    admin.site.register(kind.model, AuthenticatorAdmin)
