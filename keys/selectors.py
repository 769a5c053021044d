"""Every scoped read: what an actor may see. Tenant isolation lives here and nowhere else.

Anything outside an actor's scope is simply absent from these querysets, so the interfaces
answer 404 for another team's objects, never 403 (which would confirm they exist).
"""

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db.models import QuerySet

from .models import ApiKey, Group, KeyEvent, Membership, Team


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
