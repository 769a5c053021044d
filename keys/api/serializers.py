"""The API's representations and request bodies.

Request serializers only check the shape of what was sent (a list is a list, a date is a date);
the rules and their messages belong to keys.services and keys.validators, so a value the
services parse themselves (quota, IPs, rate limit, status, role) reaches them as sent, and a
bad one gets the same message as in the portal.
"""

from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.parsers import JsonNumber
from keys.models import ApiKey, AuditEvent, Group, Invitation, Membership, Team
from keys.selectors import KEY_STATES, team_list, teammate_list
from keys.validators import MAX_ALLOWED_IPS, MAX_CONCURRENCY, NAME_MAX_LENGTH

# The largest id a database row can have (a signed 64-bit integer).
MAX_ID = 2**63 - 1

# The message DRF and Django give a NUL character in text.
NULL_CHARACTERS = ProhibitNullCharactersValidator.message


# --- fields ---------------------------------------------------------------------------------


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class StringListField(serializers.Field):
    """A JSON list handed to the service as sent; the service checks and reports its items."""

    def __init__(self, *, not_a_list: str, **kwargs: Any) -> None:
        self.not_a_list = not_a_list
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list:
        if not isinstance(data, list):
            raise serializers.ValidationError(self.not_a_list)
        # PostgreSQL's jsonb cannot hold a NUL character: the save would fail with a 500.
        if any(isinstance(item, str) and "\x00" in item for item in data):
            raise serializers.ValidationError(NULL_CHARACTERS)
        return data

    def to_representation(self, value: list) -> list:
        return list(value)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "decimal", "example": "25.00"},
            {"type": "number", "example": 25},
        ]
    }
)
class DecimalInputField(serializers.Field):
    """An amount as text ("25.00") or a JSON number, for the service to parse and check."""

    default_error_messages = {"invalid": "A valid number is required."}

    def to_internal_value(self, data: Any) -> str | int:
        if isinstance(data, bool) or not isinstance(data, str | int | JsonNumber):
            self.fail("invalid")
        # A JSON number goes on as the text that was sent, so the services read it exactly and
        # apply the same rules as to text: as a float, 1e-400 would arrive as 0.
        return data.literal if isinstance(data, JsonNumber) else data


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": MAX_CONCURRENCY})
class CountInputField(serializers.Field):
    """A whole number as a JSON number, for the service to check (its range and messages)."""

    default_error_messages = {"invalid": "A valid integer is required."}

    def to_internal_value(self, data: Any) -> str | int:
        if isinstance(data, bool) or not isinstance(data, int | JsonNumber):
            self.fail("invalid")
        # 2.5 goes on as the text that was sent, so the service names what it expected.
        return data.literal if isinstance(data, JsonNumber) else data


class ServiceChoiceField(serializers.ChoiceField):
    """Documented as an enum, but passed on as sent so the service's message names a bad value,
    as it does in the portal."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        if "\x00" in data:
            raise serializers.ValidationError(NULL_CHARACTERS)
        return data


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF's BooleanField also takes "no", "off" or 0, which the schema
    (a boolean) does not allow, so a client's mistake would pass silently."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


@extend_schema_field({"type": "string", "minLength": 1})
class NulSafeSlugRelatedField(serializers.SlugRelatedField):
    default_error_messages = {"blank": serializers.CharField.default_error_messages["blank"]}

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # DRF reads "" as null for a related field: "This field may not be null." would puzzle
        # whoever sent the empty text.
        if data == "":
            self.fail("blank")
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> Any:
        # PostgreSQL refuses a NUL in a query parameter with a database error (a 500).
        if isinstance(data, str) and "\x00" in data:
            raise serializers.ValidationError(NULL_CHARACTERS)
        return super().to_internal_value(data)


class GroupIdField(serializers.PrimaryKeyRelatedField):
    """Any group id, so a group the team may not use gets the service's message saying why."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", "A group id from /api/v1/groups/.")
        super().__init__(queryset=Group.objects.all(), **kwargs)

    def to_internal_value(self, data: Any) -> Group:
        try:
            return super().to_internal_value(data)
        except OverflowError:
            # SQLite cannot even bind an id past 64 bits; such an id simply does not exist.
            self.fail("does_not_exist", pk_value=data)


