"""A team's webhooks in the REST API: list, create (the signing secret in that response only),
show, change, delete, send a test, the delivery log and a new try of a delivery.

Webhooks are for the team's leads, and for staff with the notify app's permission of the action
(the admin's own). Anyone else finds no team (404), its members included, as on the members
list: a webhook's URL may carry the receiver's own token. Reads go through notify.selectors,
writes through notify.services.
"""

import uuid

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from core.api.schema import FIELD_ERRORS
from keys.api.views import ID_PATTERN, TEAM_SLUG, parse_id
from keys.models import Team
from notify import selectors, services
from notify.models import Webhook

from .serializers import (
    CreatedWebhookSerializer,
    DeliveryQueuedSerializer,
    DeliverySerializer,
    WebhookCreateSerializer,
    WebhookSerializer,
    WebhookUpdateSerializer,
)

WEBHOOK_ID = OpenApiParameter(
    "id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The webhook's id."
)
DELIVERY_UUID = OpenApiParameter(
    "delivery_uuid",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The delivery's id, as sent in X-HCAI-Delivery.",
)


@extend_schema_view(
    list=extend_schema(
        summary="List a team's webhooks (leads)",
        description="Oldest first, each with the status of its newest delivery.",
    ),
    create=extend_schema(
        summary="Create a webhook (leads)",
        description="Events of the chosen types are posted to the URL as JSON, signed with the "
        "secret in X-HCAI-Signature. The secret is in this response only; it is never shown "
        "again. URLs that reach loopback, private, link-local or reserved addresses are "
        "refused.",
        request=WebhookCreateSerializer,
        responses={201: CreatedWebhookSerializer, 400: FIELD_ERRORS},
    ),
    retrieve=extend_schema(summary="Show a webhook (leads)", parameters=[WEBHOOK_ID]),
    partial_update=extend_schema(
        summary="Change a webhook (leads)",
        description="Its URL, event types, or whether it is active; send only what changes. "
        "The secret stays.",
        parameters=[WEBHOOK_ID],
        request=WebhookUpdateSerializer,
        responses={200: WebhookSerializer, 400: FIELD_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a webhook (leads)",
        description="With its delivery log; the audit trail keeps a row of it.",
        parameters=[WEBHOOK_ID],
        responses={204: OpenApiResponse(description="Deleted.")},
    ),
)
@extend_schema(parameters=[TEAM_SLUG])
class WebhookViewSet(GenericViewSet):
    serializer_class = WebhookSerializer
    lookup_value_regex = ID_PATTERN
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    # The staff permission each action needs to reach a team the caller does not lead.
    STAFF_PERMISSIONS = {
        "list": "notify.view_webhook",
        "retrieve": "notify.view_webhook",
        "deliveries": "notify.view_webhook",
        "create": "notify.add_webhook",
        "partial_update": "notify.change_webhook",
        "test": "notify.change_webhook",
        "redeliver": "notify.change_webhook",
        "destroy": "notify.delete_webhook",
    }

    def get_queryset(self) -> QuerySet[Webhook]:
        # Only for introspection, as in keys.api: the actions read through notify.selectors.
        return Webhook.objects.none()

    @property
    def staff_permission(self) -> str | None:
        return self.STAFF_PERMISSIONS.get(self.action)

    def get_team(self) -> Team:
        team = selectors.webhook_team_get(
            actor=self.request.user,
            team_slug=self.kwargs["team_slug"],
            staff_permission=self.staff_permission,
        )
        if team is None:
            raise NotFound
        return team

    def webhooks(self) -> QuerySet[Webhook]:
        return selectors.webhook_list(
            actor=self.request.user, team=self.get_team(), staff_permission=self.staff_permission
        )

    def get_object(self) -> Webhook:
        webhook = self.webhooks().filter(pk=parse_id(self.kwargs["pk"])).first()
        if webhook is None:
            raise NotFound
        return webhook

    def list(self, request: Request, team_slug: str) -> Response:
        page = self.paginate_queryset(self.webhooks())
        return self.get_paginated_response(WebhookSerializer(page, many=True).data)

    def create(self, request: Request, team_slug: str) -> Response:
        team = self.get_team()
        serializer = WebhookCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = services.webhook_create(
            actor=request.user, team=team, **serializer.validated_data
        )
        data = WebhookSerializer(self.webhooks().get(pk=created.webhook.pk)).data
        return Response({**data, "secret": created.secret}, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, team_slug: str, pk: str) -> Response:
        return Response(WebhookSerializer(self.get_object()).data)

    def partial_update(self, request: Request, team_slug: str, pk: str) -> Response:
        webhook = self.get_object()
        serializer = WebhookUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        services.webhook_update(actor=request.user, webhook=webhook, **serializer.validated_data)
        return Response(WebhookSerializer(self.get_object()).data)

    def destroy(self, request: Request, team_slug: str, pk: str) -> Response:
        services.webhook_delete(actor=request.user, webhook=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Send a test delivery (leads)",
        description="A `webhook.test` event, posted to this webhook alone as soon as the "
        "delivery job runs. Follow it in the delivery log by its uuid.",
        parameters=[WEBHOOK_ID],
        request=None,
        responses={202: DeliveryQueuedSerializer, 400: FIELD_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def test(self, request: Request, team_slug: str, pk: str) -> Response:
        delivery = services.webhook_test(actor=request.user, webhook=self.get_object())
        return Response(DeliveryQueuedSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="A webhook's delivery log (leads)",
        description="Newest first, each delivery with its attempts (newest first): when, the "
        "HTTP status or the error, the start of the answer and how long it took.",
        parameters=[WEBHOOK_ID],
        responses={200: DeliverySerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, team_slug: str, pk: str) -> Response:
        deliveries = selectors.delivery_list(
            actor=request.user, webhook=self.get_object(), staff_permission=self.staff_permission
        )
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)

    @extend_schema(
        summary="Try a delivery again (leads)",
        description="A new try as soon as the delivery job runs, under the same X-HCAI-Delivery "
        "id, whether the delivery failed or was delivered.",
        parameters=[WEBHOOK_ID, DELIVERY_UUID],
        request=None,
        responses={202: DeliveryQueuedSerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"deliveries/(?P<delivery_uuid>[-0-9a-fA-F]+)/redeliver",
    )
    def redeliver(self, request: Request, team_slug: str, pk: str, delivery_uuid: str) -> Response:
        webhook = self.get_object()
        try:
            delivery_id = uuid.UUID(delivery_uuid)
        except ValueError:
            raise NotFound from None
        delivery = (
            selectors.delivery_list(
                actor=request.user, webhook=webhook, staff_permission=self.staff_permission
            )
            .filter(uuid=delivery_id)
            .first()
        )
        if delivery is None:
            raise NotFound
        delivery = services.delivery_redeliver(actor=request.user, delivery=delivery)
        return Response(DeliveryQueuedSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
