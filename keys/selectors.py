"""Every scoped read: what an actor may see. Tenant isolation lives here and nowhere else.

Anything outside an actor's scope is simply absent from these querysets, so the interfaces
answer 404 for another team's objects, never 403 (which would confirm they exist).

Team memberships give everyone their scope. Staff reach beyond it only as far as their Django
model permissions go, by the admin's own test (`staff_may`): each selector takes the
`staff_permission` that widens it to every team, and a write asks for the scope of the
permission it needs ("keys.change_apikey" to change a key), so staff without that permission
are treated, for that action, like anyone else.
"""

from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from .models import (
    ApiKey,
    ApiToken,
    AuditEvent,
    Group,
    Invitation,
    Membership,
    Team,
    digest_key,
)


def staff_may(*, actor: User, permission: str | None) -> bool:
    """Whether the actor's staff powers include `permission` ("keys.change_apikey"), by the
    admin's test: an active staff member who holds it (superusers hold every permission), and
    the right to change a model includes the right to view it, as in the admin."""
    if permission is None or not (actor.is_active and actor.is_staff):
        return False
    if actor.has_perm(permission):
        return True
    app_label, codename = permission.split(".")
    action, _, model_name = codename.partition("_")
    return action == "view" and actor.has_perm(f"{app_label}.change_{model_name}")


def team_list(*, actor: User, staff_permission: str | None = "keys.view_team") -> QuerySet[Team]:
    """Teams the actor belongs to; every team for staff with `staff_permission`."""
    if staff_may(actor=actor, permission=staff_permission):
        return Team.objects.all()
    return Team.objects.filter(memberships__user=actor)


def membership_for(*, actor: User, team: Team) -> Membership | None:
    return Membership.objects.filter(team=team, user=actor).first()


def is_team_lead(*, actor: User, team: Team, staff_permission: str | None = None) -> bool:
    """Whether the actor leads `team`, or acts as its lead as staff with `staff_permission`
    (the permission of the lead's action at hand, e.g. "keys.add_membership")."""
    if staff_may(actor=actor, permission=staff_permission):
        return True
    return Membership.objects.filter(team=team, user=actor, role=Membership.Role.LEAD).exists()


def team_list_with_role(*, actor: User) -> QuerySet[Team]:
    """team_list, each team annotated with the actor's `role` in it (None where staff are not
    members), by name."""
    own_role = Membership.objects.filter(team=OuterRef("pk"), user=actor).values("role")[:1]
    return team_list(actor=actor).annotate(role=Subquery(own_role)).order_by("name", "id")


def api_key_list(
    *, actor: User, team: Team | None = None, staff_permission: str | None = "keys.view_apikey"
) -> QuerySet[ApiKey]:
    """Keys the actor may see (or act on, with the permission of that action), in `team` or in
    every team: all keys of the teams they lead, their own keys in the teams they belong to,
    every key for staff with `staff_permission`. One query, whatever the number of teams."""
    keys = ApiKey.objects.select_related("owner", "group", "team")
    if not staff_may(actor=actor, permission=staff_permission):
        memberships = Membership.objects.filter(user=actor)
        led = memberships.filter(role=Membership.Role.LEAD).values("team_id")
        # A former member's keys stay in the team (disabled) but leave their scope.
        keys = keys.filter(
            Q(team_id__in=led) | Q(owner=actor, team_id__in=memberships.values("team_id"))
        )
    return keys if team is None else keys.filter(team=team)


def api_key_get(
    *,
    actor: User,
    key_id: int,
    team: Team | None = None,
    staff_permission: str | None = "keys.view_apikey",
) -> ApiKey:
    """One key in the actor's scope (in `team`, if given); raises ApiKey.DoesNotExist
    otherwise."""
    return api_key_list(actor=actor, team=team, staff_permission=staff_permission).get(pk=key_id)


def key_event_list(*, actor: User, key: ApiKey) -> QuerySet[AuditEvent]:
    """The key's audit trail, for those who may see the key as a member or lead, and for staff
    who may view audit events."""
    visible = api_key_list(actor=actor, team=key.team, staff_permission="keys.view_auditevent")
    if not visible.filter(pk=key.pk).exists():
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(key=key).select_related("actor")


# The filters team_event_list takes. A false value (None, "") leaves that filter out.
TEAM_EVENT_FILTERS = frozenset(
    {
        "action",  # one AuditEvent.Action
        "since",  # a datetime: events at or after it
        "until",  # a datetime: events before it
    }
)


