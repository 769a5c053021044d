"""A team's notification settings (its leads choose) and a member's opt-out of emails about their
own keys (the member alone chooses).

The `parse_*` functions are the one home of the settings' rules and messages: pure, so the
portal's form, the API's serializer and the admin all show the same words, and a refused change
writes nothing. Each update writes one audit row, and none when nothing changed.
"""

import re
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from keys.models import AuditEvent, Membership, Team
from keys.selectors import is_team_lead
from keys.services import audit_record
from keys.validators import UsdLimitWords, parse_usd_limit

from ..models import EmailPreference, NotificationSettings
from ..selectors import email_preference_for, notification_settings_for

# The staff permission that lets staff change a team's settings as its leads do (the admin's).
SETTINGS_STAFF_PERMISSION = "notify.change_notificationsettings"

MAX_THRESHOLDS = 5
MAX_EXPIRY_WARNINGS = 5
LONGEST_EXPIRY_WARNING_DAYS = 90
SPIKE_LIMIT_MAX = Decimal(1_000_000)

RECIPIENTS_MESSAGE = gettext_lazy("Choose who gets the emails: leads, owner or both.")
THRESHOLDS_MESSAGE = gettext_lazy(
    "Enter thresholds as whole percentages from 1 to 100, separated by commas, e.g. 50, 80, 100."
)
EXPIRY_DAYS_MESSAGE = gettext_lazy(
    "Enter expiry warnings as whole numbers of days from 1 to 90, separated by commas, "
    "e.g. 7, 3, 1."
)
SPIKE_WORDS = UsdLimitWords("spend-spike limit", "no spike guard")
SPIKE_MESSAGE = gettext_lazy(
    "Enter the spend-spike limit in US dollars with at most 2 decimal places (whole cents), "
    "e.g. 20 or 20.50, up to 1,000,000; 0 means no spike guard."
)

# What the messages about a list call one of its numbers, and several ("At most 5 thresholds").
THRESHOLD_WORDS = (gettext_lazy("threshold"), gettext_lazy("thresholds"))
EXPIRY_WARNING_WORDS = (gettext_lazy("expiry warning"), gettext_lazy("expiry warnings"))

_SEPARATORS = re.compile(r"[\s,;]+")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")

# The fields notification_settings_update changes, in the order the audit row lists them.
SETTINGS_FIELDS = ("email_recipients", "thresholds", "expiry_warning_days", "spike_limit_usd")


def parse_email_recipients(value: Any) -> str:
    if not isinstance(value, str) or value not in NotificationSettings.Recipients.values:
        raise ValidationError(RECIPIENTS_MESSAGE, code="invalid_recipients")
    return value


def parse_thresholds(value: Any) -> list[int]:
    """Percentages of a limit, 1 to 100, each once, at most 5, stored ascending; text ("50, 80,
    100") or a list of whole numbers. Empty: no threshold emails."""
    numbers = _whole_numbers(value, message=THRESHOLDS_MESSAGE, what=THRESHOLD_WORDS)
    for number in numbers:
        if not 1 <= number <= 100:
            raise ValidationError(
                _("Each threshold must be a whole percentage from 1 to 100; %(number)s is not.")
                % {"number": number},
                code="threshold_out_of_range",
            )
    _distinct_and_few(numbers, what=THRESHOLD_WORDS, most=MAX_THRESHOLDS)
    return sorted(numbers)


def parse_expiry_warning_days(value: Any) -> list[int]:
    """Days before a key expires at which its owner is warned, 1 to 90, each once, at most 5,
    stored descending; text ("7, 3, 1") or a list of whole numbers. Empty: no warnings."""
    numbers = _whole_numbers(value, message=EXPIRY_DAYS_MESSAGE, what=EXPIRY_WARNING_WORDS)
    for number in numbers:
        if not 1 <= number <= LONGEST_EXPIRY_WARNING_DAYS:
            raise ValidationError(
                _(
                    "Each expiry warning must be a whole number of days from 1 to "
                    "%(longest)s; %(number)s is not."
                )
                % {"longest": LONGEST_EXPIRY_WARNING_DAYS, "number": number},
                code="expiry_warning_out_of_range",
            )
    _distinct_and_few(numbers, what=EXPIRY_WARNING_WORDS, most=MAX_EXPIRY_WARNINGS)
    return sorted(numbers, reverse=True)


def parse_spike_limit(value: Any) -> Decimal:
    """USD in whole cents, read as a quota is (empty or 0: no spike guard), up to 1,000,000."""
    try:
        amount = parse_usd_limit(value, SPIKE_WORDS)
    except ValidationError as error:
        if error.code in ("quota_below_a_cent", "negative_quota"):
            raise
        raise ValidationError(SPIKE_MESSAGE, code="invalid_spike_limit") from None
    if amount > SPIKE_LIMIT_MAX:
        raise ValidationError(SPIKE_MESSAGE, code="spike_limit_too_large")
    return amount.quantize(Decimal("0.01"))


