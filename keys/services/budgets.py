"""Spend controls above the keys: a team's monthly budget and time zone (staff set them), and a
member's monthly cap across their keys in a team (the team's leads set it).

Every key's relay snapshot carries its team's budget and time zone and its owner's cap
(proxy.keystate), so each change drops the snapshots of the keys it governs once it commits:
the next request, in every worker, obeys it. The `*_validate` functions answer what an update
would refuse, writing nothing, and return the values as they would be stored, for the forms,
serializers and admin that check before they save.
"""

from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from keys import policy
from keys.cache import invalidate_key_state
from keys.models import ApiKey, AuditEvent, Membership, Team
from keys.selectors import is_team_lead, staff_may
from keys.validators import QUOTA_MAX, parse_quota, validate_time_zone

from .audit import audit_record

# The staff permissions each setting takes, as in the admin: a team's budget and clock are the
# team's settings; a member's cap is the membership's.
TEAM_BUDGET_PERMISSION = "keys.change_team"
MEMBER_CAP_PERMISSION = "keys.change_membership"

BUDGET_STAFF_ONLY = gettext_lazy("Only staff can set a team's monthly budget.")
TIME_ZONE_STAFF_ONLY = gettext_lazy("Only staff can change a team's time zone.")


def parse_usd_limit(value: str | int | Decimal | None, *, what: str, zero_means: str) -> Decimal:
    """An amount read as keys.validators.parse_quota reads a quota (whole cents; empty or 0
    clears it), with messages that name what is being set ("a monthly budget") and what 0
    means ("no budget")."""
    try:
        amount = parse_quota(value)
    except ValidationError as error:
        if error.code == "quota_below_a_cent":
            message = _(
                "%(what)s below 0.01 US dollars would be stored as 0, which means %(zero)s. "
                "Enter at least 0.01, or 0 for %(zero)s."
            ) % {"what": _capitalized(what), "zero": zero_means}
        else:
            message = _(
                "Enter %(what)s in US dollars with at most 2 decimal places (whole cents), "
                "e.g. 25 or 25.50, up to %(max)s; 0 means %(zero)s."
            ) % {"what": what, "zero": zero_means, "max": f"{QUOTA_MAX:,}"}
        raise ValidationError(message, code=error.code) from None
    if amount < 0:
        raise ValidationError(
            _("%(what)s cannot be negative. Use 0 for %(zero)s.")
            % {"what": _capitalized(what), "zero": zero_means},
            code="negative_quota",
        )
    return amount


def _capitalized(words: str) -> str:
    words = str(words)
    return words[:1].upper() + words[1:]


def team_budget_may_change(actor: User | None) -> bool:
    """Whether `actor` may set a team's budget and time zone: the system (None), a superuser,
    or staff who may change teams."""
    if actor is None:
        return True
    return actor.is_active and (
        actor.is_superuser or staff_may(actor=actor, permission=TEAM_BUDGET_PERMISSION)
    )


def team_budget_validate(
    *,
    actor: User | None,
    team: Team,
    monthly_budget_usd: str | int | Decimal | None = None,
    time_zone: str | None = None,
) -> dict[str, Any]:
    """The changes team_budget_update would store ({field: value}, only the fields given, None
    meaning not given), or the ValidationError it would raise. The budget is read like a quota
    (0 or empty clears it); the time zone is an IANA name. Writes nothing."""
    requested = {
        field: value
        for field, value in (("monthly_budget_usd", monthly_budget_usd), ("time_zone", time_zone))
        if value is not None
    }
    if not team_budget_may_change(actor):
        refusals = {"monthly_budget_usd": BUDGET_STAFF_ONLY, "time_zone": TIME_ZONE_STAFF_ONLY}
        raise policy.refusal_error(
            {field: refusals[field] for field in requested}
            or {"monthly_budget_usd": BUDGET_STAFF_ONLY}
        )
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if "monthly_budget_usd" in requested:
        try:
            values["monthly_budget_usd"] = parse_usd_limit(
                requested["monthly_budget_usd"],
                what=_("a monthly budget"),
                zero_means=_("no budget"),
            )
        except ValidationError as error:
            errors["monthly_budget_usd"] = error.messages
    if "time_zone" in requested:
        name = str(requested["time_zone"]).strip()
        try:
            validate_time_zone(name)
        except ValidationError as error:
            errors["time_zone"] = error.messages
        else:
            values["time_zone"] = name
    if errors:
        raise ValidationError(errors)
    return values