def team_event_list(
    *,
    actor: User,
    team: Team,
    filters: Mapping[str, Any] | None = None,
    staff_permission: str | None = "keys.view_auditevent",
) -> QuerySet[AuditEvent]:
    """The team's audit trail (its keys, members, invitations and settings), newest first, for
    its leads and for staff with `staff_permission`; empty for anyone else. One query."""
    filters = filters or {}
    unknown = set(filters) - TEAM_EVENT_FILTERS
    if unknown:
        raise ValueError(f"Unknown event filters: {', '.join(sorted(unknown))}.")
    events = AuditEvent.objects.filter(team=team).select_related("actor")
    if not staff_may(actor=actor, permission=staff_permission):
        # A join rather than a second query: one membership per user and team, so no duplicates.
        events = events.filter(
            team__memberships__user=actor, team__memberships__role=Membership.Role.LEAD
        )
    if filters.get("action"):
        events = events.filter(action=filters["action"])
    if filters.get("since"):
        events = events.filter(created_at__gte=filters["since"])
    if filters.get("until"):
        events = events.filter(created_at__lt=filters["until"])
    return events.order_by("-created_at", "-id")


def group_list_for_team(*, team: Team) -> QuerySet[Group]:
    """Groups the team's keys may use."""
    return team.available_groups()


def member_list(
    *, actor: User, team: Team, staff_permission: str | None = "keys.view_membership"
) -> QuerySet[Membership]:
    """The team's members, for its leads and for staff with `staff_permission`. Members do
    not see one another: the list carries everyone's email address."""
    if not is_team_lead(actor=actor, team=team, staff_permission=staff_permission):
        return Membership.objects.none()
    return Membership.objects.filter(team=team).select_related("user")


def member_list_with_key_counts(*, actor: User, team: Team) -> QuerySet[Membership]:
    """member_list, each member annotated with `key_count`: how many keys they own in `team`."""
    return member_list(actor=actor, team=team).annotate(
        key_count=Count("user__api_keys", filter=Q(user__api_keys__team=team))
    )


# The values of ApiKey.state, in the order the portal offers them as a filter.
KEY_STATES = ("enabled", "disabled", "expired", "quota_used_up")


# The filters api_key_search takes. A false value (None, "") leaves that filter out.
KEY_FILTERS = frozenset(
    {
        "team",  # a team's slug
        "status",  # ApiKey.status
        "state",  # ApiKey.state, one of KEY_STATES
        "group_id",
        "owner_id",
        "owner_username",
        "name_contains",
        "ordering",  # a field to order by, "-" first for descending; ties newest first
    }
)


def api_key_search(
    *,
    actor: User,
    team: Team,
    filters: Mapping[str, Any] | None = None,
    staff_permission: str | None = "keys.view_apikey",
) -> QuerySet[ApiKey]:
    """api_key_list of `team` narrowed by `filters` (KEY_FILTERS)."""
    keys = api_key_list(actor=actor, team=team, staff_permission=staff_permission)
    return _narrowed_keys(keys, filters or {})


def api_key_search_all_teams(
    *,
    actor: User,
    filters: Mapping[str, Any] | None = None,
    staff_permission: str | None = "keys.view_apikey",
) -> QuerySet[ApiKey]:
    """api_key_list over every team, narrowed by `filters` (KEY_FILTERS), so the API's key
    list follows the portal's rules exactly. One query, whatever the number of teams."""
    return _narrowed_keys(
        api_key_list(actor=actor, staff_permission=staff_permission), filters or {}
    )


def _narrowed_keys(keys: QuerySet[ApiKey], filters: Mapping[str, Any]) -> QuerySet[ApiKey]:
    """`keys` narrowed by `filters`. `state` selects keys whose ApiKey.state is that value, so a
    filtered list shows the same badges as the unfiltered one. A filter this does not know is a
    programming error: ignoring it would quietly widen the list."""
    unknown = set(filters) - KEY_FILTERS
    if unknown:
        raise ValueError(f"Unknown key filters: {', '.join(sorted(unknown))}.")
    now = timezone.now()
    quota_used_up = Q(quota_limit_usd__gt=0, spent_usd__gte=F("quota_limit_usd"))
    state = filters.get("state")
    if state == "enabled":
        keys = keys.usable(now).exclude(quota_used_up)
    elif state == "disabled":
        keys = keys.filter(status=ApiKey.Status.DISABLED)
    elif state == "expired":
        keys = keys.expired_but_enabled(now)
    elif state == "quota_used_up":
        keys = keys.usable(now).filter(quota_used_up)
    lookups = {
        "team": "team__slug",
        "status": "status",
        "group_id": "group_id",
        "owner_id": "owner_id",
        "owner_username": "owner__username",
        "name_contains": "name__icontains",
    }
    for name, lookup in lookups.items():
        value = filters.get(name)
        if value is not None and value != "":
            keys = keys.filter(**{lookup: value})
    if filters.get("ordering"):
        keys = keys.order_by(filters["ordering"], "-id")
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


