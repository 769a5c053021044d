"""Turns the services' one error type, and unreadable bodies, into the API's one 400 shape (409
when the request is fine but the data as it stands forbids it), and an unreachable database into
a JSON 503."""

import logging

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "The service cannot reach its database right now. Try again shortly."
# Seconds a client should wait before retrying: long enough for a database restart or
# failover to finish, short enough that a script simply carries on.
DATABASE_RETRY_AFTER = 10

# The error codes of refusals caused by the state of the data rather than the request: a name
# already taken, a member already there, a team's last lead. The same request can succeed once
# the data changes, which is what 409 Conflict tells a client (and a 400 says it never will).
CONFLICT_CODES = {"unique", "already_member", "last_lead"}
# The error code of a refusal by who is asking (a member loosening what a lead set): 403, in the
# field-error body of a 400, so the client learns which field and why.
FORBIDDEN_CODE = "permission_denied"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """A service's ValidationError becomes DRF's field-error body, with the service's messages:
    {"field": ["message", …]}, errors not about one field under "non_field_errors".

    A database that cannot be reached or is too busy (OperationalError: refused, dropped or
    timed-out connections, locks; InterfaceError: a connection already closed) is a temporary
    condition, not a bug: a JSON 503 with Retry-After, which clients know to retry, rather than
    Django's HTML 500."""
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("API request failed, database unavailable: %s", exc)
        set_rollback()
        return Response(
            {"detail": DATABASE_UNAVAILABLE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if isinstance(exc, DjangoValidationError):
        if _codes(exc) <= CONFLICT_CODES:
            set_rollback()
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        forbidden = _codes(exc) == {FORBIDDEN_CODE}
        if hasattr(exc, "error_dict"):
            detail = {
                (api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field): msgs
                for field, msgs in exc.message_dict.items()
            }
        else:
            detail = {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
        if forbidden:
            set_rollback()
            return Response(detail, status=status.HTTP_403_FORBIDDEN)
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, exceptions.ParseError):
        # A body that is not JSON at all: the same shape as every other 400, so a client reads
        # one kind of 400 body only.
        exc = exceptions.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [exc.detail]})
    return drf_exception_handler(exc, context)


def _codes(exc: DjangoValidationError) -> set[str | None]:
    if hasattr(exc, "error_dict"):
        return {error.code for errors in exc.error_dict.values() for error in errors}
    return {error.code for error in exc.error_list}
