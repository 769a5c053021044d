import fnmatch
from datetime import datetime
from typing import ClassVar

from django.conf import settings
from django.core.validators import MaxValueValidator, MinLengthValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from .secret_formats import API_TOKEN, RELAY_KEY, SecretFormat
from .secret_formats import digest_key as digest_key
from .validators import (
    MAX_CONCURRENCY,
    MAX_EXPIRY_DAYS,
    NAME_MAX_LENGTH,
    validate_allowed_ips,
    validate_model_patterns,
    validate_multiplier,
    validate_quota,
    validate_rate_limit,
    validate_time_zone,
)


def _person(*, related_name: str = "+", **options) -> models.ForeignKey:
    """Who did something (made, invited, accepted, acted): a reference that outlives the
    person, emptied when their user is deleted, so the row they are named on stays."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name=related_name,
        **options,
    )


def _usd_limit(**options) -> models.DecimalField:
    """A spend limit in US dollars, in whole cents (keys.validators.parse_quota reads it from
    input); 0 means unlimited."""
    return models.DecimalField(
        max_digits=12, decimal_places=2, default=0, validators=[validate_quota], **options
    )


def _default_time_zone() -> str:
    return settings.TIME_ZONE


class Group(models.Model):
    """Which models a key may use, what it pays (multiplier) and, via proxy.Route, its routing."""

    # The message a taken name gets keeps the word the API has always used ("Group"), though
    # the model is called "key group" below.
    name = models.CharField(
        max_length=100,
        unique=True,
        error_messages={"unique": "Group with this Name already exists."},
    )
    description = models.TextField(blank=True)
    multiplier = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=1,
        validators=[validate_multiplier],
        help_text="Charge = list price x multiplier, e.g. 0.25 or 1.0.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Declared last: inside this class body the name shadows the django.db.models module.
    models = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_model_patterns],
        help_text="Model names or patterns this group may use, e.g. claude-* or gpt-4o.",
    )

    class Meta:
        ordering = ["name"]
        # Not "Groups": the admin lists django.contrib.auth's groups (bundles of staff
        # permissions) too, and two entries of one name were confused.
        verbose_name = "key group"
        verbose_name_plural = "key groups"

    def __str__(self) -> str:
        return self.name

    def allows_model(self, model_name: str) -> bool:
        return any(fnmatch.fnmatchcase(model_name, pattern) for pattern in self.models)


class Team(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    allowed_groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="teams",
        help_text="Groups this team's keys may use. Empty: every active group.",
    )
    # Who may do what (keys.policy): whether members may create keys of their own, and where a
    # member's new key starts. A member may only tighten these, never loosen them.
    members_can_create_keys = models.BooleanField(
        default=True,
        help_text="Members may create keys for themselves. Off: only leads create keys.",
    )
    default_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The group of members' new keys; members cannot choose another. "
        "Empty: members choose among the team's groups.",
    )
    default_quota_limit_usd = _usd_limit(
        verbose_name="default quota limit (USD)",
        help_text="The quota of members' new keys; 0 means unlimited.",
    )
    default_rate_limit = models.CharField(
        max_length=16,
        blank=True,
        validators=[validate_rate_limit],
        help_text="The rate limit of members' new keys, e.g. 60/m. Empty: no limit.",
    )
    default_expiry_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_EXPIRY_DAYS)],
        verbose_name="default expiration period (days)",
        help_text="Members' new keys expire this many days after they are made, or earlier. "
        "Empty: they may never expire.",
    )
    # Spend controls (billing.windows): the team's budget, set by staff, and the clock its
    # windows keep: days start at local midnight, weeks on Monday, months on the 1st.
    monthly_budget_usd = _usd_limit(
        verbose_name="monthly budget (USD)",
        help_text="What all of the team's keys together may spend in a calendar month; "
        "0 means no budget.",
    )
    time_zone = models.CharField(
        max_length=64,
        default=_default_time_zone,
        validators=[validate_time_zone],
        help_text="Daily, weekly and monthly limits reset at midnight here (weeks on Monday, "
        "months on the 1st).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def available_groups(self) -> models.QuerySet[Group]:
        """The active groups this team's keys may use."""
        groups = Group.objects.filter(is_active=True)
        if self.pk and self.allowed_groups.exists():
            groups = groups.filter(teams=self)
        return groups


