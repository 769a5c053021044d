"""Writes to teams and their members; each action writes one audit row in the team's trail.

membership_changes_validate answers what a batch of additions, role changes and removals
would refuse, writing nothing, for the admin's team page, which applies such a batch at once.
"""

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from keys.cache import invalidate_key_state
from keys.models import ApiKey, AuditEvent, Group, Membership, Team
from keys.validators import normalise_rate_limit, parse_quota

from .audit import audit_change, audit_record
from .cleaning import _full_clean
from .keys import _disable

# What a team's audit row records of the team itself.
TEAM_FIELDS = (
    "name",
    "slug",
    "members_can_create_keys",
    "default_group",
    "default_quota_limit_usd",
    "default_rate_limit",
    "default_expiry_days",
)
# What a team's leads set on the team page: who may create keys, and where members' new keys
# start (keys.policy lets a member only tighten these).
TEAM_KEY_SETTINGS = TEAM_FIELDS[2:]


@transaction.atomic(durable=True)
def team_save(*, team: Team, actor: User | None) -> Team:
    """Create a team or change it (staff, in the admin); one row when something changed."""
    stored = None if team.pk is None else Team.objects.get(pk=team.pk)
    errors: dict[str, list[str]] = {}
    if team.pk is not None:
        _check_default_group(team, errors)
    _full_clean(team, errors)
    # The budget and the clock are staff's own action (team_budget_update), audited and seen by
    # the relay at once: a general save of a team never writes them.
    team.save(update_fields=None if stored is None else TEAM_FIELDS)
    _audit_team(team, stored, actor)
    return team


@transaction.atomic(durable=True)
def team_key_settings_update(*, team: Team, actor: User | None, **changes: Any) -> Team:
    """A lead's change of TEAM_KEY_SETTINGS, from user input: quota and rate limit are parsed
    as on a key. One audit row when something changed."""
    unknown = set(changes) - set(TEAM_KEY_SETTINGS)
    if unknown:
        raise TypeError(
            f"team_key_settings_update() got fields it cannot change: {sorted(unknown)}"
        )
    stored = Team.objects.get(pk=team.pk)
    errors: dict[str, list[str]] = {}
    converters = {
        "default_quota_limit_usd": parse_quota,
        "default_rate_limit": normalise_rate_limit,
    }
    for field, value in changes.items():
        try:
            setattr(team, field, converters.get(field, lambda value: value)(value))
        except ValidationError as error:
            errors.setdefault(field, []).extend(error.messages)
    if "default_group" in changes and "default_group" not in errors:
        _check_default_group(team, errors)
    try:
        _full_clean(team, errors)
    except ValidationError:
        team.refresh_from_db()
        raise
    if _audit_team(team, stored, actor):
        team.save(update_fields=list(changes))
    return team


def _check_default_group(team: Team, errors: dict[str, list[str]]) -> None:
    group = team.default_group
    if group is not None and not team.available_groups().filter(pk=group.pk).exists():
        errors.setdefault("default_group", []).append(
            _("Group “%(group)s” is not available to team %(team)s.")
            % {"group": group.name, "team": team.name}
        )


def _audit_team(team: Team, stored: Team | None, actor: User | None) -> bool:
    """One row of what changed on `team` since `stored` (None: it is new); whether anything
    did."""
    changes = {
        field: [None if stored is None else _team_value(stored, field), _team_value(team, field)]
        for field in TEAM_FIELDS
        if stored is None or _team_value(stored, field) != _team_value(team, field)
    }
    if stored is None:
        # A new team's row names it, and any setting that is not the default.
        blank = Team()
        changes = {
            field: change
            for field, change in changes.items()
            if field in ("name", "slug") or change[1] != _team_value(blank, field)
        }
    if changes:
        action = (
            AuditEvent.Action.TEAM_CREATED if stored is None else AuditEvent.Action.TEAM_UPDATED
        )
        audit_record(action=action, actor=actor, subject=team, changes=changes)
    return bool(changes)


def _team_value(team: Team, field: str) -> Any:
    """A JSON-safe form of a team setting for the audit trail."""
    value = getattr(team, field)
    if isinstance(value, Group):
        return value.name
    if field == "default_quota_limit_usd":
        return format(Decimal(value).normalize(), "f")
    return value


@transaction.atomic(durable=True)
def membership_add(*, team: Team, user: User, role: str, actor: User | None) -> Membership:
    membership = join_team(team=team, user=user, role=role)
    audit_record(
        action=AuditEvent.Action.MEMBER_ADDED,
        actor=actor,
        subject=user,
        team=team,
        changes={"role": [None, role]},
    )
    return membership


