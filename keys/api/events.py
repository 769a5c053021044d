"""A team's audit trail in the REST API, for its leads and for staff who may view audit events.

Like the team's other lead-only endpoints: another team is not found (404), its members are
refused (403). Reads go through keys.selectors.team_event_list.
"""

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from core.api.query import validated_query
from keys import selectors
from keys.models import AuditEvent, Team

from .serializers import KeyEventSerializer
from .views import TEAM_SLUG

STAFF_PERMISSION = "keys.view_auditevent"


class TeamEventSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(
        slug_field="username", read_only=True, help_text="Null when the system acted."
    )
    subject_label = serializers.CharField(
        read_only=True,
        help_text="What it was done to, as it was named then: a key's name, a member's "
        "username, an invited address, the team's name.",
    )
    # The key's trail and the team's record changes alike: {field: [old, new]}.
    changes = serializers.SerializerMethodField(
        help_text="Each changed field with its old and new value."
    )
    get_changes = KeyEventSerializer.get_changes

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "action",
            "actor",
            "subject_type",
            "subject_id",
            "subject_label",
            "subject_prefix",
            "changes",
            "created_at",
        ]
        read_only_fields = fields


class TeamEventFilterSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=AuditEvent.Action.choices, required=False, help_text="Only this action."
    )
    since = serializers.DateTimeField(required=False, help_text="From this time on (inclusive).")
    until = serializers.DateTimeField(required=False, help_text="Before this time (exclusive).")


class TeamEventViewSet(GenericViewSet):
    serializer_class = TeamEventSerializer

    def get_queryset(self) -> QuerySet[AuditEvent]:
        # Only for introspection, as in KeyViewSet: list reads through team_event_list.
        return AuditEvent.objects.none()

    def get_team_as_lead(self) -> Team:
        """The team, if the caller leads it or is staff who may view audit events: its members
        get 403, anyone else 404."""
        teams = selectors.team_list(actor=self.request.user, staff_permission=STAFF_PERMISSION)
        team = teams.filter(slug=self.kwargs["team_slug"]).first()
        if team is None:
            raise NotFound
        if not selectors.is_team_lead(
            actor=self.request.user, team=team, staff_permission=STAFF_PERMISSION
        ):
            raise PermissionDenied(f"Only a lead of {team.name} can see its activity.")
        return team

    @extend_schema(
        summary="A team's audit trail (leads)",
        description="Every action on the team's keys, members, invitations and settings, "
        "newest first.",
        parameters=[TEAM_SLUG, TeamEventFilterSerializer],
        responses={200: TeamEventSerializer(many=True)},
    )
    def list(self, request: Request, team_slug: str) -> Response:
        team = self.get_team_as_lead()
        filters = validated_query(TeamEventFilterSerializer, request.query_params)
        events = selectors.team_event_list(actor=request.user, team=team, filters=filters)
        page = self.paginate_queryset(events)
        return self.get_paginated_response(TeamEventSerializer(page, many=True).data)