class Membership(models.Model):
    class Role(models.TextChoices):
        LEAD = "lead", _("Lead")
        MEMBER = "member", _("Member")

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    # Set by the team's leads: what all of this member's keys in the team may spend together in
    # a calendar month of the team's time zone.
    monthly_limit_usd = _usd_limit(
        verbose_name="monthly cap (USD)",
        help_text="What all of this member's keys in the team may spend in a calendar month; "
        "0 means no cap.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team_user")
        ]
        ordering = ["team", "user"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ApiKeyQuerySet(models.QuerySet):
    def usable(self, now: datetime | None = None) -> "ApiKeyQuerySet":
        """Keys that may make requests: enabled and not expired. The one home for that rule."""
        now = now or timezone.now()
        return self.filter(status=ApiKey.Status.ENABLED).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )

    def expired_but_enabled(self, now: datetime | None = None) -> "ApiKeyQuerySet":
        now = now or timezone.now()
        return self.filter(status=ApiKey.Status.ENABLED, expires_at__lte=now)


class HashedSecret(models.Model):
    """A row that holds a secret only as its digest, plus a display prefix to tell it apart by.

    Subclasses name their `secret_format` and declare `prefix` sized by it (the kinds' prefixes
    differ in length, and so do their columns).
    """

    secret_format: ClassVar[SecretFormat]
    digest = models.CharField(max_length=64, unique=True, editable=False)

    class Meta:
        abstract = True

    def set_new_secret(self) -> str:
        """Give the row a new secret; return its plaintext, which is never stored."""
        plaintext = self.secret_format.generate()
        self.digest = self.secret_format.digest(plaintext)
        self.prefix = self.secret_format.display_prefix(plaintext)
        return plaintext


