"""Another team's usage through the API: for staff who may view it in the admin, else nothing."""

import pytest
from django.utils import timezone

from billing.models import UsageDaily

from ...factories import make_key
from ...keys.api.conftest import STAFF_KINDS
from ..factories import UsageEventFactory

ALLOWED = {"superuser", "staff_with_permission"}


@pytest.fixture
def acme_usage(team, member, group):
    key = make_key(team=team, owner=member, group=group, name="acme-key").key
    event = UsageEventFactory(key=key)
    UsageDaily.objects.create(
        team=team, key=key, model=event.model, day=timezone.localdate(), requests=7
    )
    return event


@pytest.mark.parametrize("kind", STAFF_KINDS)
def test_events_of_another_team(api, actor_of_kind, acme_usage, kind):
    response = api(actor_of_kind(kind, "billing.view_usageevent")).get(
        "/api/v1/usage/", {"team": "acme"}
    )

    assert response.status_code == 200
    shown = [acme_usage.pk] if kind in ALLOWED else []
    assert [row["id"] for row in response.json()["results"]] == shown


@pytest.mark.parametrize("kind", STAFF_KINDS)
def test_daily_totals_of_another_team(api, actor_of_kind, acme_usage, kind):
    response = api(actor_of_kind(kind, "billing.view_usagedaily")).get(
        "/api/v1/usage/daily/", {"team": "acme"}
    )

    assert response.status_code == 200
    shown = [7] if kind in ALLOWED else []
    assert [row["requests"] for row in response.json()["results"]] == shown
