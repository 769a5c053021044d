"""A person's own preferences: the portal's language."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext

from keys.models import UserPreference


def user_language_set(*, user, language: str) -> None:
    """Saves the portal language `user` chose ("" for the browser's). Not audited: it concerns
    nobody but them and changes nothing anyone may do."""
    if language and language not in dict(settings.LANGUAGES):
        raise ValidationError(
            {"language": gettext("Choose one of the languages offered.")}, code="invalid"
        )
    UserPreference.objects.update_or_create(user=user, defaults={"language": language})


def user_language(*, user) -> str:
    """The language `user` chose, "" if none."""
    return UserPreference.objects.filter(user=user).values_list("language", flat=True).first() or ""
