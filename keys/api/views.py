"""The REST API's views: each reads through keys.selectors and writes through keys.services.

What a caller may see is decided by the selectors alone, so another team's object is simply not
found (404) and an action on it changes nothing. Within what they can see, members who try a
lead's action get 403. Staff reach other teams only with the Django permission of the action
at hand, the admin's own (keys.selectors.staff_may); without it they are like anyone else.
"""

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from drf_spectacular.views import SpectacularAPIView
from rest_framework import mixins, permissions, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.fields import Field
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from core.api.query import validated_query
from core.api.schema import FIELD_ERRORS, conflict, filtered_list
from keys import selectors, services
from keys.models import ApiKey, AuditEvent, Group, Invitation, Membership, Team

from .serializers import (
    MAX_ID,
    GroupCreateSerializer,
    GroupFilterSerializer,
    GroupSerializer,
    GroupWriteSerializer,
    InvitationAcceptSerializer,
    InvitationCreateSerializer,
    InvitationSerializer,
    IssuedKeySerializer,
    KeyCreateSerializer,
    KeyEventSerializer,
    KeyFilterSerializer,
    KeySerializer,
    KeyUpdateSerializer,
    MemberRemovedSerializer,
    MemberSerializer,
    MemberUpdateSerializer,
    MeSerializer,
    TeamBudgetUpdateSerializer,
    TeamSerializer,
)

# The path patterns of the objects' ids. Anything else falls through to not_found (a JSON 404)
# rather than reaching a query: a NUL byte, for one, makes PostgreSQL fail with a 500.
ID_PATTERN = r"[0-9]+"
SLUG_PATTERN = r"[-a-zA-Z0-9_]+"
USERNAME_PATTERN = r"[\w.@+-]+"


def parse_id(value: str) -> int:
    """An id from the path; one past what a row can have is not found, not a database error."""
    number = int(value)
    if not 0 < number <= MAX_ID:
        raise NotFound
    return number


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, for signed-in callers (a token or a portal session) only: it maps
    every endpoint and field, which is no one else's business."""

    permission_classes = [permissions.IsAuthenticated]

    def handle_exception(self, exc: Exception) -> Response:
        # A refusal is JSON like every other API error, whichever schema format was asked for
        # (the YAML renderer would otherwise write the error as YAML).
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


