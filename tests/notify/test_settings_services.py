"""notify.services.settings: a team's notification settings (its leads and staff change them)
and a member's opt-out of emails about their own keys (only they change it). One audit row per
change; nothing written when nothing changed or something was refused."""

from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from keys.models import AuditEvent, Membership
from notify import services
from notify.models import EmailPreference, NotificationSettings
from notify.selectors import email_preference_for, notification_settings_for
from notify.services.settings import (
    EXPIRY_DAYS_MESSAGE,
    RECIPIENTS_MESSAGE,
    SPIKE_MESSAGE,
    THRESHOLDS_MESSAGE,
)

from ..factories import UserFactory, grant


def audit_rows(action: str = "team.notifications_updated") -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def test_a_team_without_settings_has_the_defaults(team):
    current = notification_settings_for(team)

    assert current.pk is None
    assert (
        current.email_recipients,
        current.thresholds,
        current.expiry_warning_days,
        current.spike_limit_usd,
    ) == ("both", [50, 80, 100], [7, 3, 1], Decimal(0))


def test_a_lead_changes_them_with_one_audit_row(team, lead):
    saved = services.notification_settings_update(
        actor=lead,
        team=team,
        email_recipients="leads",
        thresholds="90, 25 ,50",
        expiry_warning_days=[1, 14],
        spike_limit_usd="20.5",
    )

    stored = NotificationSettings.objects.get(team=team)
    assert stored.pk == saved.pk
    assert (
        stored.email_recipients,
        stored.thresholds,
        stored.expiry_warning_days,
        stored.spike_limit_usd,
    ) == ("leads", [25, 50, 90], [14, 1], Decimal("20.50"))
    [row] = audit_rows()
    assert (row.actor, row.team, row.subject_type, row.subject_label) == (
        lead,
        team,
        "team",
        "Acme",
    )
    assert row.changes == {
        "email_recipients": ["both", "leads"],
        "thresholds": ["50, 80, 100", "25, 50, 90"],
        "expiry_warning_days": ["7, 3, 1", "14, 1"],
        "spike_limit_usd": ["0", "20.5"],
    }


def test_only_what_changed_is_recorded(team, lead):
    services.notification_settings_update(
        actor=lead, team=team, thresholds="50, 80, 100", spike_limit_usd="5"
    )

    [row] = audit_rows()
    assert row.changes == {"spike_limit_usd": ["0", "5"]}


@pytest.mark.parametrize(
    "unchanged",
    [
        {},
        {"thresholds": "100 80 50"},
        {"email_recipients": "both", "expiry_warning_days": [1, 3, 7], "spike_limit_usd": "0"},
    ],
)
def test_nothing_is_written_when_nothing_changed(team, lead, unchanged):
    current = services.notification_settings_update(actor=lead, team=team, **unchanged)

    assert current.pk is None
    assert not NotificationSettings.objects.exists()
    assert audit_rows() == []


def test_empty_lists_turn_those_emails_off(team, lead):
    services.notification_settings_update(
        actor=lead, team=team, thresholds="", expiry_warning_days=[]
    )

    stored = NotificationSettings.objects.get(team=team)
    assert (stored.thresholds, stored.expiry_warning_days) == ([], [])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email_recipients", "everyone", RECIPIENTS_MESSAGE),
        ("email_recipients", 1, RECIPIENTS_MESSAGE),
        ("thresholds", "50, 80%", THRESHOLDS_MESSAGE),
        ("thresholds", "50.5", THRESHOLDS_MESSAGE),
        ("thresholds", "-5", THRESHOLDS_MESSAGE),
        ("thresholds", 80, THRESHOLDS_MESSAGE),
        ("thresholds", "0", "Each threshold must be a whole percentage from 1 to 100; 0 is not."),
        (
            "thresholds",
            [50, 101],
            "Each threshold must be a whole percentage from 1 to 100; 101 is not.",
        ),
        ("thresholds", [50, "80"], "Each threshold must be a whole number, not '80'."),
        ("thresholds", [True], "Each threshold must be a whole number, not True."),
        ("thresholds", [50.5], "Each threshold must be a whole number, not 50.5."),
        ("thresholds", "80, 50, 80", "Each threshold can be given once; 80 is repeated."),
        ("thresholds", "10 20 30 40 50 60", "At most 5 thresholds; this list has 6."),
        ("expiry_warning_days", "a week", EXPIRY_DAYS_MESSAGE),
        (
            "expiry_warning_days",
            "91",
            "Each expiry warning must be a whole number of days from 1 to 90; 91 is not.",
        ),
        (
            "expiry_warning_days",
            [0],
            "Each expiry warning must be a whole number of days from 1 to 90; 0 is not.",
        ),
        ("expiry_warning_days", [3, 3], "Each expiry warning can be given once; 3 is repeated."),
        ("expiry_warning_days", [1, 2, 3, 4, 5, 6], "At most 5 expiry warnings; this list has 6."),
        ("spike_limit_usd", "ten", SPIKE_MESSAGE),
        ("spike_limit_usd", "1000000.01", SPIKE_MESSAGE),
        ("spike_limit_usd", "1.001", SPIKE_MESSAGE),
        ("spike_limit_usd", "1e3", SPIKE_MESSAGE),
        (
            "spike_limit_usd",
            "-1",
            "Spend-spike limit cannot be negative. Use 0 for no spike guard.",
        ),
        (
            "spike_limit_usd",
            "0.001",
            "A spend-spike limit below 0.01 US dollars would be stored as 0, which means no "
            "spike guard. Enter at least 0.01, or 0 for no spike guard.",
        ),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(team, lead, field, value, message):
    with pytest.raises(ValidationError) as refused:
        services.notification_settings_update(actor=lead, team=team, **{field: value})

    assert refused.value.message_dict == {field: [message]}
    assert not NotificationSettings.objects.exists()
    assert audit_rows() == []


