from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext_lazy
from rest_framework import serializers

from billing.models import RefusalCount, UsageEvent
from billing.refusals import ENDPOINT_LABELS
from billing.status_filter import STATUS_FILTER_HELP, status_filter
from billing.usage_query import DAY_MESSAGE, STATUS_HELP, STATUS_MESSAGE
from keys.api.serializers import MAX_ID

MONEY = {"max_digits": 20, "decimal_places": 8, "read_only": True}


class UsageEventSerializer(serializers.ModelSerializer):
    key = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="Null once the key was deleted."
    )
    key_prefix = serializers.CharField(source="key.prefix", read_only=True, allow_null=True)
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    group = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    cost_usd = serializers.DecimalField(**MONEY, help_text="At list prices.")
    charged_usd = serializers.DecimalField(**MONEY, help_text="Cost × the group's multiplier.")
    client_ip = serializers.CharField(read_only=True, allow_null=True)
    endpoint = serializers.CharField(
        read_only=True,
        help_text="messages, count_tokens, chat_completions or responses; empty for requests "
        "recorded before the endpoint was.",
    )

    class Meta:
        model = UsageEvent
        fields = [
            "id",
            "key",
            "key_prefix",
            "team",
            "group",
            "model",
            "input_tokens",
            "output_tokens",
            "cache_creation_tokens",
            "cache_read_tokens",
            "cost_usd",
            "charged_usd",
            "status_code",
            "latency_ms",
            "client_ip",
            "session_id",
            "request_id",
            "endpoint",
            "created_at",
            "settled_at",
        ]
        read_only_fields = fields


class RefusalCountSerializer(serializers.ModelSerializer):
    key = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="Null once the key was deleted."
    )
    key_prefix = serializers.CharField(source="key.prefix", read_only=True, allow_null=True)
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    minute = serializers.DateTimeField(
        read_only=True, help_text="The start of the minute the refusals fell in."
    )
    code = serializers.CharField(
        read_only=True, help_text="Why: the error code the client got, e.g. key_disabled."
    )
    endpoint = serializers.CharField(
        read_only=True,
        help_text="messages, count_tokens, chat_completions, responses or models.",
    )
    count = serializers.IntegerField(read_only=True, help_text="How many requests were refused.")

    class Meta:
        model = RefusalCount
        fields = [
            "id",
            "key",
            "key_prefix",
            "team",
            "minute",
            "status_code",
            "code",
            "endpoint",
            "count",
        ]
        read_only_fields = fields


class UsageDaySerializer(serializers.Serializer):
    """One day's totals, read from the rows of billing.selectors.usage_daily_totals_for."""

    day = serializers.DateField(help_text="The date in the server's time zone.")
    requests = serializers.IntegerField(source="total_requests")
    input_tokens = serializers.IntegerField(source="total_input_tokens")
    output_tokens = serializers.IntegerField(source="total_output_tokens")
    cache_creation_tokens = serializers.IntegerField(source="total_cache_creation_tokens")
    cache_read_tokens = serializers.IntegerField(source="total_cache_read_tokens")
    cost_usd = serializers.DecimalField(**MONEY, source="total_cost_usd")
    charged_usd = serializers.DecimalField(**MONEY, source="total_charged_usd")


class StatusFilterField(serializers.RegexField):
    """A status filter (billing.status_filter) read from its text; the pattern puts
    what it accepts in the schema."""

    def __init__(self, *, refused: bool, **kwargs) -> None:
        if refused:
            regex, help_text = r"^([1-5][0-9][0-9]|[1-5]xx|refused)$", STATUS_FILTER_HELP
            message = gettext_lazy(
                "Enter a status code such as 402, a class such as 4xx, or “refused”."
            )
        else:
            regex = r"^([1-5][0-9][0-9]|[1-5]xx)$"
            help_text = (
                "A status code such as 502, or a class such as 5xx. Requests the relay "
                "refused itself are counted under /api/v1/usage/refusals/."
            )
            message = gettext_lazy(
                "Enter a status code such as 502 or a class such as 5xx. Requests the relay "
                "refused itself are listed under /api/v1/usage/refusals/."
            )
        super().__init__(
            regex,
            required=False,
            help_text=help_text,
            error_messages={"invalid": message},
            **kwargs,
        )

    def run_validation(self, data=serializers.empty):
        text = super().run_validation(data)
        if text is serializers.empty or text is None:
            return text
        try:
            return status_filter(text)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None


class _UsageFilterSerializer(serializers.Serializer):
    team = serializers.SlugField(required=False, help_text="Only this team (its slug).")
    key = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Only this key (its id)."
    )
    model = serializers.CharField(
        required=False, help_text="Only this model, e.g. claude-sonnet-4."
    )


class UsageEventFilterSerializer(_UsageFilterSerializer):
    status = StatusFilterField(refused=False)
    since = serializers.DateTimeField(required=False, help_text="From this time on (inclusive).")
    until = serializers.DateTimeField(required=False, help_text="Before this time (exclusive).")


class RefusalCountFilterSerializer(serializers.Serializer):
    team = serializers.SlugField(required=False, help_text="Only this team (its slug).")
    key = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Only this key (its id)."
    )
    status = StatusFilterField(refused=True)
    since = serializers.DateTimeField(
        required=False, help_text="From the minute of this time on (inclusive)."
    )
    until = serializers.DateTimeField(required=False, help_text="Before this time (exclusive).")


class UsageDailyFilterSerializer(_UsageFilterSerializer):
    since = serializers.DateField(required=False, help_text="From this day on (inclusive).")
    until = serializers.DateField(required=False, help_text="Up to this day (inclusive).")


class UsageDailyExportFilterSerializer(serializers.Serializer):
    """The CSV exports' query parameters, typed for the schema; what hangs on the data (a team,
    member or key the caller may see, a range that ends after it starts) is then checked by
    billing.usage_query.read_usage_query, the explorer's own reading."""

    team = serializers.SlugField(help_text="The team (its slug). Members export their own keys.")
    since = serializers.DateField(
        required=False,
        input_formats=["%Y-%m-%d"],
        error_messages={"invalid": DAY_MESSAGE},
        help_text="From this day on (inclusive, the team's time zone). Default: the first.",
    )
    until = serializers.DateField(
        required=False,
        input_formats=["%Y-%m-%d"],
        error_messages={"invalid": DAY_MESSAGE},
        help_text="Up to this day (inclusive, the team's time zone). Default: today.",
    )
    member = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text="Only the keys of this member (a user id). Leads only.",
    )
    key = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Only this key (its id)."
    )
    model = serializers.CharField(required=False, max_length=200, help_text="Only this model.")


class UsageExportFilterSerializer(UsageDailyExportFilterSerializer):
    status = serializers.RegexField(
        r"^(success|error|[1-5][0-9][0-9]|[1-5]xx|refused)$",
        required=False,
        error_messages={"invalid": STATUS_MESSAGE},
        help_text=STATUS_HELP,
    )
    endpoint = serializers.ChoiceField(
        choices=list(ENDPOINT_LABELS), required=False, help_text="Only this relay endpoint."
    )
