"""/api/v1/teams/{slug}/notifications/ and .../notifications/me/: the team's notification
settings (members read them, leads and staff with the permission change them, members are
refused with 403, anyone else finds nothing) and the calling member's own choice of emails
about their keys."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from keys import services as key_services
from keys.models import AuditEvent, Membership
from notify.models import EmailPreference, NotificationSettings
from notify.services.settings import SPIKE_MESSAGE, THRESHOLDS_MESSAGE

from ..factories import UserFactory, grant

SETTINGS = "/api/v1/teams/acme/notifications/"
ME = "/api/v1/teams/acme/notifications/me/"
DEFAULTS = {
    "email_recipients": "both",
    "thresholds": [50, 80, 100],
    "expiry_warning_days": [7, 3, 1],
    "spike_limit_usd": "0.00",
}


@pytest.fixture
def api():
    """api(user) is a client sending a fresh API token of `user`; api(None) sends nothing."""

    def client_for(user) -> APIClient:
        client = APIClient()
        if user is not None:
            issued = key_services.api_token_create(user=user, name="tests", actor=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {issued.plaintext}")
        return client

    return client_for


def settings_rows() -> int:
    return AuditEvent.objects.filter(action="team.notifications_updated").count()


@pytest.mark.parametrize("who", ["lead", "member"])
def test_members_read_the_settings(api, lead, member, who):
    response = api({"lead": lead, "member": member}[who]).get(SETTINGS)

    assert response.status_code == 200
    assert response.json() == DEFAULTS
    assert "no-store" in response["Cache-Control"]


def test_a_lead_changes_them_with_one_audit_row(api, team, lead):
    response = api(lead).patch(
        SETTINGS,
        {
            "email_recipients": "owner",
            "thresholds": [100, 90],
            "expiry_warning_days": [2, 10],
            "spike_limit_usd": 12.5,
        },
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == {
        "email_recipients": "owner",
        "thresholds": [90, 100],
        "expiry_warning_days": [10, 2],
        "spike_limit_usd": "12.50",
    }
    stored = NotificationSettings.objects.get(team=team)
    assert stored.spike_limit_usd == Decimal("12.50")
    [row] = AuditEvent.objects.filter(action="team.notifications_updated")
    assert (row.actor, row.changes["thresholds"]) == (lead, ["50, 80, 100", "90, 100"])


def test_an_empty_patch_writes_nothing(api, lead):
    response = api(lead).patch(SETTINGS, {}, format="json")

    assert response.status_code == 200
    assert response.json() == DEFAULTS
    assert not NotificationSettings.objects.exists()
    assert settings_rows() == 0


@pytest.mark.parametrize(("who", "status"), [("member", 403), ("outsider", 404), ("nobody", 404)])
def test_only_leads_change_them(api, member, outsider, who, status):
    actor = {"member": member, "outsider": outsider}.get(who) or UserFactory(username="nobody")

    response = api(actor).patch(SETTINGS, {"email_recipients": "leads"}, format="json")

    assert response.status_code == status
    if status == 403:
        assert response.json() == {
            "detail": "Only a lead of Acme can change its notification settings."
        }
    assert not NotificationSettings.objects.exists()
    assert settings_rows() == 0


def test_another_team_is_not_found(api, team, outsider):
    NotificationSettings.objects.create(team=team, email_recipients="leads")

    assert api(outsider).get(SETTINGS).status_code == 404
    assert api(None).get(SETTINGS).status_code == 401
    assert NotificationSettings.objects.get(team=team).email_recipients == "leads"


def test_staff_need_the_permission(api, team):
    reader = grant(
        UserFactory(username="reader", is_staff=True), "notify.view_notificationsettings"
    )
    changer = grant(
        UserFactory(username="changer", is_staff=True), "notify.change_notificationsettings"
    )

    assert api(reader).get(SETTINGS).status_code == 200
    assert api(reader).patch(SETTINGS, {"thresholds": [10]}, format="json").status_code == 404
    response = api(changer).patch(SETTINGS, {"thresholds": [10]}, format="json")
    assert (response.status_code, response.json()["thresholds"]) == (200, [10])
    assert settings_rows() == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email_recipients", "everyone", "Choose who gets the emails: leads, owner or both."),
        ("email_recipients", None, "This field may not be null."),
        ("thresholds", "50, 80", "Send a list of whole numbers, e.g. [50, 80, 100]."),
        ("thresholds", None, "This field may not be null."),
        ("thresholds", [50, "80"], "Each threshold must be a whole number, not '80'."),
        ("thresholds", [50.5], "Each threshold must be a whole number, not 50.5."),
        ("thresholds", [True], "Each threshold must be a whole number, not True."),
        ("thresholds", [0], "Each threshold must be a whole percentage from 1 to 100; 0 is not."),
        ("thresholds", [5, 5], "Each threshold can be given once; 5 is repeated."),
        ("thresholds", [1, 2, 3, 4, 5, 6], "At most 5 thresholds; this list has 6."),
        ("expiry_warning_days", 7, "Send a list of whole numbers, e.g. [7, 3, 1]."),
        (
            "expiry_warning_days",
            [91],
            "Each expiry warning must be a whole number of days from 1 to 90; 91 is not.",
        ),
        ("spike_limit_usd", "1e400", SPIKE_MESSAGE),
        ("spike_limit_usd", 1000001, SPIKE_MESSAGE),
        ("spike_limit_usd", True, "A valid number is required."),
        ("spike_limit_usd", -1, "Spend-spike limit cannot be negative. Use 0 for no spike guard."),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(api, lead, field, value, message):
    response = api(lead).patch(SETTINGS, {field: value}, format="json")

    assert response.status_code == 400
    assert response.json() == {field: [message]}
    assert not NotificationSettings.objects.exists()
    assert settings_rows() == 0


def test_text_thresholds_are_for_the_portal_only(api, lead):
    # The same rule and message as the portal's text field, once the list is a list.
    assert THRESHOLDS_MESSAGE.startswith("Enter thresholds as whole percentages")
    response = api(lead).patch(SETTINGS, {"thresholds": ["50"]}, format="json")

    assert response.json() == {"thresholds": ["Each threshold must be a whole number, not '50'."]}


# --- the caller's own choice ----------------------------------------------------------------


def test_a_member_reads_and_turns_off_emails_about_their_keys(api, team, member):
    client = api(member)

    assert client.get(ME).json() == {"own_key_emails": True}
    response = client.patch(ME, {"own_key_emails": False}, format="json")

    assert (response.status_code, response.json()) == (200, {"own_key_emails": False})
    membership = Membership.objects.get(team=team, user=member)
    assert EmailPreference.objects.get(membership=membership).own_key_emails is False
    assert client.get(ME).json() == {"own_key_emails": False}
    [row] = AuditEvent.objects.filter(action="member.email_preference_updated")
    assert (row.actor, row.changes) == (member, {"own_key_emails": [True, False]})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"own_key_emails": "false"}, "Must be true or false."),
        ({"own_key_emails": 0}, "Must be true or false."),
        ({"own_key_emails": None}, "This field may not be null."),
        ({}, "This field is required."),
    ],
)
def test_the_choice_is_true_or_false(api, member, body, message):
    response = api(member).patch(ME, body, format="json")

    assert response.status_code == 400
    assert response.json() == {"own_key_emails": [message]}
    assert not EmailPreference.objects.exists()


@pytest.mark.parametrize("who", ["outsider", "superuser"])
def test_only_members_have_a_choice_here(api, team, outsider, who):
    actor = (
        outsider
        if who == "outsider"
        else UserFactory(username="root", is_staff=True, is_superuser=True)
    )

    assert api(actor).get(ME).status_code == 404
    assert api(actor).patch(ME, {"own_key_emails": False}, format="json").status_code == 404
    assert not EmailPreference.objects.exists()