def _whole_numbers(value: Any, *, message: str, what: tuple[str, str]) -> list[int]:
    if value is None:
        return []
    if isinstance(value, str):
        parts = [part for part in _SEPARATORS.split(value.strip()) if part]
        if not all(_WHOLE_NUMBER.fullmatch(part) for part in parts):
            raise ValidationError(message, code="invalid_numbers")
        return [int(part) for part in parts]
    if isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                shown = getattr(item, "literal", None) or repr(item)
                raise ValidationError(
                    _("Each %(what)s must be a whole number, not %(shown)s.")
                    % {"what": what[0], "shown": shown},
                    code="invalid_numbers",
                )
        return list(value)
    raise ValidationError(message, code="invalid_numbers")


def _distinct_and_few(numbers: list[int], *, what: tuple[str, str], most: int) -> None:
    seen: set[int] = set()
    for number in numbers:
        if number in seen:
            raise ValidationError(
                _("Each %(what)s can be given once; %(number)s is repeated.")
                % {"what": what[0], "number": number},
                code="repeated",
            )
        seen.add(number)
    if len(numbers) > most:
        raise ValidationError(
            _("At most %(most)s %(what)s; this list has %(count)s.")
            % {"most": most, "what": what[1], "count": len(numbers)},
            code="too_many",
        )


_PARSERS = {
    "email_recipients": parse_email_recipients,
    "thresholds": parse_thresholds,
    "expiry_warning_days": parse_expiry_warning_days,
    "spike_limit_usd": parse_spike_limit,
}


def notification_settings_may_change(*, actor: User | None, team: Team) -> bool:
    """The system (None), the team's leads, and staff who may change notification settings."""
    if actor is None:
        return True
    return is_team_lead(actor=actor, team=team, staff_permission=SETTINGS_STAFF_PERMISSION)


def settings_refusal(team: Team) -> str:
    return _("Only a lead of %(team)s can change its notification settings.") % {"team": team.name}


def notification_settings_validate(**requested: Any) -> dict[str, Any]:
    """The values notification_settings_update would store for the fields given (None: not
    given), or one ValidationError naming every field that failed. Writes nothing."""
    unknown = set(requested) - set(SETTINGS_FIELDS)
    if unknown:
        raise TypeError(f"Unknown notification settings: {sorted(unknown)}")
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for field, value in requested.items():
        if value is None:
            continue
        try:
            values[field] = _PARSERS[field](value)
        except ValidationError as error:
            errors[field] = error.messages
    if errors:
        raise ValidationError(errors)
    return values


@transaction.atomic(durable=True)
def notification_settings_update(
    *,
    actor: User | None,
    team: Team,
    email_recipients: str | None = None,
    thresholds: str | list[int] | None = None,
    expiry_warning_days: str | list[int] | None = None,
    spike_limit_usd: str | int | Decimal | None = None,
) -> NotificationSettings:
    """Change the team's notification settings (None: leave that one as it is); by its leads,
    staff who may change notification settings, and the system. One audit row with the fields
    that changed; nothing written when nothing did or something was refused."""
    if not notification_settings_may_change(actor=actor, team=team):
        raise PermissionDenied(settings_refusal(team))
    values = notification_settings_validate(
        email_recipients=email_recipients,
        thresholds=thresholds,
        expiry_warning_days=expiry_warning_days,
        spike_limit_usd=spike_limit_usd,
    )
    # Locking the team queues two leads saving at once, so the second reads the first's row
    # (and never tries to create a second one).
    Team.objects.select_for_update().filter(pk=team.pk).first()
    current = notification_settings_for(team)
    changes = {
        field: [_audit_value(getattr(current, field)), _audit_value(value)]
        for field, value in values.items()
        if getattr(current, field) != value
    }
    if not changes:
        return current
    for field, value in values.items():
        setattr(current, field, value)
    current.save()
    audit_record(
        action=AuditEvent.Action.TEAM_NOTIFICATIONS_UPDATED,
        actor=actor,
        subject=team,
        changes=changes,
    )
    return current


def email_preference_refusal() -> str:
    return _("Only the member themselves can choose whether they get emails about their keys.")


@transaction.atomic(durable=True)
def email_preference_update(
    *, actor: User, membership: Membership, own_key_emails: bool
) -> EmailPreference:
    """A member turns emails about their own keys off or on; only they may. Emails they get as
    a lead of the team are not theirs to turn off. One audit row when it changed."""
    if actor is None or actor.pk != membership.user_id:
        raise PermissionDenied(email_preference_refusal())
    if not isinstance(own_key_emails, bool):
        raise ValidationError(
            {"own_key_emails": [_("Must be true or false.")]}, code="invalid_boolean"
        )
    Membership.objects.select_for_update().filter(pk=membership.pk).first()
    preference = email_preference_for(membership)
    if preference.own_key_emails == own_key_emails:
        return preference
    before = preference.own_key_emails
    preference.own_key_emails = own_key_emails
    preference.save()
    audit_record(
        action=AuditEvent.Action.MEMBER_EMAIL_PREFERENCE_UPDATED,
        actor=actor,
        subject=membership.user,
        team=membership.team,
        changes={"own_key_emails": [before, own_key_emails]},
    )
    return preference


def _audit_value(value: Any) -> Any:
    """As the audit trail shows it: amounts as plain decimals ("20", "0.5"), lists of numbers as
    the page's text ("50, 80, 100"; "" for none)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return value
