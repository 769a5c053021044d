"""Who may do what to a key: one pure rule that the key services apply, so the portal, the API,
the admin and the command line agree.

Leads may do anything to every key of their team; so may staff (whose reach the selectors
already decide) and the system. A member, on their own keys, may rename, rotate, disable and
delete them, and may *tighten* a restriction but never *loosen* one: a lead who sets a quota, a
rate limit, an IP restriction, an expiration or a group, or disables the key, can rely on it.

Tighter, field by field (a member's new key is compared with the team's defaults instead):
- quota: a lower non-zero amount; 0 means unlimited, the loosest of all.
- daily, weekly and monthly limits and max concurrent requests: as the quota, each on its own
  (a lower non-zero value, or one where there was none; 0 means none).
- rate limit: at most as many requests per second on average, and at most as many in one
  window (3600/h has the average of 60/m but lets a burst of 3600 through in one minute).
- IP restriction: an empty list lets every address in, so any list is tighter than none; a
  non-empty list may only narrow: every new entry must lie inside one of the current ones.
  Adding an entry widens who may call, and clearing the list removes the restriction.
- expiration: an earlier one, or one where there was none.
- group: only a lead chooses it.
- status: a member may disable, and enable only a key they disabled themselves.
"""

import ipaddress
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .validators import RATE_LIMIT_PATTERN

# The error code of a refusal; the API answers it with 403 (core.api.exceptions).
PERMISSION_DENIED = "permission_denied"

# Seconds in each window of a rate limit ("60/m").
_WINDOW_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Role(StrEnum):
    """Who acts on a key, as far as the policy cares."""

    LEAD = "lead"
    MEMBER = "member"
    STAFF = "staff"
    SYSTEM = "system"

    @property
    def restricted(self) -> bool:
        return self is Role.MEMBER


def refusals(
    *,
    role: Role,
    current: Mapping[str, Any],
    requested: Mapping[str, Any],
    disabled_by: str = "",
    creating: bool = False,
) -> dict[str, str]:
    """{field: message} for each of `requested`'s settings that `role` may not set, given the
    `current` ones (for a new key: the team's defaults). Values are as the services store them:
    Decimal quota, canonical rate limit ("60/m"), list of canonical networks, aware datetime or
    None, Group (compared by id) and status. Empty: nothing is refused."""
    if not role.restricted:
        return {}
    result: dict[str, str] = {}
    checks = {
        "group": _group,
        "quota_limit_usd": _quota,
        "daily_limit_usd": _daily,
        "weekly_limit_usd": _weekly,
        "monthly_limit_usd": _monthly,
        "max_concurrency": _concurrency,
        "rate_limit": _rate,
        "allowed_ips": _ips,
        "expires_at": _expiry,
    }
    for field, check in checks.items():
        if field in requested:
            message = check(current.get(field), requested[field], creating=creating)
            if message:
                result[field] = message
    if (
        not creating
        and requested.get("status") == "enabled"
        and current.get("status") != "enabled"
        and disabled_by != "owner"
    ):
        result["status"] = _enable_refusal(disabled_by, current.get("expires_at"))
    return result


def refusal_error(refused: Mapping[str, str]) -> ValidationError:
    """The services' one error type, with the code the API turns into 403."""
    return ValidationError(
        {
            field: ValidationError(message, code=PERMISSION_DENIED)
            for field, message in refused.items()
        }
    )


def _set_by_lead(label: str, setting: str, rule: str, *, creating: bool) -> str:
    """The refusal's message: which field, what the lead set, and that the lead can change it."""
    if creating:
        return _("%(label)s: your team's default for new keys is %(setting)s. %(rule)s") % {
            "label": label,
            "setting": setting,
            "rule": rule,
        }
    return _("%(label)s: set by your team lead (%(setting)s). %(rule)s") % {
        "label": label,
        "setting": setting,
        "rule": rule,
    }


def _group(current, requested, *, creating: bool) -> str | None:
    current_id = getattr(current, "pk", current)
    requested_id = getattr(requested, "pk", requested)
    if (creating and current_id is None) or requested_id == current_id:
        return None
    return _set_by_lead(
        _("Group"),
        f"“{getattr(current, 'name', '')}”",
        _("Only your team lead can change it."),
        creating=creating,
    )