@transaction.atomic(durable=True)
def team_budget_update(
    *,
    actor: User | None,
    team: Team,
    monthly_budget_usd: str | int | Decimal | None = None,
    time_zone: str | None = None,
) -> Team:
    """Set a team's monthly budget (0 or "" clears it) and/or time zone; staff only (see
    team_budget_may_change). One audit row when something changed, and every key of the team
    reads the change on its next request."""
    values = team_budget_validate(
        actor=actor, team=team, monthly_budget_usd=monthly_budget_usd, time_zone=time_zone
    )
    stored = Team.objects.select_for_update().get(pk=team.pk)
    changes = {
        field: [_audit_value(getattr(stored, field)), _audit_value(value)]
        for field, value in values.items()
        if getattr(stored, field) != value
    }
    for field, value in values.items():
        setattr(team, field, value)
    if not changes:
        return team
    team.save(update_fields=list(changes))
    audit_record(
        action=AuditEvent.Action.TEAM_BUDGET_UPDATED, actor=actor, subject=team, changes=changes
    )
    invalidate_key_state(ApiKey.objects.filter(team=team).values_list("digest", flat=True))
    return team


def member_cap_may_change(actor: User | None, team: Team) -> bool:
    """Whether `actor` may set the caps of `team`'s members: the system (None), its leads, and
    staff who may change memberships. Not the members themselves: a cap is the lead's limit."""
    if actor is None:
        return True
    if team.pk is None:
        # A team being created (in the admin) has no leads yet: only staff set caps there.
        return staff_may(actor=actor, permission=MEMBER_CAP_PERMISSION)
    return is_team_lead(actor=actor, team=team, staff_permission=MEMBER_CAP_PERMISSION)


def member_cap_refusal(team: Team) -> str:
    return _("Only a lead of %(team)s can set its members' monthly caps.") % {"team": team.name}


def membership_limit_validate(
    *, actor: User | None, membership: Membership, monthly_limit_usd: str | int | Decimal | None
) -> Decimal:
    """The cap membership_limit_update would store, or the ValidationError it would raise; read
    like a quota (0 or empty clears it). Writes nothing."""
    if actor is not None and not member_cap_may_change(actor, membership.team):
        raise policy.refusal_error({"monthly_limit_usd": member_cap_refusal(membership.team)})
    try:
        return parse_usd_limit(monthly_limit_usd, what=_("a monthly cap"), zero_means=_("no cap"))
    except ValidationError as error:
        raise ValidationError({"monthly_limit_usd": error.messages}) from None


@transaction.atomic(durable=True)
def membership_limit_update(
    *, actor: User | None, membership: Membership, monthly_limit_usd: str | int | Decimal | None
) -> Membership:
    """Set what all of a member's keys in the team may spend in a calendar month of the team's
    time zone (0 or "" clears it); by the team's leads and staff. One audit row when it
    changed, and the member's keys in the team read it on their next request."""
    cap = membership_limit_validate(
        actor=actor, membership=membership, monthly_limit_usd=monthly_limit_usd
    )
    stored = Membership.objects.select_for_update().get(pk=membership.pk)
    membership.monthly_limit_usd = cap
    if stored.monthly_limit_usd == cap:
        return membership
    membership.save(update_fields=["monthly_limit_usd"])
    audit_record(
        action=AuditEvent.Action.MEMBER_CAP_UPDATED,
        actor=actor,
        subject=membership.user,
        team=membership.team,
        changes={"monthly_limit_usd": [_audit_value(stored.monthly_limit_usd), _audit_value(cap)]},
    )
    invalidate_key_state(
        ApiKey.objects.filter(team_id=membership.team_id, owner_id=membership.user_id).values_list(
            "digest", flat=True
        )
    )
    return membership


def _audit_value(value: Any) -> Any:
    """A JSON-safe form for the audit trail: amounts as plain decimals ("25", "0.5")."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value
