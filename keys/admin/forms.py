"""Form machinery the admin's forms share."""

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError


def _add_service_errors(form: forms.BaseForm, error: ValidationError) -> None:
    """Put a service's ValidationError on the form fields it names (the rest on the form)."""
    errors = error.error_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error}
    for field, field_errors in errors.items():
        form.add_error(field if field in form.fields else None, field_errors)
