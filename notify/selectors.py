"""Scoped reads of notifications: a team's settings and a member's email preference (as stored
or, where nothing is stored yet, as the defaults every team and member starts with), and what
an actor may see of a team's webhooks and deliveries.

A team's webhooks and their delivery log are for its leads (and staff with the notify app's
permission of the action): anyone else, the team's members included, finds none, so the
interfaces answer 404 as for a team that is not theirs.
"""

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from keys.models import Membership, Team
from keys.selectors import is_team_lead, team_list

from .models import Attempt, Delivery, EmailPreference, NotificationSettings, Webhook

STAFF_VIEW = "notify.view_webhook"


def webhook_team_get(*, actor: User, team_slug: str, staff_permission: str | None) -> Team | None:
    """The team named `team_slug` if the actor manages its webhooks: its leads, and staff with
    `staff_permission`; None for anyone else."""
    team = team_list(actor=actor, staff_permission=staff_permission).filter(slug=team_slug).first()
    if team is None or not is_team_lead(actor=actor, team=team, staff_permission=staff_permission):
        return None
    return team


def webhook_list(
    *, actor: User, team: Team, staff_permission: str | None = STAFF_VIEW
) -> QuerySet[Webhook]:
    """The team's webhooks, oldest first, each with `last_status` and `last_at` of its newest
    delivery (None when it has none); none unless the actor manages the team's webhooks."""
    if not is_team_lead(actor=actor, team=team, staff_permission=staff_permission):
        return Webhook.objects.none()
    newest = Delivery.objects.filter(webhook=OuterRef("pk")).order_by("-created_at", "-id")
    return (
        Webhook.objects.filter(team=team)
        .annotate(
            last_status=Subquery(newest.values("status")[:1]),
            last_at=Subquery(newest.values("created_at")[:1]),
        )
        .order_by("created_at", "id")
    )


def delivery_list(
    *, actor: User, webhook: Webhook, staff_permission: str | None = STAFF_VIEW
) -> QuerySet[Delivery]:
    """The webhook's deliveries, newest first, with their event and attempts (newest first);
    none unless the actor manages the webhook's team."""
    if not is_team_lead(actor=actor, team=webhook.team, staff_permission=staff_permission):
        return Delivery.objects.none()
    return (
        Delivery.objects.filter(webhook=webhook)
        .select_related("event")
        .prefetch_related(Prefetch("attempt_log", queryset=Attempt.objects.order_by("-at", "-id")))
        .order_by("-created_at", "-id")
    )


def notification_settings_for(team: Team) -> NotificationSettings:
    """The team's saved settings, or unsaved ones with the defaults (leads and owner, 50/80/100 %,
    7/3/1 days, no spike guard): a team that never opened its Notifications page is told too."""
    stored = NotificationSettings.objects.filter(team=team).first()
    if stored is not None:
        return stored
    return NotificationSettings(
        team=team,
        email_recipients=NotificationSettings.Recipients.BOTH,
        thresholds=list(NotificationSettings.DEFAULT_THRESHOLDS),
        expiry_warning_days=list(NotificationSettings.DEFAULT_EXPIRY_WARNING_DAYS),
    )


def email_preference_for(membership: Membership) -> EmailPreference:
    """The member's saved preference, or an unsaved one that keeps emails about their keys on."""
    stored = EmailPreference.objects.filter(membership=membership).first()
    return stored if stored is not None else EmailPreference(membership=membership)
