"""The input checks that the key and token services share."""

from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.db.models import Model


def _full_clean(instance: Model, errors: dict[str, list[str]]) -> None:
    """Run the model's checks on the fields that converted, so that one submission shows
    every field's error at once rather than one per attempt."""
    try:
        instance.full_clean(exclude=set(errors))
    except ValidationError as error:
        for field_name, messages in error.message_dict.items():
            errors.setdefault(field_name, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def _clean_name(value: str | None) -> str:
    name = (value or "").strip()
    # PostgreSQL cannot store NUL in text; without this the database would answer with a 500.
    ProhibitNullCharactersValidator()(name)
    return name
