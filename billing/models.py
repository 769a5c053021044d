from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from core.money import usd
from keys.models import ApiKey, Group, Team

PRICE_FIELD = {
    "max_digits": 12,
    "decimal_places": 6,
    "default": 0,
    "validators": [MinValueValidator(0)],
}


class ModelPrice(models.Model):
    """List prices in USD per million tokens. A model without a price is never served."""

    model = models.CharField(max_length=200, unique=True)
    input_per_mtok = models.DecimalField("input $/MTok", **PRICE_FIELD)
    output_per_mtok = models.DecimalField("output $/MTok", **PRICE_FIELD)
    cache_write_per_mtok = models.DecimalField("cache write $/MTok", **PRICE_FIELD)
    # Anthropic bills cache writes kept for an hour at twice the input price (5-minute writes
    # at 1.25x); the 1-hour part of a response's cache writes is priced at this rate.
    cache_write_1h_per_mtok = models.DecimalField(
        "1-hour cache write $/MTok",
        **PRICE_FIELD,
        help_text="Cache writes kept for an hour (Anthropic: twice the input price). Required "
        "when the 5-minute cache write price is set; for a vendor without the distinction, "
        "the same as that price.",
    )
    cache_read_per_mtok = models.DecimalField("cache read $/MTok", **PRICE_FIELD)
    # What the relay reserves against a key's quota for a request that sets no lower output
    # limit, so that a quota stays a cap; a default above every model's.
    max_output_tokens = models.PositiveIntegerField(
        "max output tokens",
        default=128_000,
        validators=[MinValueValidator(1)],
        help_text="The most output tokens the model writes in one answer (the vendor's "
        "documented maximum). Requests without a lower limit reserve this much of a key's quota.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model

    def clean(self) -> None:
        # A 1-hour price left at 0 would price those writes at the 5-minute rate
        # (billing.pricing.one_hour_write_rate): under-billed by a third for Claude. No
        # multiple of another price is guessed either: whoever sets prices sets this one.
        if self.cache_write_per_mtok and not self.cache_write_1h_per_mtok:
            raise ValidationError(
                {
                    "cache_write_1h_per_mtok": "Set the 1-hour cache write price too: "
                    "5-minute cache writes cost something, so 1-hour ones cannot be free "
                    "(Anthropic bills them at twice the input price)."
                }
            )


class UsageEvent(models.Model):
    """One row per proxied request. Kept when its key is deleted, for the team's books."""

    # No single-column indexes on key and team: the composite (key, created_at) and
    # (team, created_at) indexes below serve those lookups too, and every index is written
    # for each ingested row (again if settlement stamps it later).
    key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_events",
        db_index=False,
    )
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="usage_events", db_index=False
    )
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_events"
    )
    model = models.CharField(max_length=200)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_creation_tokens = models.PositiveIntegerField(default=0)
    # The part of cache_creation_tokens written for one hour (the rest: five minutes).
    cache_creation_1h_tokens = models.PositiveIntegerField(default=0, db_default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8, default=0)
    charged_usd = models.DecimalField(max_digits=18, decimal_places=8, default=0)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.PositiveIntegerField(default=0)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    session_id = models.CharField(max_length=128, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    # The relay endpoint (billing.refusals.ENDPOINT_LABELS); empty on rows written before it
    # was recorded. A default in the database too: a release still running during a deploy
    # inserts rows without this column.
    endpoint = models.CharField(max_length=32, blank=True, default="", db_default="")
    created_at = models.DateTimeField(db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["key", "-created_at"]),
            models.Index(fields=["team", "-created_at"]),
            # A Claude Code session's requests (the explorer's session page), without reading
            # the team's whole range; requests without a session are left out.
            models.Index(
                fields=["team", "session_id", "created_at"],
                condition=~models.Q(session_id=""),
                name="usage_event_team_session",
            ),
            # Settlement scans only the unsettled rows (ingest writes rows settled, so this
            # index stays nearly empty and the periodic check costs one probe).
            models.Index(
                fields=["id"], condition=models.Q(settled_at__isnull=True), name="usage_unsettled"
            ),
        ]
        constraints = [
            # One row per relayed request: ingest may re-read stream entries it already wrote
            # (a worker killed between commit and delete), and this makes that a no-op. It is
            # also the index ingest's duplicate check reads.
            models.UniqueConstraint(
                fields=["request_id", "created_at"],
                condition=~models.Q(request_id=""),
                name="usage_event_once_per_request",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.status_code} {usd(self.charged_usd)}"


class UsageDaily(models.Model):
    """Totals per key, model and day, folded in by settlement. Money views read these only.

    `day` is the event's date in settings.TIME_ZONE. Events of a deleted key roll up with
    `key` empty (and a key's rows lose their key when it is deleted), so the team's totals
    never shrink; such rows are not unique per model and day, and readers always sum them.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="usage_daily")
    key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_daily"
    )
    model = models.CharField(max_length=200)
    day = models.DateField()
    requests = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_1h_tokens = models.PositiveBigIntegerField(default=0, db_default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    charged_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)

    class Meta:
        ordering = ["-day", "model"]
        verbose_name = "daily usage"
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(
                fields=["key", "model", "day"],
                condition=models.Q(key__isnull=False),
                name="one_usage_daily_per_key_model_day",
            )
        ]
        indexes = [models.Index(fields=["team", "day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.model}: {self.requests} requests, {usd(self.charged_usd)}"


class RefusalCount(models.Model):
    """How often the relay refused one key's requests in one minute, for one status, reason and
    endpoint. Refusals are counted, not written one by one: a tool retrying a refused request
    in a loop adds to one row a minute instead of flooding this table (billing.refusals)."""

    key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="refusal_counts"
    )
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="refusal_counts", db_index=False
    )
    # The start of the minute the refusals fell in.
    minute = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField()
    # The refusal's code (proxy.errors.RelayError.code), e.g. key_disabled, insufficient_quota.
    code = models.CharField(max_length=64)
    endpoint = models.CharField(max_length=32)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-minute", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key", "minute", "status_code", "code", "endpoint"],
                name="one_refusal_count_per_key_minute_reason",
            )
        ]
        indexes = [models.Index(fields=["team", "-minute"])]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.status_code} {self.code} ×{self.count}"