def test_every_bad_field_is_named_at_once_and_the_good_ones_are_not_kept(team, lead):
    NotificationSettings.objects.create(team=team, thresholds=[50], expiry_warning_days=[7])

    with pytest.raises(ValidationError) as refused:
        services.notification_settings_update(
            actor=lead, team=team, email_recipients="leads", thresholds="0", spike_limit_usd="x"
        )

    assert set(refused.value.message_dict) == {"thresholds", "spike_limit_usd"}
    assert NotificationSettings.objects.get(team=team).email_recipients == "both"
    assert audit_rows() == []


def test_the_largest_spike_limit_is_a_million(team, lead):
    services.notification_settings_update(actor=lead, team=team, spike_limit_usd="1000000")

    assert NotificationSettings.objects.get(team=team).spike_limit_usd == Decimal("1000000")


@pytest.mark.parametrize("who", ["member", "outsider", "staff_without_permission"])
def test_only_leads_and_staff_who_may_change_them(team, member, outsider, who):
    actor = {
        "member": member,
        "outsider": outsider,
        "staff_without_permission": grant(
            UserFactory(username="ops", is_staff=True), "keys.*", "notify.view_notificationsettings"
        ),
    }[who]

    with pytest.raises(PermissionDenied) as refused:
        services.notification_settings_update(actor=actor, team=team, email_recipients="leads")

    assert str(refused.value) == "Only a lead of Acme can change its notification settings."
    assert not NotificationSettings.objects.exists()
    assert audit_rows() == []


def test_staff_with_the_permission_and_the_system_may(team):
    ops = grant(UserFactory(username="ops", is_staff=True), "notify.change_notificationsettings")

    services.notification_settings_update(actor=ops, team=team, email_recipients="owner")
    services.notification_settings_update(actor=None, team=team, email_recipients="leads")

    assert [(row.actor, row.changes) for row in reversed(audit_rows())] == [
        (ops, {"email_recipients": ["both", "owner"]}),
        (None, {"email_recipients": ["owner", "leads"]}),
    ]


# --- a member's own choice ------------------------------------------------------------------


def test_a_member_turns_emails_about_their_keys_off_and_on(team, member):
    membership = Membership.objects.get(team=team, user=member)
    assert email_preference_for(membership).own_key_emails is True

    services.email_preference_update(actor=member, membership=membership, own_key_emails=False)
    services.email_preference_update(actor=member, membership=membership, own_key_emails=False)

    assert EmailPreference.objects.get(membership=membership).own_key_emails is False
    [row] = audit_rows("member.email_preference_updated")
    assert (row.actor, row.team, row.subject_type, row.subject_label, row.changes) == (
        member,
        team,
        "member",
        "member",
        {"own_key_emails": [True, False]},
    )

    services.email_preference_update(actor=member, membership=membership, own_key_emails=True)
    assert EmailPreference.objects.get(membership=membership).own_key_emails is True
    assert len(audit_rows("member.email_preference_updated")) == 2


def test_keeping_emails_on_writes_nothing(team, member):
    membership = Membership.objects.get(team=team, user=member)

    services.email_preference_update(actor=member, membership=membership, own_key_emails=True)

    assert not EmailPreference.objects.exists()
    assert audit_rows("member.email_preference_updated") == []


@pytest.mark.parametrize("who", ["lead", "superuser"])
def test_nobody_else_chooses_for_a_member(team, member, lead, who):
    actor = (
        lead if who == "lead" else UserFactory(username="root", is_staff=True, is_superuser=True)
    )
    membership = Membership.objects.get(team=team, user=member)

    with pytest.raises(PermissionDenied) as refused:
        services.email_preference_update(actor=actor, membership=membership, own_key_emails=False)

    assert str(refused.value) == (
        "Only the member themselves can choose whether they get emails about their keys."
    )
    assert not EmailPreference.objects.exists()
    assert audit_rows("member.email_preference_updated") == []


def test_a_preference_must_be_true_or_false(team, member):
    membership = Membership.objects.get(team=team, user=member)

    with pytest.raises(ValidationError) as refused:
        services.email_preference_update(actor=member, membership=membership, own_key_emails="no")

    assert refused.value.message_dict == {"own_key_emails": ["Must be true or false."]}
    assert not EmailPreference.objects.exists()
