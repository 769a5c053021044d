"""The admin's notification settings: saved through the service (its rules and messages, one
audit row, nothing written when refused or unchanged); members' email preferences read-only."""

import pytest

from keys.models import AuditEvent, Membership
from notify.models import EmailPreference, NotificationSettings
from tests.admin_pages import url

FORM = {
    "email_recipients": "leads",
    "thresholds": "60, 90",
    "expiry_warning_days": "10",
    "spike_limit_usd": "",
}


def test_staff_add_a_team_s_settings_with_one_audit_row(admin_client, admin_user, team):
    response = admin_client.post(url("notify_notificationsettings_add"), {"team": team.pk, **FORM})

    assert response.status_code == 302
    stored = NotificationSettings.objects.get(team=team)
    assert (stored.email_recipients, stored.thresholds, stored.expiry_warning_days) == (
        "leads",
        [60, 90],
        [10],
    )
    [row] = AuditEvent.objects.filter(action="team.notifications_updated")
    assert row.actor == admin_user


def test_the_defaults_are_not_saved_as_a_row(admin_client, team):
    response = admin_client.post(
        url("notify_notificationsettings_add"),
        {
            "team": team.pk,
            "email_recipients": "both",
            "thresholds": "50, 80, 100",
            "expiry_warning_days": "7, 3, 1",
            "spike_limit_usd": "0",
        },
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "These are the defaults of every team: nothing was saved for Acme."
    ]
    assert not NotificationSettings.objects.exists()
    assert not AuditEvent.objects.filter(action="team.notifications_updated").exists()


def test_a_change_shows_the_current_values_and_saves_through_the_service(admin_client, team):
    stored = NotificationSettings.objects.create(
        team=team, thresholds=[40], expiry_warning_days=[5], spike_limit_usd=3
    )
    page = admin_client.get(url("notify_notificationsettings_change", stored.pk)).content.decode()
    assert 'name="thresholds" value="40"' in page
    assert 'name="spike_limit_usd" value="3.00"' in page

    response = admin_client.post(
        url("notify_notificationsettings_change", stored.pk),
        {
            "email_recipients": "both",
            "thresholds": "40",
            "expiry_warning_days": "5, 1",
            "spike_limit_usd": "3",
        },
    )

    assert response.status_code == 302
    stored.refresh_from_db()
    assert stored.expiry_warning_days == [5, 1]
    [row] = AuditEvent.objects.filter(action="team.notifications_updated")
    assert row.changes == {"expiry_warning_days": ["5", "5, 1"]}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "thresholds",
            "150",
            "Each threshold must be a whole percentage from 1 to 100; 150 is not.",
        ),
        ("expiry_warning_days", "3, 3", "Each expiry warning can be given once; 3 is repeated."),
    ],
)
def test_a_refused_value_is_shown_on_its_field(admin_client, team, field, value, message):
    response = admin_client.post(
        url("notify_notificationsettings_add"), {"team": team.pk, **FORM, field: value}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert not NotificationSettings.objects.exists()
    assert not AuditEvent.objects.filter(action="team.notifications_updated").exists()


def test_email_preferences_are_read_only(admin_client, team, member):
    preference = EmailPreference.objects.create(
        membership=Membership.objects.get(team=team, user=member), own_key_emails=False
    )

    assert admin_client.get(url("notify_emailpreference_changelist")).status_code == 200
    assert admin_client.get(url("notify_emailpreference_add")).status_code == 403
    response = admin_client.post(
        url("notify_emailpreference_change", preference.pk), {"own_key_emails": "on"}
    )
    assert response.status_code == 403
    preference.refresh_from_db()
    assert preference.own_key_emails is False