class ActorTeamField(NulSafeSlugRelatedField):
    """A team slug among the caller's teams (any team for staff who may add keys); any other
    reads as unknown, like a 404."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(slug_field="slug", **kwargs)

    def get_queryset(self):
        return team_list(actor=self.context["request"].user, staff_permission="keys.add_apikey")


class TeammateField(NulSafeSlugRelatedField):
    """A username among the members of the caller's teams (anyone for staff who may add keys),
    so no other user's existence shows."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(slug_field="username", **kwargs)

    def get_queryset(self):
        return teammate_list(actor=self.context["request"].user)


class ServiceTextField(serializers.CharField):
    """Text passed on as sent: the service or the model checks it, with the portal's messages.
    Subclasses document those rules, so a schema-driven client does not send what is refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # Blank text goes on to the service too, for its message ("Name is required."); the
        # field is not allow_blank only so that the schema does not offer "" as valid.
        if data == "":
            return data
        return super().run_validation(data)


# Text with no NUL character (PostgreSQL cannot store one), and with something besides spaces.
NO_NUL = r"^[^\u0000]*$"
NOT_ONLY_SPACES = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


@extend_schema_field(
    {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": NOT_ONLY_SPACES}
)
class KeyNameField(ServiceTextField):
    """The service trims the name, so it needs something besides spaces."""


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": Group._meta.get_field("name").max_length,
        "pattern": NO_NUL,
    }
)
class GroupNameField(ServiceTextField):
    pass


# --- keys -----------------------------------------------------------------------------------


class KeySerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    group = serializers.PrimaryKeyRelatedField(read_only=True)
    group_name = serializers.CharField(source="group.name", read_only=True)
    state = serializers.ChoiceField(
        choices=KEY_STATES,
        read_only=True,
        help_text="What the key can do now: enabled, disabled, expired or quota_used_up.",
    )
    allowed_ips = serializers.ListField(child=serializers.CharField(), read_only=True)
    quota_limit_usd = serializers.DecimalField(
        max_digits=12, decimal_places=2, read_only=True, help_text="0 means unlimited."
    )
    spent_usd = serializers.DecimalField(max_digits=18, decimal_places=8, read_only=True)
    daily_limit_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        read_only=True,
        help_text="Spend allowed per calendar day in the team's time zone; 0 means no limit.",
    )
    weekly_limit_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        read_only=True,
        help_text="Spend allowed per calendar week (from Monday) in the team's time zone; "
        "0 means no limit.",
    )
    monthly_limit_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        read_only=True,
        help_text="Spend allowed per calendar month in the team's time zone; 0 means no limit.",
    )
    max_concurrency = serializers.IntegerField(
        read_only=True,
        help_text="How many requests of this key may be in flight at once; 0 means unlimited.",
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "team",
            "owner",
            "name",
            "group",
            "group_name",
            "status",
            "state",
            "prefix",
            "allowed_ips",
            "quota_limit_usd",
            "spent_usd",
            "rate_limit",
            "daily_limit_usd",
            "weekly_limit_usd",
            "monthly_limit_usd",
            "max_concurrency",
            "expires_at",
            "last_used_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class IssuedKeySerializer(KeySerializer):
    key = serializers.CharField(
        read_only=True,
        help_text="The full key, shown only in this response: store it now.",
    )

    class Meta(KeySerializer.Meta):
        fields = [*KeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class KeyUpdateSerializer(serializers.Serializer):
    """Every setting a key's owner or lead may change; send only those to change."""

    name = KeyNameField(required=False)
    group = GroupIdField(required=False)
    status = ServiceChoiceField(choices=ApiKey.Status.choices, required=False)
    allowed_ips = StringListField(
        not_a_list="IP restriction must be a list of addresses.",
        required=False,
        help_text=(
            "IPs or CIDR ranges allowed to use the key, e.g. 203.0.113.0/24; at most "
            f"{MAX_ALLOWED_IPS:,}. Empty: any."
        ),
    )
    quota_limit_usd = DecimalInputField(
        required=False,
        help_text="USD in plain decimal notation, e.g. 25.00, at least 0.01; 0 means unlimited.",
    )
    rate_limit = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Requests per s, m, h or d, e.g. 60/m. Empty: no limit.",
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Null: never expires."
    )
    daily_limit_usd = DecimalInputField(
        required=False,
        help_text="USD per calendar day in the team's time zone, e.g. 5.00, at least 0.01; "
        "0 means no daily limit.",
    )
    weekly_limit_usd = DecimalInputField(
        required=False,
        help_text="USD per calendar week (from Monday) in the team's time zone, e.g. 20.00, at "
        "least 0.01; 0 means no weekly limit.",
    )
    monthly_limit_usd = DecimalInputField(
        required=False,
        help_text="USD per calendar month in the team's time zone, e.g. 60.00, at least 0.01; "
        "0 means no monthly limit.",
    )
    max_concurrency = CountInputField(
        required=False,
        help_text=f"Requests of this key in flight at once, at most {MAX_CONCURRENCY:,}; "
        "0 means unlimited.",
    )