def _lower_or_set(current: Decimal | int | None, requested: Decimal | int | None) -> bool:
    """Whether a limit where 0 means none is tightened (or kept): a lower non-zero value, or
    any value where there was none."""
    current, requested = current or 0, requested or 0
    return current == 0 or 0 < requested <= current


def _usd_limit(label: str, none: str):
    """The check of a spend limit in USD where 0 means `none`."""

    def check(current: Decimal | None, requested: Decimal | None, *, creating: bool) -> str | None:
        if _lower_or_set(current, requested):
            return None
        return _set_by_lead(
            label,
            f"{current:.2f} USD",
            _("You can lower it, but only your team lead can raise it or set it to 0 (%(none)s).")
            % {"none": none},
            creating=creating,
        )

    return check


_quota = _usd_limit(gettext_lazy("Quota limit"), gettext_lazy("unlimited"))
_daily = _usd_limit(gettext_lazy("Daily limit"), gettext_lazy("no daily limit"))
_weekly = _usd_limit(gettext_lazy("Weekly limit"), gettext_lazy("no weekly limit"))
_monthly = _usd_limit(gettext_lazy("Monthly limit"), gettext_lazy("no monthly limit"))


def _concurrency(current: int | None, requested: int | None, *, creating: bool) -> str | None:
    if _lower_or_set(current, requested):
        return None
    return _set_by_lead(
        _("Max concurrent requests"),
        str(current),
        _("You can lower it, but only your team lead can raise it or set it to 0 (unlimited)."),
        creating=creating,
    )


def _rate(current: str | None, requested: str | None, *, creating: bool) -> str | None:
    if not current or (requested and _rate_within(requested, current)):
        return None
    return _set_by_lead(
        _("Rate limit"),
        current,
        _("You can lower it, but only your team lead can raise or clear it."),
        creating=creating,
    )


def _rate_within(requested: str, current: str) -> bool:
    new, old = RATE_LIMIT_PATTERN.match(requested), RATE_LIMIT_PATTERN.match(current)
    if new is None or old is None:
        # A malformed value is the validators' to report; no refusal here hides it.
        return True
    new_count, new_window = int(new[1]), _WINDOW_SECONDS[new[2]]
    old_count, old_window = int(old[1]), _WINDOW_SECONDS[old[2]]
    # new/new_window <= old/old_window, in integers, and no bigger burst.
    return new_count * old_window <= old_count * new_window and new_count <= old_count


def _ips(current: list[str] | None, requested: list[str] | None, *, creating: bool) -> str | None:
    if not current or (requested and all(_inside(entry, current) for entry in requested)):
        return None
    shown = ", ".join(current[:3]) + (", …" if len(current) > 3 else "")
    return _set_by_lead(
        _("IP restriction"),
        shown,
        _(
            "You can remove addresses or narrow ranges, but only your team lead can add "
            "addresses or clear it."
        ),
        creating=creating,
    )


def _inside(entry: str, allowed: list[str]) -> bool:
    """Whether the address or range `entry` lies inside one of `allowed` (both already checked
    and normalised by keys.validators.parse_allowed_ips)."""
    network = ipaddress.ip_network(entry)
    return any(
        network.version == outer.version and network.subnet_of(outer)
        for outer in map(ipaddress.ip_network, allowed)
    )


def _expiry(current: datetime | None, requested: datetime | None, *, creating: bool) -> str | None:
    if current is None or (requested is not None and requested <= current):
        return None
    return _set_by_lead(
        _("Key expiration"),
        f"{timezone.localtime(current):%Y-%m-%d %H:%M %Z}",
        _("You can make it earlier, but only your team lead can extend or clear it."),
        creating=creating,
    )


def _enable_refusal(disabled_by: str, expires_at: datetime | None) -> str:
    if disabled_by == "system" and expires_at is not None and expires_at <= timezone.now():
        when = f"{timezone.localtime(expires_at):%Y-%m-%d %H:%M %Z}"
        return _(
            "Status: disabled automatically when the key expired on %(when)s. Only your team "
            "lead can set a new expiration and enable it."
        ) % {"when": when}
    if disabled_by == "system":
        # The other thing the system disables a key for: the team's spend-spike guard.
        return _(
            "Status: disabled automatically after a spend spike. Only your team lead can enable it."
        )
    if disabled_by == "staff":
        return _("Status: disabled by staff. Only your team lead can enable it.")
    return _("Status: disabled by your team lead. Only your team lead can enable it.")
