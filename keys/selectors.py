"""Every scoped read: what an actor may see. Tenant isolation lives here and nowhere else.

Anything outside an actor's scope is simply absent from these querysets, so the interfaces
answer 404 for another team's objects, never 403 (which would confirm they exist).
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .models import ApiKey, ApiToken, Group, KeyEvent, Membership, Team


def team_list(*, actor: User) -> QuerySet[Team]:
    """Teams the actor belongs to (staff see every team)."""
    if actor.is_staff:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=actor)


def membership_for(*, actor: User, team: Team) -> Membership | None:
    return Membership.objects.filter(team=team, user=actor).first()


def is_team_lead(*, actor: User, team: Team) -> bool:
    if actor.is_staff:
        return True
    return Membership.objects.filter(team=team, user=actor, role=Membership.Role.LEAD).exists()


def api_key_list(*, actor: User, team: Team) -> QuerySet[ApiKey]:
    """Keys of `team` the actor may see: all of them for leads and staff, own keys for members."""
    keys = ApiKey.objects.filter(team=team).select_related("owner", "group", "team")
    if is_team_lead(actor=actor, team=team):
        return keys
    if Membership.objects.filter(team=team, user=actor).exists():
        return keys.filter(owner=actor)
    return keys.none()


def api_key_get(*, actor: User, team: Team, key_id: int) -> ApiKey:
    """One key in the actor's scope; raises ApiKey.DoesNotExist otherwise."""
    return api_key_list(actor=actor, team=team).get(pk=key_id)


def key_event_list(*, actor: User, key: ApiKey) -> QuerySet[KeyEvent]:
    if not api_key_list(actor=actor, team=key.team).filter(pk=key.pk).exists():
        return KeyEvent.objects.none()
    return KeyEvent.objects.filter(key=key).select_related("actor")


def group_list_for_team(*, team: Team) -> QuerySet[Group]:
    """Groups the team's keys may use."""
    return team.available_groups()


def member_list(*, actor: User, team: Team) -> QuerySet[Membership]:
    if not team_list(actor=actor).filter(pk=team.pk).exists():
        return Membership.objects.none()
    return Membership.objects.filter(team=team).select_related("user")


# The values of ApiKey.state, in the order the portal offers them as a filter.
KEY_STATES = ("enabled", "disabled", "expired", "quota_used_up")


def api_key_search(
    *,
    actor: User,
    team: Team,
    state: str = "",
    group_id: int | None = None,
    owner_id: int | None = None,
    name_contains: str = "",
) -> QuerySet[ApiKey]:
    """api_key_list narrowed by the portal's filters; `state` selects keys whose ApiKey.state
    is that value, so a filtered list shows the same badges as the unfiltered one."""
    keys = api_key_list(actor=actor, team=team)
    now = timezone.now()
    quota_used_up = Q(quota_limit_usd__gt=0, spent_usd__gte=F("quota_limit_usd"))
    if state == "enabled":
        keys = keys.usable(now).exclude(quota_used_up)
    elif state == "disabled":
        keys = keys.filter(status=ApiKey.Status.DISABLED)
    elif state == "expired":
        keys = keys.expired_but_enabled(now)
    elif state == "quota_used_up":
        keys = keys.usable(now).filter(quota_used_up)
    if group_id is not None:
        keys = keys.filter(group_id=group_id)
    if owner_id is not None:
        keys = keys.filter(owner_id=owner_id)
    if name_contains:
        keys = keys.filter(name__icontains=name_contains)
    return keys


def api_key_search_all_teams(
    *, actor: User, team: Team | None = None, **filters: str | int | None
) -> QuerySet[ApiKey]:
    """api_key_search over every team the actor belongs to (or just `team`), with its rules
    and filters, so the API's team-wide key list follows the portal's exactly."""
    teams = [team] if team is not None else team_list(actor=actor)
    keys = ApiKey.objects.none()
    for each_team in teams:
        keys = keys | api_key_search(actor=actor, team=each_team, **filters)
    return keys


def owner_list(*, team: Team) -> QuerySet:
    """People who own or may own keys of `team`: its members, and former members who still
    own (disabled) keys there."""
    return (
        get_user_model()
        .objects.filter(Q(memberships__team=team) | Q(api_keys__team=team))
        .order_by("username")
        .distinct()
    )


def team_list_led(*, actor: User) -> QuerySet[Team]:
    """Teams whose every key and usage row the actor may see: led ones (staff: all)."""
    if actor.is_staff:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=actor, memberships__role=Membership.Role.LEAD)


def api_token_list(*, actor: User) -> QuerySet[ApiToken]:
    """The actor's own API tokens, revoked ones included (staff manage others' in the admin)."""
    return ApiToken.objects.filter(user=actor).select_related("created_by")


def group_list_for_actor(*, actor: User) -> QuerySet[Group]:
    """Groups any of the actor's teams may use; staff see every group, inactive ones too."""
    if actor.is_staff:
        return Group.objects.all()
    group_ids = {
        group_id
        for team in team_list(actor=actor)
        for group_id in group_list_for_team(team=team).values_list("pk", flat=True)
    }
    return Group.objects.filter(pk__in=group_ids)
