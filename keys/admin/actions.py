"""Admin actions a staff member may not run are refused, not quietly skipped."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


class RefuseForbiddenActionsMixin:
    """Django leaves an action out of a staff member's list when they lack its permission, and a
    POST naming it anyway answers a redirect with "No action selected." (or the list itself, when
    no action is left). For actions that write, such as rotating keys, that reads as if the
    request were merely incomplete: this answers 403 and runs nothing."""

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        action = request.POST.get("action") if request.method == "POST" else None
        if action and action not in self.get_actions(request):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)
