"""The portal's Notifications page of a team (/t/<slug>/notifications/): its leads change the
team's settings, members read them; every member turns emails about their own keys off or on;
anyone else, staff who are not members included, gets a 404."""

import re

import pytest
from django.urls import reverse

from keys.models import AuditEvent, Membership
from notify.models import EmailPreference, NotificationSettings
from notify.services.settings import THRESHOLDS_MESSAGE

from ..factories import UserFactory

PAGE = "/t/acme/notifications/"
SETTINGS = "/t/acme/notifications/settings/"
ME = "/t/acme/notifications/me/"
VALID = {
    "email_recipients": "leads",
    "thresholds": "75, 100",
    "expiry_warning_days": "14, 2",
    "spike_limit_usd": "25",
}


def logged_in(client, user):
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_urls_are_named():
    assert reverse("notify:notifications", args=["acme"]) == PAGE
    assert reverse("notify:settings_update", args=["acme"]) == SETTINGS
    assert reverse("notify:preference_update", args=["acme"]) == ME


def test_a_lead_sees_the_settings_form_with_the_defaults(client, lead):
    response = logged_in(client, lead).get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="thresholds" value="50, 80, 100"' in html
    assert 'name="expiry_warning_days" value="7, 3, 1"' in html
    assert re.search(r'value="both"[^>]*checked', html)
    assert '<a class="btn" href="/t/acme/notifications/webhooks/">Webhooks</a>' in html
    assert 'aria-current="page">Notifications</a>' in html


def test_a_member_reads_them_without_a_form(client, member, team):
    NotificationSettings.objects.create(
        team=team,
        email_recipients="owner",
        thresholds=[90],
        expiry_warning_days=[5],
        spike_limit_usd=12,
    )

    response = logged_in(client, member).get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["settings_form"] is None
    assert 'name="thresholds"' not in html
    assert SETTINGS not in html
    assert "/notifications/webhooks/" not in html
    assert "<dd>The key&#x27;s owner</dd>" in html
    assert "<dd>90%</dd>" in html
    assert "<dd>5 days before</dd>" in html
    assert "more than $12.00 in 10 minutes" in html
    assert 'name="own_key_emails"' in html


@pytest.mark.parametrize("who", ["outsider", "staff", "nobody"])
def test_anyone_else_gets_a_404(client, team, outsider, who):
    actor = {
        "outsider": outsider,
        "staff": UserFactory(username="root", is_staff=True, is_superuser=True),
        "nobody": UserFactory(username="nobody"),
    }[who]
    client = logged_in(client, actor)

    assert client.get(PAGE).status_code == 404
    assert client.post(SETTINGS, VALID).status_code == 404
    assert client.post(ME, {}).status_code == 404
    assert not NotificationSettings.objects.exists()
    assert not EmailPreference.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="team.notif").exists()


def test_signing_in_comes_first(client, team):
    response = client.get(PAGE)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_lead_saves_the_settings(client, lead, team):
    response = logged_in(client, lead).post(SETTINGS, VALID, follow=True)

    assert response.redirect_chain == [(PAGE, 302)]
    assert messages_of(response) == ["Notification settings saved."]
    stored = NotificationSettings.objects.get(team=team)
    assert (stored.email_recipients, stored.thresholds, stored.expiry_warning_days) == (
        "leads",
        [75, 100],
        [14, 2],
    )
    assert str(stored.spike_limit_usd) == "25.00"
    [row] = AuditEvent.objects.filter(action="team.notifications_updated")
    assert row.actor == lead
    assert 'name="thresholds" value="75, 100"' in response.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("thresholds", "lots", THRESHOLDS_MESSAGE),
        ("thresholds", "80, 80", "Each threshold can be given once; 80 is repeated."),
        (
            "expiry_warning_days",
            "120",
            "Each expiry warning must be a whole number of days from 1 to 90; 120 is not.",
        ),
        (
            "spike_limit_usd",
            "-3",
            "Spend-spike limit cannot be negative. Use 0 for no spike guard.",
        ),
        ("email_recipients", "everyone", "Choose who gets the emails: leads, owner or both."),
    ],
)
def test_a_refused_value_is_shown_next_to_its_field_and_nothing_is_written(
    client, lead, field, value, message
):
    response = logged_in(client, lead).post(SETTINGS, {**VALID, field: value})

    assert response.status_code == 400
    assert response.context["settings_form"].errors == {field: [message]}
    html = response.content.decode()
    assert f"<li>{message}</li>" in html.replace("&#x27;", "'")
    assert not NotificationSettings.objects.exists()
    assert not AuditEvent.objects.filter(action="team.notifications_updated").exists()


def test_a_member_cannot_post_the_team_settings(client, member):
    response = logged_in(client, member).post(SETTINGS, VALID)

    assert response.status_code == 404
    assert not NotificationSettings.objects.exists()


@pytest.mark.parametrize("who", ["lead", "member"])
def test_every_member_turns_emails_about_their_keys_off_and_on(client, team, lead, member, who):
    user = {"lead": lead, "member": member}[who]
    client = logged_in(client, user)

    response = client.post(ME, {}, follow=True)

    assert response.redirect_chain == [(PAGE, 302)]
    assert messages_of(response) == ["You no longer get emails about your keys in this team."]
    membership = Membership.objects.get(team=team, user=user)
    assert EmailPreference.objects.get(membership=membership).own_key_emails is False
    assert "Now: <strong>off</strong>" in response.content.decode()

    response = client.post(ME, {"own_key_emails": "on"}, follow=True)

    assert messages_of(response) == ["You get emails about your keys in this team."]
    assert EmailPreference.objects.get(membership=membership).own_key_emails is True
    assert AuditEvent.objects.filter(action="member.email_preference_updated").count() == 2


def test_one_member_s_choice_is_not_another_s(client, team, lead, member):
    logged_in(client, member).post(ME, {})

    response = logged_in(client, lead).get(PAGE)

    assert response.context["preference_form"].initial == {"own_key_emails": True}
    assert EmailPreference.objects.get().membership.user == member


@pytest.mark.parametrize("who", ["lead", "member"])
def test_the_team_s_pages_link_to_notifications(client, lead, member, who):
    client = logged_in(client, {"lead": lead, "member": member}[who])

    for page in ("/t/acme/team/", "/t/acme/keys/"):
        html = client.get(page).content.decode()
        assert f'<a href="{PAGE}">Notifications</a>' in html
    assert (
        f'<a href="{PAGE}">Notification settings</a>'
        in client.get("/t/acme/team/").content.decode()
    )
