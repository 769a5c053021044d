"""What management commands share."""

from collections.abc import Mapping

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError


def describe_validation_error(error: ValidationError, option_for_field: Mapping[str, str]) -> str:
    """A service's ValidationError as lines for the terminal, each field's messages labelled
    with the command-line option that set it (or the field's name when no option did)."""
    if not hasattr(error, "error_dict"):
        return "\n".join(error.messages)
    lines = []
    for field, messages in error.message_dict.items():
        label = "" if field == NON_FIELD_ERRORS else f"{option_for_field.get(field, field)}: "
        lines.extend(label + message for message in messages)
    return "\n".join(lines)