class ApiKey(HashedSecret):
    secret_format = RELAY_KEY

    class Status(models.TextChoices):
        ENABLED = "enabled", _("Enabled")
        DISABLED = "disabled", _("Disabled")

    class DisabledBy(models.TextChoices):
        """Who turned a disabled key off, by role: a member may enable only a key they turned
        off themselves (keys.policy)."""

        OWNER = "owner", "Its owner"
        LEAD = "lead", "A team lead"
        STAFF = "staff", "Staff"
        SYSTEM = "system", "The system (expiry or spend spike)"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_keys"
    )
    name = models.CharField(
        max_length=NAME_MAX_LENGTH,
        validators=[MinLengthValidator(1)],
        error_messages={
            "blank": "Name is required.",
            "max_length": f"Name can be at most {NAME_MAX_LENGTH} characters.",
        },
    )
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="api_keys")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ENABLED)
    # Empty while enabled, and for keys disabled before it was recorded (they count as disabled
    # by a lead: only a lead may enable them).
    disabled_by = models.CharField(
        max_length=10, choices=DisabledBy.choices, blank=True, editable=False
    )
    prefix = models.CharField(max_length=RELAY_KEY.display_prefix_length, editable=False)
    allowed_ips = models.JSONField(
        default=list, blank=True, validators=[validate_allowed_ips], verbose_name="IP restriction"
    )
    quota_limit_usd = _usd_limit(verbose_name="quota limit (USD)")
    spent_usd = models.DecimalField(max_digits=18, decimal_places=8, default=0, editable=False)
    rate_limit = models.CharField(max_length=16, blank=True, validators=[validate_rate_limit])
    # Spend windows beside the lifetime quota (billing.windows), in the team's time zone.
    daily_limit_usd = _usd_limit(verbose_name="daily limit (USD)")
    weekly_limit_usd = _usd_limit(verbose_name="weekly limit (USD)")
    monthly_limit_usd = _usd_limit(verbose_name="monthly limit (USD)")
    max_concurrency = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_CONCURRENCY)],
        verbose_name="max concurrent requests",
        help_text="How many requests of this key may be in flight at once; 0 means unlimited.",
    )
    expires_at = models.DateTimeField(null=True, blank=True, verbose_name="key expiration")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = _person(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["team", "status"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def expired_and_disabled(self) -> bool:
        """Turned off by the expiry task: it needs a new expiration before it is enabled."""
        return (
            self.status == self.Status.DISABLED
            and self.disabled_by == self.DisabledBy.SYSTEM
            and self.is_expired()
        )

    @property
    def quota_used_up(self) -> bool:
        return self.quota_limit_usd > 0 and self.spent_usd >= self.quota_limit_usd

    @property
    def state(self) -> str:
        """What people see: enabled, disabled, expired or quota used up."""
        if self.status == self.Status.DISABLED:
            return "disabled"
        if self.is_expired():
            return "expired"
        if self.quota_used_up:
            return "quota_used_up"
        return "enabled"


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> "ApiTokenQuerySet":
        return self.filter(revoked_at__isnull=True)


class ApiToken(HashedSecret):
    """A user's token for the REST API: acts as that user, with that user's permissions.

    Stored as a SHA-256 digest like relay keys; revoking keeps the row, so the owner still sees
    when a token was made and last used. Its own prefix, so neither kind can be mistaken for
    the other: the API refuses relay keys, the relay never finds a token's digest.
    """

    secret_format = API_TOKEN

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(
        max_length=NAME_MAX_LENGTH,
        error_messages={
            "blank": "Name is required.",
            "max_length": f"Name can be at most {NAME_MAX_LENGTH} characters.",
        },
    )
    prefix = models.CharField(max_length=API_TOKEN.display_prefix_length, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Who made it: the owner in the portal, or a staff member in the admin, so a token handed to
    # someone can be told from one they made. Deleting that person empties it rather than the
    # token, which goes on working. Empty, too, for tokens made before it was recorded.
    created_by = _person(related_name="api_tokens_created", editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


# Invitations to join a team: the token (keys.secret_formats.INVITATION_TOKEN) is a bearer
# secret in the emailed link, stored only as a SHA-256 digest, so the database never holds a
# link that works. Long enough for someone on holiday to answer, short enough that a forgotten
# link stops working.
INVITATION_VALID_DAYS = 7


class InvitationQuerySet(models.QuerySet):
    def pending(self, now: datetime | None = None) -> "InvitationQuerySet":
        """Invitations that can still be accepted: neither used, revoked nor expired."""
        return self.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now or timezone.now()
        )


class Invitation(models.Model):
    """A lead's invitation for an email address to join a team; the person with that address
    accepts it while signed in. Leads never pick from the deployment's users, so nothing tells
    them who has an account."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    # Stored lower-cased, so one address is one address whatever case the lead typed.
    email = models.EmailField(
        error_messages={"blank": "Enter the email address of the person to invite."}
    )
    role = models.CharField(
        max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER
    )
    invited_by = _person(editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(editable=False)
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)
    accepted_by = _person(editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "email"])]

    def __str__(self) -> str:
        return f"{self.email} to {self.team} ({self.role})"


class AuditEvent(models.Model):
    """The one audit trail, as zulip's RealmAuditLog: every action of every interface writes
    one row, from the service that makes the change and in its transaction. Who acted (empty:
    the system), in which team (empty for deployment-wide objects: groups, tokens, channels),
    what was done (`action`), to what (`subject_*`, kept readable after the subject is
    deleted), and what changed, old -> new. Never a secret: credentials and plaintext keys are
    written as "changed", never as values."""

    class Action(models.TextChoices):
        KEY_CREATED = "key.created", pgettext_lazy("audit action", "Created")
        KEY_UPDATED = "key.updated", pgettext_lazy("audit action", "Updated")
        KEY_ROTATED = "key.rotated", pgettext_lazy("audit action", "Rotated")
        KEY_ENABLED = "key.enabled", pgettext_lazy("audit action", "Enabled")
        KEY_DISABLED = "key.disabled", pgettext_lazy("audit action", "Disabled")
        KEY_EXPIRED = "key.expired", pgettext_lazy("audit action", "Expired")
        KEY_SPEND_SPIKE = "key.spend_spike", pgettext_lazy("audit action", "Disabled: spend spike")
        KEY_DELETED = "key.deleted", pgettext_lazy("audit action", "Deleted")
        INVITATION_CREATED = "invitation.created", pgettext_lazy("audit action", "Invited")
        INVITATION_REVOKED = (
            "invitation.revoked",
            pgettext_lazy("audit action", "Invitation revoked"),
        )
        INVITATION_ACCEPTED = (
            "invitation.accepted",
            pgettext_lazy("audit action", "Invitation accepted"),
        )
        MEMBER_ADDED = "member.added", pgettext_lazy("audit action", "Member added")
        MEMBER_ROLE_CHANGED = "member.role_changed", pgettext_lazy("audit action", "Role changed")
        MEMBER_REMOVED = "member.removed", pgettext_lazy("audit action", "Member removed")
        MEMBER_CAP_UPDATED = (
            "member.cap_updated",
            pgettext_lazy("audit action", "Monthly cap changed"),
        )
        TEAM_CREATED = "team.created", pgettext_lazy("audit action", "Team created")
        TEAM_UPDATED = "team.updated", pgettext_lazy("audit action", "Team updated")
        TEAM_ALLOWED_GROUPS_CHANGED = (
            "team.allowed_groups_changed",
            pgettext_lazy("audit action", "Allowed groups changed"),
        )
        TEAM_BUDGET_UPDATED = "team.budget_updated", pgettext_lazy("audit action", "Budget changed")
        TEAM_NOTIFICATIONS_UPDATED = (
            "team.notifications_updated",
            pgettext_lazy("audit action", "Notification settings changed"),
        )
        MEMBER_EMAIL_PREFERENCE_UPDATED = (
            "member.email_preference_updated",
            pgettext_lazy("audit action", "Email preference changed"),
        )
        WEBHOOK_CREATED = "webhook.created", pgettext_lazy("audit action", "Webhook created")
        WEBHOOK_UPDATED = "webhook.updated", pgettext_lazy("audit action", "Webhook updated")
        WEBHOOK_DELETED = "webhook.deleted", pgettext_lazy("audit action", "Webhook deleted")
        GROUP_CREATED = "group.created", pgettext_lazy("audit action", "Group created")
        GROUP_UPDATED = "group.updated", pgettext_lazy("audit action", "Group updated")
        GROUP_ROUTES_CHANGED = (
            "group.routes_changed",
            pgettext_lazy("audit action", "Group routes changed"),
        )
        TOKEN_CREATED = "token.created", pgettext_lazy("audit action", "API token created")
        TOKEN_REVOKED = "token.revoked", pgettext_lazy("audit action", "API token revoked")
        CHANNEL_CREATED = "channel.created", pgettext_lazy("audit action", "Channel created")
        CHANNEL_UPDATED = "channel.updated", pgettext_lazy("audit action", "Channel updated")
        CHANNEL_DELETED = "channel.deleted", pgettext_lazy("audit action", "Channel deleted")
        CHANNEL_CREDENTIALS_REENCRYPTED = (
            "channel.credentials_reencrypted",
            pgettext_lazy("audit action", "Channel credentials re-encrypted"),
        )
        PRICE_CREATED = "price.created", pgettext_lazy("audit action", "Price created")
        PRICE_UPDATED = "price.updated", pgettext_lazy("audit action", "Price changed")
        PRICE_DELETED = "price.deleted", pgettext_lazy("audit action", "Price deleted")

    # What an action was done to: its first word ("key.created" was done to a key).
    class SubjectType(models.TextChoices):
        KEY = "key", _("Key")
        MEMBER = "member", _("Member")
        INVITATION = "invitation", _("Invitation")
        TEAM = "team", _("Team")
        GROUP = "group", _("Group")
        TOKEN = "token", _("Token")
        CHANNEL = "channel", _("Channel")
        WEBHOOK = "webhook", _("Webhook")
        PRICE = "price", _("Price")

    actor = _person(help_text="Empty when the system acted (e.g. expiry).")
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="audit_events",
        help_text="Empty for what belongs to no team: groups, API tokens, channels.",
    )
    action = models.CharField(max_length=40, choices=Action.choices)
    subject_type = models.CharField(max_length=20, choices=SubjectType.choices)
    # No foreign key: the subject may be deleted, and its row must outlive it.
    subject_id = models.PositiveBigIntegerField(null=True, blank=True)
    subject_label = models.CharField(
        max_length=254,
        blank=True,
        help_text="The subject's name when it was done: key or group name, member's username, "
        "invited address.",
    )
    subject_prefix = models.CharField(
        max_length=max(RELAY_KEY.display_prefix_length, API_TOKEN.display_prefix_length),
        blank=True,
        help_text="The display prefix of a key or token.",
    )
    # The key's page lists its trail by this; emptied, not deleted, with the key.
    key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    changes = models.JSONField(
        default=dict, blank=True, help_text="Changed fields: {field: [old, new]}."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["team", "-created_at"], name="auditevent_team_time"),
            models.Index(fields=["key", "-created_at"], name="auditevent_key_time"),
            # One subject's trail (the price admin's "last changed").
            models.Index(
                fields=["subject_type", "subject_id", "-created_at"], name="auditevent_subject_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.subject_label}".rstrip()


class UserPreference(models.Model):
    """What a person chose for themselves across teams: the portal's language, kept on the
    account (not only in a cookie) so it follows them to every browser they sign in on."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="preference",
    )
    language = models.CharField(max_length=10, choices=settings.LANGUAGES, blank=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.language or 'browser language'}"
