"""Every scoped read: what an actor may see. Tenant isolation lives here and nowhere else.

Anything outside an actor's scope is simply absent from these querysets, so the interfaces
answer 404 for another team's objects, never 403 (which would confirm they exist).

Team memberships give everyone their scope. Staff reach beyond it only as far as their Django
model permissions go, by the admin's own test (`staff_may`): each selector takes the
`staff_permission` that widens it to every team, and a write asks for the scope of the
permission it needs ("keys.change_apikey" to change a key), so staff without that permission
are treated, for that action, like anyone else.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .models import ApiKey, ApiToken, Group, Invitation, KeyEvent, Membership, Team, digest_key


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


def api_key_list(
    *, actor: User, team: Team, staff_permission: str | None = "keys.view_apikey"
) -> QuerySet[ApiKey]:
    """Keys of `team` the actor may see (or act on, with the permission of that action): all of
    them for leads and staff with `staff_permission`, own keys for members."""
    keys = ApiKey.objects.filter(team=team).select_related("owner", "group", "team")
    if is_team_lead(actor=actor, team=team, staff_permission=staff_permission):
        return keys
    if Membership.objects.filter(team=team, user=actor).exists():
        return keys.filter(owner=actor)
    return keys.none()


def api_key_get(
    *, actor: User, team: Team, key_id: int, staff_permission: str | None = "keys.view_apikey"
) -> ApiKey:
    """One key in the actor's scope; raises ApiKey.DoesNotExist otherwise."""
    return api_key_list(actor=actor, team=team, staff_permission=staff_permission).get(pk=key_id)


def key_event_list(*, actor: User, key: ApiKey) -> QuerySet[KeyEvent]:
    """The key's audit trail, for those who may see the key as a member or lead, and for staff
    who may view audit events."""
    visible = api_key_list(actor=actor, team=key.team, staff_permission="keys.view_keyevent")
    if not visible.filter(pk=key.pk).exists():
        return KeyEvent.objects.none()
    return KeyEvent.objects.filter(key=key).select_related("actor")


def group_list_for_team(*, team: Team) -> QuerySet[Group]:
    """Groups the team's keys may use."""
    return team.available_groups()


def member_list(
    *, actor: User, team: Team, staff_permission: str | None = "keys.view_membership"
) -> QuerySet[Membership]:
    """The team's members, for its members and for staff with `staff_permission`."""
    if not team_list(actor=actor, staff_permission=staff_permission).filter(pk=team.pk).exists():
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
    staff_permission: str | None = "keys.view_apikey",
) -> QuerySet[ApiKey]:
    """api_key_list narrowed by the portal's filters; `state` selects keys whose ApiKey.state
    is that value, so a filtered list shows the same badges as the unfiltered one."""
    keys = api_key_list(actor=actor, team=team, staff_permission=staff_permission)
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
    *,
    actor: User,
    team: Team | None = None,
    staff_permission: str | None = "keys.view_apikey",
    **filters: str | int | None,
) -> QuerySet[ApiKey]:
    """api_key_search over every team the actor belongs to (or just `team`), with its rules
    and filters, so the API's team-wide key list follows the portal's exactly; over every
    team for staff with `staff_permission`."""
    teams = (
        [team] if team is not None else team_list(actor=actor, staff_permission=staff_permission)
    )
    keys = ApiKey.objects.none()
    for each_team in teams:
        keys = keys | api_key_search(
            actor=actor, team=each_team, staff_permission=staff_permission, **filters
        )
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
    """Teams the actor leads (as a member: staff powers are the caller's to add)."""
    return Team.objects.filter(memberships__user=actor, memberships__role=Membership.Role.LEAD)


def api_token_list(*, actor: User) -> QuerySet[ApiToken]:
    """The actor's own API tokens, revoked ones included (staff manage others' in the admin)."""
    return ApiToken.objects.filter(user=actor).select_related("created_by")


def group_list_for_actor(*, actor: User) -> QuerySet[Group]:
    """Groups any of the actor's teams may use; staff who may view groups see every group,
    inactive ones too."""
    if staff_may(actor=actor, permission="keys.view_group"):
        return Group.objects.all()
    group_ids = {
        group_id
        for team in team_list(actor=actor, staff_permission=None)
        for group_id in group_list_for_team(team=team).values_list("pk", flat=True)
    }
    return Group.objects.filter(pk__in=group_ids)


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
