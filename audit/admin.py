from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "event", "outcome", "subject", "actor", "method", "aal", "ip"]
    list_filter = ["event", "outcome", "method"]
    list_select_related = ["subject", "actor"]
    search_fields = ["=subject__uid", "subject__email"]
    show_full_result_count = False
    date_hierarchy = None

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
