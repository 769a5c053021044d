from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models

from core import credentials
from keys.models import Group


class HttpUrlField(models.URLField):
    """A URL the relay can call: http or https only (URLField alone also takes ftp://)."""

    default_validators = [URLValidator(schemes=["http", "https"])]


# The longest upstream credential accepted, in clear (vendors' keys are about 100 characters).
CREDENTIAL_MAX_LENGTH = 500


class Channel(models.Model):
    """An upstream the relay forwards to. Its credential is write-only in every interface."""

    class Provider(models.TextChoices):
        ANTHROPIC = "anthropic", "Anthropic"
        OPENAI = "openai", "OpenAI"
        MOCK = "mock", "Mock (answers locally, no network)"

    name = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    base_url = HttpUrlField(
        max_length=500,
        blank=True,
        help_text="e.g. https://api.anthropic.com (no /v1). Not needed for the mock provider.",
    )
    # The upstream API key as a Fernet token (core.credentials), "" for none. Only
    # proxy.services writes it and only the relay's channel table decrypts it; it is never
    # rendered, serialised, filtered on or logged. Not editable: no ModelForm can include it.
    encrypted_credential = models.TextField(blank=True, editable=False)
    is_active = models.BooleanField(default=True)
    timeout_seconds = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="How long a request may take upstream, streaming included.",
    )
    groups = models.ManyToManyField(Group, through="Route", related_name="channels")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"

    def __repr__(self) -> str:
        return f"<Channel {self.pk} {self.name!r} {self.provider}>"

    def clean(self) -> None:
        needs_url = self.provider in (self.Provider.ANTHROPIC, self.Provider.OPENAI)
        if needs_url and not self.base_url:
            raise ValidationError(
                {
                    "base_url": f"A base URL is required for the {self.get_provider_display()} "
                    "provider."
                }
            )

    @property
    def has_credential(self) -> bool:
        return bool(self.encrypted_credential)

    def decrypt_credential(self) -> str:
        """The credential in clear ("" for none), to call the upstream; raises
        UnreadableCredential."""
        if not self.encrypted_credential:
            return ""
        return credentials.decrypt(self.encrypted_credential, owner=f"Channel {self.name}")


class Route(models.Model):
    """A group's routing policy: its channels, tried in priority order (lowest first)."""

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="routes")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="routes")
    priority = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["group", "priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "channel"], name="one_route_per_group_channel")
        ]

    def __str__(self) -> str:
        return f"{self.group} → {self.channel.name} (priority {self.priority})"
