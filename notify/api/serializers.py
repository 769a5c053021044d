"""The webhooks' representations and request bodies. As in keys.api, request serializers check
only the shape of what was sent; the rules and their messages are the services' own
(notify.services.webhooks), so a bad URL or event type gets the portal's message."""

from rest_framework import serializers

from keys.api.serializers import StrictBooleanField, StringListField
from notify.models import Attempt, Delivery, Webhook
from notify.services.webhooks import ALL_TYPES, SUBSCRIBABLE_TYPES

EVENT_TYPES_HELP = (
    f'Event types to post: any of {", ".join(SUBSCRIBABLE_TYPES)}; or ["{ALL_TYPES}"] for all.'
)
NOT_A_LIST = 'Send a list of event types, e.g. ["key.expiring"] or ["*"].'


class WebhookSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(child=serializers.CharField(), help_text=EVENT_TYPES_HELP)
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    last_delivery_status = serializers.ChoiceField(
        choices=Delivery.Status.choices,
        source="last_status",
        read_only=True,
        allow_null=True,
        help_text="The status of its newest delivery; null before the first.",
    )
    last_delivery_at = serializers.DateTimeField(
        source="last_at", read_only=True, allow_null=True, help_text="When that delivery was made."
    )

    class Meta:
        model = Webhook
        fields = [
            "id",
            "url",
            "event_types",
            "is_active",
            "created_by",
            "created_at",
            "updated_at",
            "last_delivery_status",
            "last_delivery_at",
        ]
        read_only_fields = fields


class CreatedWebhookSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret of X-HCAI-Signature. Shown in this response only.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreateSerializer(serializers.Serializer):
    url = serializers.CharField(
        trim_whitespace=False,
        help_text="http:// or https://, at most 500 characters, reaching a public address.",
    )
    event_types = StringListField(not_a_list=NOT_A_LIST, help_text=EVENT_TYPES_HELP)


class WebhookUpdateSerializer(serializers.Serializer):
    """Send only what changes."""

    url = serializers.CharField(required=False, trim_whitespace=False)
    event_types = StringListField(not_a_list=NOT_A_LIST, required=False, help_text=EVENT_TYPES_HELP)
    is_active = StrictBooleanField(required=False, help_text="false: nothing is posted to it.")


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ["at", "status_code", "error", "response_excerpt", "duration_ms"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    event_type = serializers.CharField(source="event.type", read_only=True)
    event_id = serializers.IntegerField(source="event.id", read_only=True)
    attempt_count = serializers.IntegerField(source="attempts", read_only=True)
    attempts = AttemptSerializer(
        source="attempt_log", many=True, read_only=True, help_text="Newest first."
    )

    class Meta:
        model = Delivery
        fields = [
            "uuid",
            "event_id",
            "event_type",
            "status",
            "attempt_count",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "attempts",
        ]
        read_only_fields = fields


class DeliveryQueuedSerializer(serializers.Serializer):
    uuid = serializers.UUIDField(
        read_only=True, help_text="The delivery's id: its X-HCAI-Delivery header."
    )
    status = serializers.CharField(read_only=True)
    next_attempt_at = serializers.DateTimeField(read_only=True)
