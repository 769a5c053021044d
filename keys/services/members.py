"""Writes to teams and their members; each writes one TeamEvent (the team's audit trail)."""

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db import transaction

from keys.cache import invalidate_key_state
from keys.models import ApiKey, Group, Invitation, Membership, Team, TeamEvent

from .keys import api_key_disable


@transaction.atomic
def membership_add(*, team: Team, user: User, role: str, actor: User | None) -> Membership:
    membership = join_team(team=team, user=user, role=role)
    record_team_event(
        team=team,
        action=TeamEvent.Action.MEMBER_ADDED,
        actor=actor,
        subject=user.get_username(),
        changes={"role": [None, role]},
    )
    return membership


def join_team(*, team: Team, user: User, role: str) -> Membership:
    """The membership itself, for the services that audit how it came about (membership_add,
    invitation_accept): one action, one audit row."""
    if Membership.objects.filter(team=team, user=user).exists():
        message = f"{user} is already a member of {team.name}."
        raise ValidationError({"user": ValidationError(message, code="already_member")})
    membership = Membership(team=team, user=user, role=role)
    membership.full_clean(validate_constraints=False)
    membership.save()
    return membership


@transaction.atomic
def membership_set_role(*, membership: Membership, role: str, actor: User | None) -> Membership:
    if role == membership.role:
        return membership
    if membership.role == Membership.Role.LEAD:
        _keep_a_lead(membership, "change the role of")
    changes = {"role": [membership.role, role]}
    membership.role = role
    membership.full_clean(validate_constraints=False)
    membership.save(update_fields=["role"])
    record_team_event(
        team=membership.team,
        action=TeamEvent.Action.ROLE_CHANGED,
        actor=actor,
        subject=membership.user.get_username(),
        changes=changes,
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: User | None) -> int:
    """Remove a member. Their keys in the team are disabled (audited), never deleted.

    Returns how many keys were disabled.
    """
    if membership.role == Membership.Role.LEAD:
        _keep_a_lead(membership, "remove")
    keys = ApiKey.objects.filter(
        team=membership.team, owner=membership.user, status=ApiKey.Status.ENABLED
    )
    disabled = 0
    for key in keys.select_for_update():
        api_key_disable(key=key, actor=actor)
        disabled += 1
    record_team_event(
        team=membership.team,
        action=TeamEvent.Action.MEMBER_REMOVED,
        actor=actor,
        subject=membership.user.get_username(),
        changes={"role": [membership.role, None]},
    )
    membership.delete()
    return disabled


def _keep_a_lead(membership: Membership, verb: str) -> None:
    # Locking the team's lead rows stops two leads who demote or remove each other at the same
    # time from both seeing the other one as the remaining lead.
    lead_ids = set(
        Membership.objects.select_for_update()
        .filter(team_id=membership.team_id, role=Membership.Role.LEAD)
        .values_list("pk", flat=True)
    )
    if not lead_ids - {membership.pk}:
        message = f"Cannot {verb} the last lead of {membership.team.name}: add another first."
        raise ValidationError({"role": ValidationError(message, code="last_lead")})


@transaction.atomic
def team_set_allowed_groups(*, team: Team, groups: list[Group], actor: User | None) -> Team:
    before = sorted(team.allowed_groups.values_list("name", flat=True))
    team.allowed_groups.set(groups)
    after = sorted(group.name for group in groups)
    if after != before:
        record_team_event(
            team=team,
            action=TeamEvent.Action.ALLOWED_GROUPS_CHANGED,
            actor=actor,
            changes={"allowed_groups": [before, after]},
        )
    invalidate_key_state(team.api_keys.values_list("digest", flat=True))
    return team


def record_team_event(
    *,
    team: Team,
    action: str,
    actor: User | None,
    subject: str = "",
    changes: dict,
    invitation: Invitation | None = None,
) -> TeamEvent:
    """One row of the team's audit trail, written by each service that changes who is in it."""
    return TeamEvent.objects.create(
        team=team,
        invitation=invitation,
        actor=actor,
        action=action,
        subject=subject,
        changes=changes,
    )
