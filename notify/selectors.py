"""Scoped reads of notifications."""

from keys.models import Team

from .models import NotificationSettings


def notification_settings_for(team: Team) -> NotificationSettings:
    """The team's saved settings, or (unsaved) the defaults: thresholds 50/80/100 %, expiry
    warnings 7/3/1 days before, spike guard off."""
    found = NotificationSettings.objects.filter(team=team).first()
    if found is not None:
        return found
    return NotificationSettings(
        team=team,
        thresholds=list(NotificationSettings.DEFAULT_THRESHOLDS),
        expiry_warning_days=list(NotificationSettings.DEFAULT_EXPIRY_WARNING_DAYS),
    )
