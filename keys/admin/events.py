"""Staff admin for the audit trail."""

from django.contrib import admin
from django.http import HttpRequest

from keys.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by the services and never edited."""

    list_display = (
        "created_at",
        "action",
        "subject_label",
        "subject_prefix",
        "team",
        "changes",
        "actor",
    )
    list_filter = ("action", "subject_type", "team", ("actor", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("team", "actor")
    search_fields = ("subject_label", "subject_prefix", "actor__username")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
