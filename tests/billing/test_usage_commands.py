"""fill_usage (made-up usage in a scratch database) and measure_usage."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing.models import UsageDaily, UsageEvent
from keys.models import Team

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="fill_usage writes with PostgreSQL's COPY"
)


@pytest.mark.django_db
def test_fill_usage_refuses_a_database_it_was_not_told_is_scratch():
    expected = (
        "fill_usage writes with PostgreSQL's COPY: run it on PostgreSQL."
        if connection.vendor != "postgresql"
        else f"Connected to “{connection.settings_dict['NAME']}”, not “production”: this fills "
        "only the scratch database --scratch names."
    )
    with pytest.raises(CommandError) as raised:
        call_command("fill_usage", "--scratch", "production", "--events", "10")
    assert str(raised.value) == expected
    assert not UsageEvent.objects.exists()
    assert not Team.objects.exists()


@postgres_only
@pytest.mark.django_db
def test_fill_usage_then_measure_usage():
    out = StringIO()
    call_command(
        "fill_usage",
        "--scratch",
        connection.settings_dict["NAME"],
        "--events",
        "2000",
        "--teams",
        "2",
        "--keys",
        "4",
        "--days",
        "10",
        # Statistics outlive the test's transaction, and other tests need a table without.
        "--no-analyze",
        stdout=out,
    )
    assert UsageEvent.objects.count() == 2000
    assert Team.objects.filter(slug__startswith="fill-team-").count() == 2
    # The rollups add up to the events, request for request and cent for cent.
    assert sum(UsageDaily.objects.values_list("requests", flat=True)) == 2000
    event_cost = sum(UsageEvent.objects.values_list("cost_usd", flat=True))
    assert sum(UsageDaily.objects.values_list("cost_usd", flat=True)) == event_cost
    assert "2,000 usage events" in out.getvalue()

    out = StringIO()
    call_command("measure_usage", "--repeat", "1", stdout=out)
    report = out.getvalue()
    assert "30 days                       session" in report
    assert "export, every team (staff): 2,000 rows" in report
