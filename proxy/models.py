from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from keys.models import Group


class Channel(models.Model):
    """An upstream the relay forwards to. Its credential is write-only in every interface."""

    class Provider(models.TextChoices):
        ANTHROPIC = "anthropic", "Anthropic"
        OPENAI = "openai", "OpenAI"
        MOCK = "mock", "Mock (answers locally, no network)"

    name = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    base_url = models.URLField(max_length=500, blank=True)
    # Needed in clear to call the upstream, so it is stored; it is never rendered, serialised
    # or logged again after it is saved.
    credential = models.CharField(max_length=500, blank=True)
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

    @property
    def has_credential(self) -> bool:
        return bool(self.credential)


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