def member_user_list(*, actor: User, team: Team) -> QuerySet:
    """The people a lead of `team` may make a key's owner: its members, by username. Empty for
    anyone else, so no member's name reaches a member."""
    if not is_team_lead(actor=actor, team=team, staff_permission="keys.add_apikey"):
        return get_user_model().objects.none()
    return get_user_model().objects.filter(memberships__team=team).order_by("username")


def team_list_led(*, actor: User) -> QuerySet[Team]:
    """Teams the actor leads (as a member: staff powers are the caller's to add)."""
    return Team.objects.filter(memberships__user=actor, memberships__role=Membership.Role.LEAD)


def api_token_list(*, actor: User) -> QuerySet[ApiToken]:
    """The actor's own API tokens, revoked ones included (staff manage others' in the admin)."""
    return ApiToken.objects.filter(user=actor).select_related("created_by")


def group_list_for_actor(
    *, actor: User, filters: Mapping[str, Any] | None = None
) -> QuerySet[Group]:
    """Groups any of the actor's teams may use; staff who may view groups see every group,
    inactive ones too. `filters`: "team", a slug: only the groups that team may use, if the
    actor may see the team (team_list). One query, whatever the number of teams."""
    filters = filters or {}
    unknown = set(filters) - {"team"}
    if unknown:
        raise ValueError(f"Unknown group filters: {', '.join(sorted(unknown))}.")
    if filters.get("team"):
        return _groups_available_to(team_list(actor=actor).filter(slug=filters["team"]))
    if staff_may(actor=actor, permission="keys.view_group"):
        return Group.objects.all()
    return _groups_available_to(team_list(actor=actor, staff_permission=None))


def group_list_for_key_filter(*, actor: User, team: Team) -> QuerySet[Group]:
    """The groups a team's key list can be filtered by: those the team may use, and any group
    a key the actor sees there is still in (one the team may no longer use)."""
    visible = api_key_list(actor=actor, team=team)
    return Group.objects.filter(
        Q(pk__in=visible.values("group_id")) | Q(pk__in=group_list_for_team(team=team))
    ).order_by("name")


def group_list_for_key(*, team: Team, key: ApiKey | None = None) -> QuerySet[Group]:
    """The groups a key of `team` may be given. A group the team may no longer use stays
    selectable on the key already in it, so editing the name does not force a group change."""
    groups = group_list_for_team(team=team)
    if key is not None:
        groups = groups | Group.objects.filter(pk=key.group_id)
    return groups.distinct().order_by("name")


def _groups_available_to(teams: QuerySet[Team]) -> QuerySet[Group]:
    """The active groups any of `teams` may use, as Team.available_groups decides for one team:
    the groups a team allows, or every active group if it allows none in particular."""
    allowed = Team.allowed_groups.through.objects.filter(team__in=teams).values("group_id")
    allows_any = teams.filter(allowed_groups__isnull=True)
    return Group.objects.filter(Q(pk__in=allowed) | Q(Exists(allows_any)), is_active=True)


def teammate_list(*, actor: User, staff_permission: str | None = "keys.add_apikey") -> QuerySet:
    """The members of the actor's teams (everyone, for staff with `staff_permission`): the
    people the actor may name as a key's owner, and no one else."""
    users = get_user_model().objects.all()
    if staff_may(actor=actor, permission=staff_permission):
        return users
    teams = team_list(actor=actor, staff_permission=None)
    return users.filter(memberships__team__in=teams).distinct()


def invitation_list(*, actor: User, team: Team) -> QuerySet[Invitation]:
    """The team's pending invitations, for its leads only: the addresses invited are theirs
    to see, not the members'."""
    if not is_team_lead(actor=actor, team=team):
        return Invitation.objects.none()
    return Invitation.objects.pending().filter(team=team).select_related("invited_by")


def invitation_for_token(*, token: str) -> Invitation | None:
    """The invitation an emailed link carries, whatever its state; None for an unknown token.
    Anyone signed in who holds the link may see what it invites to, as its email said."""
    return Invitation.objects.filter(digest=digest_key(token)).select_related("team").first()
