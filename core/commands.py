"""What management commands share."""

from argparse import ArgumentParser
from collections.abc import Mapping

from django.contrib.auth import get_user_model
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


def add_actor_option(parser: ArgumentParser, *, doing: str) -> None:
    """--actor: who the audit trail records as `doing` what the command does."""
    parser.add_argument(
        "--actor",
        metavar="USERNAME",
        help=f"Who the audit trail records as {doing}; default: the system.",
    )


def user_named(option: str, username: str | None, problems: list[str]):
    """The user an option names (None when it names none: the problem is added to
    `problems`, so a command reports every bad option at once)."""
    if username is None:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        problems.append(f"{option}: No user named “{username}”.")
    return user