@csrf_exempt  # it changes nothing; without this a POST would get the CSRF failure page (403)
def not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Anything under /api/ that matches no endpoint: JSON like every other API answer."""
    return JsonResponse({"detail": "Not found."}, status=404)


# --- keys -----------------------------------------------------------------------------------


@extend_schema_view(
    list=filtered_list(
        summary="List keys",
        description="Leads see every key of their teams, members their own keys.",
        filters=KeyFilterSerializer,
        item=KeySerializer,
    ),
    create=extend_schema(
        summary="Create a key",
        description="The response carries the full key once; it is never shown again.",
        request=KeyCreateSerializer,
        responses={201: IssuedKeySerializer, 400: FIELD_ERRORS, 403: FIELD_ERRORS},
    ),
    retrieve=extend_schema(summary="Show a key", responses={200: KeySerializer}),
    partial_update=extend_schema(
        summary="Change a key's settings",
        description="A member may tighten what a lead set on their key (a lower quota, daily, "
        "weekly or monthly limit, concurrency or rate limit, fewer addresses, an earlier "
        "expiration) but not loosen it: that is a 403 naming the field.",
        request=KeyUpdateSerializer,
        responses={200: KeySerializer, 400: FIELD_ERRORS, 403: FIELD_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a key",
        description="Its audit trail stays.",
        responses={204: OpenApiResponse(description="Deleted.")},
    ),
)
class KeyViewSet(GenericViewSet):
    # The staff permission each action on one key needs; the rest change the key.
    STAFF_PERMISSIONS = {
        "retrieve": "keys.view_apikey",
        "events": "keys.view_auditevent",
        "destroy": "keys.delete_apikey",
    }
    serializer_class = KeySerializer
    lookup_value_regex = ID_PATTERN
    # PUT would mean "every setting, or reset to default"; settings change one at a time here.
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[ApiKey]:
        # Only for DRF's and the schema's introspection (which model this is): every action
        # reads through the selectors, which need the actor and sometimes the team.
        return ApiKey.objects.none()

    def get_object(self) -> ApiKey:
        try:
            return selectors.api_key_get(
                actor=self.request.user,
                key_id=parse_id(self.kwargs["pk"]),
                staff_permission=self.STAFF_PERMISSIONS.get(self.action, "keys.change_apikey"),
            )
        except ApiKey.DoesNotExist:
            raise NotFound from None

    def list(self, request: Request) -> Response:
        filters = validated_query(KeyFilterSerializer, request.query_params)
        keys = selectors.api_key_search_all_teams(actor=request.user, filters=filters)
        page = self.paginate_queryset(keys)
        return self.get_paginated_response(KeySerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        serializer = KeyCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        settings = dict(serializer.validated_data)
        team = settings.pop("team")
        if "group" not in settings and team.default_group_id is None:
            # Only a team's default group lets a key leave it out.
            raise ValidationError({"group": [Field.default_error_messages["required"]]})
        owner = settings.pop("owner", request.user)
        if owner != request.user and not selectors.is_team_lead(
            actor=request.user, team=team, staff_permission="keys.add_apikey"
        ):
            raise PermissionDenied(f"Only a lead of {team.name} can create keys for others.")
        issued = services.api_key_create(team=team, owner=owner, actor=request.user, **settings)
        return Response(_issued(issued), status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(KeySerializer(self.get_object()).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        key = self.get_object()
        serializer = KeyUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        key = services.api_key_update(key=key, actor=request.user, **serializer.validated_data)
        return Response(KeySerializer(key).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.api_key_delete(key=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Rotate a key",
        description="A new secret, shown once; the old one stops working at once. "
        "Settings and spend stay.",
        request=None,
        responses={200: IssuedKeySerializer},
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str) -> Response:
        issued = services.api_key_rotate(key=self.get_object(), actor=request.user)
        return Response(_issued(issued))

    @extend_schema(
        summary="Enable a key",
        description="A member may enable only a key they disabled themselves (403 otherwise).",
        request=None,
        responses={200: KeySerializer, 400: FIELD_ERRORS, 403: FIELD_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str) -> Response:
        key = services.api_key_enable(key=self.get_object(), actor=request.user)
        return Response(KeySerializer(key).data)

    @extend_schema(summary="Disable a key", request=None, responses={200: KeySerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str) -> Response:
        key = services.api_key_disable(key=self.get_object(), actor=request.user)
        return Response(KeySerializer(key).data)

    @extend_schema(
        summary="A key's audit trail",
        description="Newest first.",
        responses={200: KeyEventSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Response:
        events: QuerySet[AuditEvent] = selectors.key_event_list(
            actor=request.user, key=self.get_object()
        )
        page = self.paginate_queryset(events)
        return self.get_paginated_response(KeyEventSerializer(page, many=True).data)


def _issued(issued: services.IssuedKey) -> dict:
    data = KeySerializer(issued.key).data
    data["key"] = issued.plaintext
    return data


# --- groups ---------------------------------------------------------------------------------


class MayWriteGroups(permissions.BasePermission):
    """Reading is for everyone; creating and changing a group take the admin's permission."""

    # action: (the staff permission it takes, the refusal without it)
    STAFF_PERMISSIONS = {
        "create": (
            "keys.add_group",
            "Creating a group takes the staff permission “Can add group”.",
        ),
        "partial_update": (
            "keys.change_group",
            "Changing a group takes the staff permission “Can change group”.",
        ),
    }

    def has_permission(self, request: Request, view) -> bool:
        if request.method in permissions.SAFE_METHODS or view.action is None:
            # No action means no handler for the method: DRF answers 405 Method Not Allowed.
            return True
        # OPTIONS asks as "metadata" whether a POST would pass: it shows the form only to
        # those who may create.
        action = "create" if view.action == "metadata" else view.action
        permission, self.message = self.STAFF_PERMISSIONS[action]
        return selectors.staff_may(actor=request.user, permission=permission)