def join_team(*, team: Team, user: User, role: str) -> Membership:
    """The membership itself, inside the action that audits how it came about (membership_add,
    invitation_accept): one action, one audit row."""
    if Membership.objects.filter(team=team, user=user).exists():
        raise _already_member(team, user)
    membership = Membership(team=team, user=user, role=role)
    membership.full_clean(validate_constraints=False)
    membership.save()
    return membership


@transaction.atomic(durable=True)
def membership_set_role(*, membership: Membership, role: str, actor: User | None) -> Membership:
    if role == membership.role:
        return membership
    if membership.role == Membership.Role.LEAD:
        _keep_a_lead(membership, removing=False)
    changes = {"role": [membership.role, role]}
    membership.role = role
    membership.full_clean(validate_constraints=False)
    membership.save(update_fields=["role"])
    audit_record(
        action=AuditEvent.Action.MEMBER_ROLE_CHANGED,
        actor=actor,
        subject=membership.user,
        team=membership.team,
        changes=changes,
    )
    return membership


@transaction.atomic(durable=True)
def membership_remove(*, membership: Membership, actor: User | None) -> int:
    """Remove a member. Their keys in the team are disabled (audited), never deleted.

    Returns how many keys were disabled.
    """
    if membership.role == Membership.Role.LEAD:
        _keep_a_lead(membership, removing=True)
    keys = ApiKey.objects.filter(
        team=membership.team, owner=membership.user, status=ApiKey.Status.ENABLED
    )
    disabled = 0
    for key in keys.select_for_update():
        _disable(key=key, actor=actor)
        disabled += 1
    audit_record(
        action=AuditEvent.Action.MEMBER_REMOVED,
        actor=actor,
        subject=membership.user,
        team=membership.team,
        changes={"role": [membership.role, None]},
    )
    membership.delete()
    return disabled


def membership_changes_validate(
    *,
    team: Team,
    added: Sequence[tuple[User, str]] = (),
    role_changes: Sequence[tuple[Membership, str]] = (),
    removed: Sequence[Membership] = (),
) -> None:
    """Raise the ValidationError that applying these changes in this order (additions, role
    changes, removals, as the admin applies them) would raise; writes nothing. Each role
    change and removal is given the stored membership."""
    for user, _role in added:
        if Membership.objects.filter(team=team, user=user).exists():
            raise _already_member(team, user)
    leads = set(
        Membership.objects.filter(team=team, role=Membership.Role.LEAD).values_list("pk", flat=True)
    )
    # A lead added here counts as one, under a key no stored membership can have.
    leads |= {("new", user.pk) for user, role in added if role == Membership.Role.LEAD}
    for membership, role in role_changes:
        if role == membership.role:
            continue
        if membership.role == Membership.Role.LEAD:
            if not leads - {membership.pk}:
                raise _last_lead(team, removing=False)
            leads.discard(membership.pk)
        elif role == Membership.Role.LEAD:
            leads.add(membership.pk)
    for membership in removed:
        if membership.role == Membership.Role.LEAD:
            if not leads - {membership.pk}:
                raise _last_lead(team, removing=True)
            leads.discard(membership.pk)


def _keep_a_lead(membership: Membership, *, removing: bool) -> None:
    # Locking the team's lead rows stops two leads who demote or remove each other at the same
    # time from both seeing the other one as the remaining lead.
    lead_ids = set(
        Membership.objects.select_for_update()
        .filter(team_id=membership.team_id, role=Membership.Role.LEAD)
        .values_list("pk", flat=True)
    )
    if not lead_ids - {membership.pk}:
        raise _last_lead(membership.team, removing=removing)


def _last_lead(team: Team, *, removing: bool) -> ValidationError:
    if removing:
        message = _("Cannot remove the last lead of %(team)s: add another first.")
    else:
        message = _("Cannot change the role of the last lead of %(team)s: add another first.")
    message %= {"team": team.name}
    return ValidationError({"role": ValidationError(message, code="last_lead")})


def _already_member(team: Team, user: User) -> ValidationError:
    message = _("%(user)s is already a member of %(team)s.") % {"user": user, "team": team.name}
    return ValidationError({"user": ValidationError(message, code="already_member")})


@transaction.atomic(durable=True)
def team_set_allowed_groups(*, team: Team, groups: list[Group], actor: User | None) -> Team:
    before = sorted(team.allowed_groups.values_list("name", flat=True))
    team.allowed_groups.set(groups)
    audit_change(
        action=AuditEvent.Action.TEAM_ALLOWED_GROUPS_CHANGED,
        actor=actor,
        subject=team,
        field="allowed_groups",
        before=before,
        after=sorted(group.name for group in groups),
    )
    invalidate_key_state(team.api_keys.values_list("digest", flat=True))
    return team