class KeyCreateSerializer(KeyUpdateSerializer):
    team = ActorTeamField(help_text="The slug of one of the caller's teams.")
    owner = TeammateField(
        required=False,
        help_text="A member of the team (leads only). Default: the caller.",
    )
    name = KeyNameField()
    # Omitted settings start at the team's defaults (Team.default_*), where a member's key may
    # only be tightened; without a default group, one must be chosen.
    group = GroupIdField(
        required=False,
        help_text="A group id from /api/v1/groups/. Default: the team's default group.",
    )


class KeyFilterSerializer(serializers.Serializer):
    """The query of the key list; its values arrive under the names of the filters
    keys.selectors.api_key_search_all_teams takes (`source`)."""

    ORDERINGS = [
        f"{sign}{field}"
        for field in ("name", "created_at", "expires_at", "last_used_at", "spent_usd")
        for sign in ("", "-")
    ]

    team = serializers.SlugField(required=False, help_text="Only this team's keys (its slug).")
    status = serializers.ChoiceField(choices=ApiKey.Status.choices, required=False)
    state = serializers.ChoiceField(choices=KEY_STATES, required=False)
    group = serializers.IntegerField(
        source="group_id", required=False, min_value=1, max_value=MAX_ID, help_text="A group id."
    )
    # An unknown username matches no key, as another team's member does: no error tells the
    # caller who exists.
    owner = serializers.CharField(
        source="owner_username", required=False, help_text="The owner's username."
    )
    search = serializers.CharField(
        source="name_contains", required=False, help_text="Part of the key's name."
    )
    ordering = serializers.ChoiceField(choices=ORDERINGS, required=False, default="-created_at")


# A key's trail names its actions without the "key." every one of them starts with.
KEY_EVENT_ACTIONS = [
    (value.removeprefix("key."), label)
    for value, label in AuditEvent.Action.choices
    if value.startswith("key.")
]


class KeyEventSerializer(serializers.ModelSerializer):
    action = serializers.SerializerMethodField()
    actor = serializers.SlugRelatedField(
        slug_field="username", read_only=True, help_text="Null when the system acted."
    )
    key_name = serializers.CharField(source="subject_label", read_only=True)
    key_prefix = serializers.CharField(source="subject_prefix", read_only=True)
    changes = serializers.SerializerMethodField(
        help_text="Each changed field with its old and new value."
    )

    class Meta:
        model = AuditEvent
        fields = ["id", "action", "actor", "key_name", "key_prefix", "changes", "created_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=KEY_EVENT_ACTIONS))
    def get_action(self, event: AuditEvent) -> str:
        return event.action.removeprefix("key.")

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "minItems": 2,
                "maxItems": 2,
                # Old and new value: text or null; a list of text (IPs, routes); and for a
                # team's settings a switch (true/false) or a whole number (days).
                "items": {
                    "anyOf": [
                        {"type": "string", "nullable": True},
                        {"type": "boolean"},
                        {"type": "integer"},
                        {"type": "array", "items": {"type": "string"}},
                    ]
                },
            },
        }
    )
    def get_changes(self, event: AuditEvent) -> dict:
        return event.changes


