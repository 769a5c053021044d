"""Turns the services' one error type, and unreadable bodies, into the API's one 400 shape."""

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """A service's ValidationError becomes DRF's field-error body, with the service's messages:
    {"field": ["message", …]}, errors not about one field under "non_field_errors"."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {
                (api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field): msgs
                for field, msgs in exc.message_dict.items()
            }
        else:
            detail = {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, exceptions.ParseError):
        # A body that is not JSON at all: the same shape as every other 400, so a client reads
        # one kind of 400 body only.
        exc = exceptions.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [exc.detail]})
    return drf_exception_handler(exc, context)
