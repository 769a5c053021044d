"""Staff admin for the audit trail."""

from django.contrib import admin
from django.http import HttpRequest

from keys.models import KeyEvent, TeamEvent


@admin.register(KeyEvent)
class KeyEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by the services and never edited."""

    list_display = ("created_at", "key_name", "key_prefix", "team", "action", "actor")
    list_filter = ("action", "team")
    list_select_related = ("team", "actor")
    search_fields = ("key_name", "key_prefix", "actor__username")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: KeyEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: KeyEvent | None = None) -> bool:
        return False


@admin.register(TeamEvent)
class TeamEventAdmin(admin.ModelAdmin):
    """Read-only, like the keys' audit trail: invitations, members and allowed groups."""

    list_display = ("created_at", "team", "action", "subject", "changes", "actor")
    list_filter = ("action", "team")
    list_select_related = ("team", "actor")
    search_fields = ("subject", "actor__username")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TeamEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: TeamEvent | None = None) -> bool:
        return False