# --- groups ---------------------------------------------------------------------------------


class GroupSerializer(serializers.ModelSerializer):
    multiplier = serializers.DecimalField(max_digits=8, decimal_places=4, read_only=True)
    models = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Group
        fields = ["id", "name", "description", "multiplier", "models", "is_active"]
        read_only_fields = fields


class GroupWriteSerializer(serializers.Serializer):
    name = GroupNameField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    multiplier = DecimalInputField(
        required=False, help_text="Charge = list price × multiplier, e.g. 0.25 or 1.0."
    )
    models = StringListField(
        not_a_list="Models must be a list of model names or patterns such as claude-*.",
        required=False,
        help_text="Model names or patterns, e.g. claude-* or gpt-4o.",
    )
    is_active = serializers.BooleanField(required=False)


class GroupCreateSerializer(GroupWriteSerializer):
    name = GroupNameField()


class GroupFilterSerializer(serializers.Serializer):
    team = serializers.SlugField(
        required=False, help_text="Only the groups this team may use (its slug)."
    )


# --- teams, members, the caller -------------------------------------------------------------


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.ChoiceField(
        choices=Membership.Role.choices,
        read_only=True,
        allow_null=True,
        help_text="The caller's role in the team; null for staff who are not members.",
    )

    monthly_budget_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        read_only=True,
        help_text="What all of the team's keys together may spend in a calendar month of its "
        "time zone; 0 means no budget. Set by staff.",
    )
    time_zone = serializers.CharField(
        read_only=True,
        help_text="The team's IANA time zone: its keys' days, weeks (from Monday) and months "
        "start at midnight there. Set by staff.",
    )

    class Meta:
        model = Team
        fields = ["slug", "name", "role", "monthly_budget_usd", "time_zone", "created_at"]
        read_only_fields = fields


class TeamBudgetUpdateSerializer(serializers.Serializer):
    """Staff only; send only what changes."""

    monthly_budget_usd = DecimalInputField(
        required=False,
        allow_null=True,
        help_text="USD per calendar month in plain decimal notation, e.g. 500 or 25.50, at "
        "least 0.01; 0 or null: no budget.",
    )
    time_zone = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="An IANA time zone name, e.g. Asia/Shanghai or UTC.",
    )


class MemberSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    email = serializers.CharField(source="user.email", read_only=True)
    monthly_limit_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        read_only=True,
        help_text="What all of the member's keys in the team may spend in a calendar month of "
        "the team's time zone; 0 means no cap.",
    )

    class Meta:
        model = Membership
        fields = ["user", "email", "role", "monthly_limit_usd", "created_at"]
        read_only_fields = fields


class MemberUpdateSerializer(serializers.Serializer):
    role = ServiceChoiceField(choices=Membership.Role.choices, required=False)
    monthly_limit_usd = DecimalInputField(
        required=False,
        allow_null=True,
        help_text="The member's monthly cap in USD, e.g. 20 or 20.50, at least 0.01; 0 or "
        "null: no cap.",
    )


class MemberRemovedSerializer(serializers.Serializer):
    keys_disabled = serializers.IntegerField(
        help_text="How many of the member's keys in the team were disabled."
    )


class InvitationSerializer(serializers.ModelSerializer):
    invited_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "invited_by", "created_at", "expires_at"]
        read_only_fields = fields


class InvitationCreateSerializer(serializers.Serializer):
    # Text as sent: invitation_create normalises and checks the address, with the portal's
    # messages.
    email = serializers.CharField(
        allow_blank=True, trim_whitespace=False, help_text="The address to send the link to."
    )
    role = ServiceChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)


class InvitationAcceptSerializer(serializers.Serializer):
    token = serializers.CharField(
        trim_whitespace=False,
        help_text="The token at the end of the emailed link: /invitations/<token>/.",
    )


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    is_staff = serializers.BooleanField()
    teams = TeamSerializer(many=True)