# Creating and changing a group are refused alike: a field that fails, or a name that another
# group has.
GROUP_WRITE_REFUSALS = {400: FIELD_ERRORS, 409: conflict("Group with this Name already exists.")}


@extend_schema_view(
    list=filtered_list(
        summary="List groups",
        description="The groups the caller's teams may use (staff: every group).",
        filters=GroupFilterSerializer,
        item=GroupSerializer,
    ),
    retrieve=extend_schema(summary="Show a group"),
    create=extend_schema(
        summary="Create a group (staff)",
        request=GroupCreateSerializer,
        responses={201: GroupSerializer, **GROUP_WRITE_REFUSALS},
    ),
    partial_update=extend_schema(
        summary="Change a group (staff)",
        description="Keys in the group obey the new models and multiplier at once.",
        request=GroupWriteSerializer,
        responses={200: GroupSerializer, **GROUP_WRITE_REFUSALS},
    ),
)
class GroupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    serializer_class = GroupSerializer
    permission_classes = [permissions.IsAuthenticated, MayWriteGroups]
    lookup_value_regex = ID_PATTERN
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[Group]:
        return selectors.group_list_for_actor(actor=self.request.user).order_by("name", "id")

    def get_object(self) -> Group:
        group = self.get_queryset().filter(pk=parse_id(self.kwargs["pk"])).first()
        if group is None:
            raise NotFound
        return group

    def list(self, request: Request) -> Response:
        filters = validated_query(GroupFilterSerializer, request.query_params)
        groups = selectors.group_list_for_actor(actor=request.user, filters=filters)
        page = self.paginate_queryset(groups.order_by("name", "id"))
        return self.get_paginated_response(GroupSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        serializer = GroupCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        group = services.group_save(group=Group(**serializer.validated_data), actor=request.user)
        return Response(GroupSerializer(group).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        group = self.get_object()
        serializer = GroupWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        for field, value in serializer.validated_data.items():
            setattr(group, field, value)
        group = services.group_save(group=group, actor=request.user)
        return Response(GroupSerializer(group).data)


# --- teams and members ----------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List the caller's teams"),
    retrieve=extend_schema(summary="Show a team"),
    partial_update=extend_schema(
        summary="Set a team's monthly budget and time zone (staff)",
        description="Staff who may change teams (and superusers) set them; the team's leads "
        "and members read them but are refused (403), anyone else finds no team (404). The "
        "team's keys obey the change on their next request.",
        request=TeamBudgetUpdateSerializer,
        responses={200: TeamSerializer, 400: FIELD_ERRORS, 403: FIELD_ERRORS},
    ),
)
class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    serializer_class = TeamSerializer
    lookup_field = "slug"
    lookup_value_regex = SLUG_PATTERN
    # Teams are created and renamed in the admin; here staff set only the budget and clock.
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[Team]:
        return selectors.team_list_with_role(actor=self.request.user)

    def partial_update(self, request: Request, slug: str) -> Response:
        # Found as for a change (staff without the permission reach only their own teams);
        # the service then refuses whoever is not staff, naming the field (403).
        teams = selectors.team_list(actor=request.user, staff_permission="keys.change_team")
        team = teams.filter(slug=slug).first()
        if team is None:
            raise NotFound
        serializer = TeamBudgetUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if "monthly_budget_usd" in changes and changes["monthly_budget_usd"] is None:
            changes["monthly_budget_usd"] = ""
        services.team_budget_update(actor=request.user, team=team, **changes)
        return Response(TeamSerializer(self.get_queryset().get(pk=team.pk)).data)


# Every action of the member and invitation viewsets is below /teams/<slug>/: each viewset
# declares this for all its actions.
TEAM_SLUG = OpenApiParameter(
    "team_slug", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=f"^{SLUG_PATTERN}$"
)
USERNAME = OpenApiParameter(
    "username", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=f"^{USERNAME_PATTERN}$"
)


@extend_schema_view(
    list=extend_schema(summary="List a team's members (leads)"),
    partial_update=extend_schema(
        summary="Change a member's role or monthly cap (leads)",
        description="Send the role, the monthly cap (USD across the member's keys in the team, "
        "per calendar month of the team's time zone; 0 or null: none), or both; without either, "
        "nothing changes. The member's keys obey a new cap on their next request.",
        parameters=[USERNAME],
        request=MemberUpdateSerializer,
        responses={
            200: MemberSerializer,
            400: FIELD_ERRORS,
            409: conflict("Cannot change the role of the last lead of Acme: add another first."),
        },
    ),
    destroy=extend_schema(
        summary="Remove a member (leads)",
        description="Their keys in the team are disabled (and audited), never deleted.",
        parameters=[USERNAME],
        request=None,
        responses={
            200: MemberRemovedSerializer,
            409: conflict("Cannot remove the last lead of Acme: add another first."),
        },
    ),
)
@extend_schema(parameters=[TEAM_SLUG])
class TeamMemberViewSet(GenericViewSet):
    serializer_class = MemberSerializer
    lookup_field = "username"
    lookup_value_regex = USERNAME_PATTERN
    # No POST: people join by accepting an invitation (TeamInvitationViewSet); staff add
    # members directly in the admin.
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Membership]:
        # Only for introspection, as in KeyViewSet: the actions read through member_list.
        return Membership.objects.none()

    # The staff permission each action needs to reach another team's members, as in the
    # admin's members inline; without it staff are like anyone else who is not a lead there.
    STAFF_PERMISSIONS = {
        "list": "keys.view_membership",
        "partial_update": "keys.change_membership",
        "destroy": "keys.delete_membership",
    }

    @property
    def staff_permission(self) -> str:
        return self.STAFF_PERMISSIONS[self.action]

    def get_team(self) -> Team:
        teams = selectors.team_list(actor=self.request.user, staff_permission=self.staff_permission)
        team = teams.filter(slug=self.kwargs["team_slug"]).first()
        if team is None:
            raise NotFound
        return team

    def get_team_as_lead(self) -> Team:
        team = self.get_team()
        if not selectors.is_team_lead(
            actor=self.request.user, team=team, staff_permission=self.staff_permission
        ):
            raise PermissionDenied(f"Only a lead of {team.name} can manage its members.")
        return team

    def get_membership(self, team: Team) -> Membership:
        membership = (
            selectors.member_list(
                actor=self.request.user, team=team, staff_permission=self.staff_permission
            )
            .filter(user__username=self.kwargs["username"])
            .first()
        )
        if membership is None:
            raise NotFound
        return membership

    def list(self, request: Request, team_slug: str) -> Response:
        team = self.get_team()
        # Members get the portal's answer for the team page, 404: the list holds every
        # member's email address, which is for the leads to see.
        if not selectors.is_team_lead(
            actor=request.user, team=team, staff_permission=self.staff_permission
        ):
            raise NotFound
        members = selectors.member_list(
            actor=request.user, team=team, staff_permission=self.staff_permission
        )
        page = self.paginate_queryset(members.order_by("user__username", "id"))
        return self.get_paginated_response(MemberSerializer(page, many=True).data)

    def partial_update(self, request: Request, team_slug: str, username: str) -> Response:
        team = self.get_team_as_lead()
        membership = self.get_membership(team)
        serializer = MemberUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = serializer.validated_data
        cap = changes.get("monthly_limit_usd")
        if "monthly_limit_usd" in changes:
            # Checked before the role changes, so a bad cap leaves the role as it was too.
            services.membership_limit_validate(
                actor=request.user, membership=membership, monthly_limit_usd=cap
            )
        if "role" in changes:
            membership = services.membership_set_role(
                membership=membership, actor=request.user, role=changes["role"]
            )
        if "monthly_limit_usd" in changes:
            membership = services.membership_limit_update(
                actor=request.user, membership=membership, monthly_limit_usd=cap
            )
        return Response(MemberSerializer(membership).data)

    def destroy(self, request: Request, team_slug: str, username: str) -> Response:
        team = self.get_team_as_lead()
        disabled = services.membership_remove(
            membership=self.get_membership(team), actor=request.user
        )
        return Response(MemberRemovedSerializer({"keys_disabled": disabled}).data)


