"""The admin's save and delete, with the services owning their transactions."""

from typing import Any

from django.contrib.admin.options import csrf_protect_m
from django.http import HttpRequest, HttpResponse


class ServiceTransactionsMixin:
    """For a ModelAdmin whose saves and deletes all go through services.

    The admin wraps each save and delete in a transaction of its own; each service is an action
    in a durable transaction (one action, one audit row, committed together), which cannot nest
    inside another. So these views leave the transactions to the services, and the forms check
    each change with the services' validation functions first, writing nothing when it is
    refused.
    """

    @csrf_protect_m
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return self._changeform_view(request, object_id, form_url, extra_context)

    @csrf_protect_m
    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return self._delete_view(request, object_id, extra_context)
