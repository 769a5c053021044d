"""Scoped reads of notifications: a team's settings and a member's email preference, as stored
or, where nothing is stored yet, as the defaults every team and member starts with."""

from keys.models import Membership, Team

from .models import EmailPreference, NotificationSettings


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