# --- invitations ----------------------------------------------------------------------------

INVITATION_ID = OpenApiParameter(
    "id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The invitation's id."
)


@extend_schema_view(
    list=extend_schema(summary="List a team's pending invitations (leads)"),
    create=extend_schema(
        summary="Invite someone by email (leads)",
        description="Emails them a link to accept. The answer is the same whether or not the "
        "address belongs to a user, so it tells nobody who has an account.",
        request=InvitationCreateSerializer,
        responses={201: InvitationSerializer, 400: FIELD_ERRORS},
    ),
    destroy=extend_schema(
        summary="Revoke a pending invitation (leads)",
        description="Its link stops working at once.",
        parameters=[INVITATION_ID],
        responses={204: OpenApiResponse(description="Revoked."), 400: FIELD_ERRORS},
    ),
)
@extend_schema(parameters=[TEAM_SLUG])
class TeamInvitationViewSet(GenericViewSet):
    serializer_class = InvitationSerializer
    lookup_value_regex = ID_PATTERN
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Invitation]:
        # Only for introspection, as in KeyViewSet: the actions read through invitation_list.
        return Invitation.objects.none()

    def get_team_as_lead(self) -> Team:
        """The team, if the caller leads it: its members get 403, anyone else 404."""
        teams = selectors.team_list(actor=self.request.user, staff_permission=None)
        team = teams.filter(slug=self.kwargs["team_slug"]).first()
        if team is None:
            raise NotFound
        if not selectors.is_team_lead(actor=self.request.user, team=team):
            raise PermissionDenied(f"Only a lead of {team.name} can manage its invitations.")
        return team

    def list(self, request: Request, team_slug: str) -> Response:
        invitations = selectors.invitation_list(actor=request.user, team=self.get_team_as_lead())
        page = self.paginate_queryset(invitations)
        return self.get_paginated_response(InvitationSerializer(page, many=True).data)

    def create(self, request: Request, team_slug: str) -> Response:
        team = self.get_team_as_lead()
        serializer = InvitationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation = services.invitation_create(
            team=team, actor=request.user, **serializer.validated_data
        )
        return Response(InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, team_slug: str, pk: str) -> Response:
        team = self.get_team_as_lead()
        invitation = (
            selectors.invitation_list(actor=request.user, team=team).filter(pk=parse_id(pk)).first()
        )
        if invitation is None:
            raise NotFound
        services.invitation_revoke(invitation=invitation, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationAcceptView(APIView):
    @extend_schema(
        summary="Accept an invitation",
        description="The caller joins the team of the invitation, which must have been sent to "
        "the caller's email address.",
        request=InvitationAcceptSerializer,
        responses={201: TeamSerializer, 400: FIELD_ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = InvitationAcceptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.invitation_accept(
            token=serializer.validated_data["token"], user=request.user
        )
        team = membership.team
        team.role = membership.role
        return Response(TeamSerializer(team).data, status=status.HTTP_201_CREATED)


# --- the caller -----------------------------------------------------------------------------


class MeView(APIView):
    @extend_schema(summary="The caller, their teams and roles", responses={200: MeSerializer})
    def get(self, request: Request) -> Response:
        actor = request.user
        teams = selectors.team_list_with_role(actor=actor)
        me = {
            "id": actor.pk,
            "username": actor.get_username(),
            "email": actor.email,
            "is_staff": actor.is_staff,
            "teams": teams,
        }
        return Response(MeSerializer(me).data)
