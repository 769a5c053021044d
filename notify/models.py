"""Notifications: what happened (Event), who hears of it (Delivery), how each try went (Attempt).

An Event is written once: its `dedupe_key` names the happening ("key 7 crossed 80 % of its daily
limit on 2026-12-07"), so a second detector that sees the same crossing, or a job run twice,
writes nothing. Each Event fans out into Deliveries (one per email recipient, one per matching
webhook); a Delivery keeps its UUID on every retry, and each try is logged as an Attempt.
"""

import uuid
from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from keys.models import ApiKey, Membership, Team


class EventType(models.TextChoices):
    KEY_LIMIT_THRESHOLD = "key.limit.threshold", _("A key's limit reached a threshold")
    TEAM_BUDGET_THRESHOLD = "team.budget.threshold", _("The team's budget reached a threshold")
    MEMBER_LIMIT_THRESHOLD = "member.limit.threshold", _("A member's cap reached a threshold")
    KEY_EXPIRING = "key.expiring", _("A key expires soon")
    KEY_EXPIRED = "key.expired", _("A key expired")
    KEY_DISABLED = "key.disabled", _("A key was disabled")
    KEY_CREATED = "key.created", _("A key was created")
    KEY_ROTATED = "key.rotated", _("A key was rotated")
    WEBHOOK_TEST = "webhook.test", _("A test delivery")


class NotificationSettings(models.Model):
    """One team's choices: who gets email, at which thresholds, and the spend-spike guard."""

    class Recipients(models.TextChoices):
        LEADS = "leads", _("Team leads")
        OWNER = "owner", _("The key's owner")
        BOTH = "both", _("Leads and the key's owner")

    team = models.OneToOneField(
        Team, on_delete=models.CASCADE, related_name="notification_settings"
    )
    email_recipients = models.CharField(
        max_length=8, choices=Recipients.choices, default=Recipients.BOTH
    )
    # Percent of a limit, ascending, each 1-100: each crossing is told once per limit per window.
    thresholds = models.JSONField(
        default=list, blank=True, help_text=_("Percentages, e.g. [50, 80, 100].")
    )
    # Days before `expires_at` at which `key.expiring` is sent, each once.
    expiry_warning_days = models.JSONField(
        default=list, blank=True, help_text=_("Days, e.g. [7, 3, 1].")
    )
    # A key that spends more than this in 10 minutes is disabled; 0 = off.
    spike_limit_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text=_("Disable a key that spends more than this in 10 minutes. 0 = off."),
    )
    updated_at = models.DateTimeField(auto_now=True)

    DEFAULT_THRESHOLDS = (50, 80, 100)
    DEFAULT_EXPIRY_WARNING_DAYS = (7, 3, 1)

    def __str__(self) -> str:
        return f"Notifications of {self.team}"


class EmailPreference(models.Model):
    """A member's opt-out of emails about their own keys (leads' emails about the team stay)."""

    membership = models.OneToOneField(
        Membership, on_delete=models.CASCADE, related_name="email_preference"
    )
    own_key_emails = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"Email preference of {self.membership}"


class Event(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="notification_events")
    type = models.CharField(max_length=40, choices=EventType.choices)
    key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="notification_events"
    )
    dedupe_key = models.CharField(max_length=200, unique=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["team", "-created_at"], name="notify_event_team_recent")]

    def __str__(self) -> str:
        return f"{self.type} ({self.dedupe_key})"


class Webhook(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    # Event type values, or ["*"] for every type.
    event_types = models.JSONField(default=list)
    # Fernet-encrypted signing secret: shown once at creation, never again.
    secret_encrypted = models.TextField()
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        """What pages and the audit trail call it: the URL's host and path, without the query
        (which may carry the receiver's own token)."""
        parts = urlsplit(self.url)
        return f"{parts.netloc.rpartition('@')[2]}{parts.path}"


class Delivery(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email", _("Email")
        WEBHOOK = "webhook", _("Webhook")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    webhook = models.ForeignKey(
        Webhook, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    email = models.EmailField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(1000)])
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="notify_delivery_due",
                condition=models.Q(status="pending"),
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "webhook"],
                name="notify_delivery_once_per_webhook",
                condition=models.Q(channel="webhook"),
            ),
            models.UniqueConstraint(
                fields=["event", "email"],
                name="notify_delivery_once_per_address",
                condition=models.Q(channel="email"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.uuid}"


class Attempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"Attempt at {self.at:%Y-%m-%d %H:%M:%S} ({self.status_code or self.error})"
