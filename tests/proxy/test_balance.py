"""The key reads its own balance over a real socket (proxy.balance): OpenAI's legacy billing
subscription and usage, as new-api serves them, and GET /v1/key; checked like GET /v1/models,
nothing charged, forwarded or recorded."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx2
import openai
import pytest
from django.conf import settings
from django.utils import timezone

from billing import ledger
from billing.models import UsageEvent
from billing.refusals import ENDPOINT_LABELS
from billing.services import ingest_usage_stream, settle_usage
from billing.windows import Account, Period, window
from core import keyspace
from keys import services
from keys.models import ApiKey, Membership
from proxy.balance import NO_LIMIT_USD
from tests.billing.factories import UsageEventFactory
from tests.factories import make_key
from tests.refusal_counts import refusal_rows

from .test_gate import DISABLED, INVALID, MISSING, assert_openai_error, ip_message

SUBSCRIPTION = "/v1/dashboard/billing/subscription"
USAGE = "/v1/dashboard/billing/usage"
KEY = "/v1/key"
PATHS = [
    SUBSCRIPTION,
    "/dashboard/billing/subscription",
    USAGE + "?start_date=2026-12-01&end_date=2026-12-08",
    "/dashboard/billing/usage?start_date=2026-12-01&end_date=2026-12-08",
    KEY,
]
CHICAGO = "America/Chicago"


def set_limits(relay, **limits) -> ApiKey:
    """The write side (forms, API, services) is another change's: set the columns directly.
    The balance is read from the database, not from the key's snapshot."""
    ApiKey.objects.filter(pk=relay.key.pk).update(**limits)
    return ApiKey.objects.select_related("team").get(pk=relay.key.pk)


def spend(key: ApiKey, amount: str, at: datetime | None = None, model: str = "gpt-4o") -> None:
    """A settled usage row, in the rollups too, as the relay's are written."""
    UsageEventFactory(
        key=key, charged_usd=Decimal(amount), created_at=at or timezone.now(), model=model
    )
    settle_usage()


def charged(relay) -> tuple:
    """What a request could have charged or recorded: usage rows, the key's spend, its running
    total (as the gate sees it), its reservations, the requests forwarded."""
    time.sleep(0.05)  # Recording happens after the response; give a stray one time to land.
    if settings.REDIS is not None:
        ingest_usage_stream()
    totals = ledger.spend_totals()
    held = (
        totals.client.hlen(keyspace.reservations(relay.key.team_id, relay.key.pk))
        if isinstance(totals, ledger.RedisTotals)
        else None
    )
    key = ApiKey.objects.get(pk=relay.key.pk)
    return (
        UsageEvent.objects.filter(key=key).count(),
        key.spent_usd,
        ledger.counter_spend(Account(key.pk, key.team_id, key.owner_id, "UTC").lifetime()),
        held,
        len(relay.primary.requests),
    )


# --- the subscription ----------------------------------------------------------------------


def test_subscription_without_a_limit_is_the_sentinel_through_the_openai_sdk(relay):
    client = relay.openai()
    before = charged(relay)

    answer = client.get("/dashboard/billing/subscription", cast_to=object)

    assert answer == {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": NO_LIMIT_USD,
        "hard_limit_usd": NO_LIMIT_USD,
        "system_hard_limit_usd": NO_LIMIT_USD,
        "access_until": 0,
    }
    assert NO_LIMIT_USD == 100_000_000
    assert charged(relay) == before


def test_subscription_is_the_tightest_limit_and_the_expiry(relay):
    expires_at = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    key = set_limits(
        relay,
        quota_limit_usd=Decimal("100"),
        daily_limit_usd=Decimal("5"),
        monthly_limit_usd=Decimal("40"),
        expires_at=expires_at,
    )
    spend(key, "1.25")

    response = relay.openai().get(SUBSCRIPTION.removeprefix("/v1"), cast_to=httpx2.Response)
    legacy = relay.call("GET", "/dashboard/billing/subscription")

    # The daily limit has the least left ($3.75): spent + left is the limit.
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": 5.0,
        "hard_limit_usd": 5.0,
        "system_hard_limit_usd": 5.0,
        "access_until": int(expires_at.timestamp()),
    }
    assert legacy.status == 200
    assert legacy.json() == response.json()


def test_an_overshot_limit_leaves_nothing_between_hard_limit_and_usage(relay):
    key = set_limits(relay, monthly_limit_usd=Decimal("2"))
    spend(key, "2.10")

    answer = relay.call("GET", SUBSCRIPTION).json()

    assert answer["hard_limit_usd"] == 2.1


def test_member_cap_or_team_budget_can_be_the_tightest(relay, team, member):
    key = set_limits(relay, monthly_limit_usd=Decimal("50"))
    Membership.objects.filter(team=team, user=member).update(monthly_limit_usd=Decimal("30"))
    team.monthly_budget_usd = Decimal("10")
    team.save(update_fields=["monthly_budget_usd"])
    spend(key, "1")

    assert relay.call("GET", SUBSCRIPTION).json()["hard_limit_usd"] == 10.0


# --- usage -----------------------------------------------------------------------------------


def test_usage_over_a_range_of_the_teams_days(relay, team):
    team.time_zone = CHICAGO
    team.save(update_fields=["time_zone"])
    key = relay.key
    spend(key, "1.25", datetime(2026, 12, 1, 5, 30, tzinfo=UTC))  # 30 Nov, 23:30 CST: before
    spend(key, "0.5", datetime(2026, 12, 1, 6, 0, tzinfo=UTC))  # 1 Dec, 00:00 CST
    spend(key, "0.25", datetime(2026, 12, 1, 7, 0, tzinfo=UTC), model="claude-sonnet-4-6")
    spend(key, "2", datetime(2026, 12, 3, 5, 59, tzinfo=UTC))  # 2 Dec, 23:59 CST
    spend(key, "9", datetime(2026, 12, 4, 6, 0, tzinfo=UTC))  # 4 Dec: end_date, not included
    before = charged(relay)

    answer = relay.openai().get(
        "/dashboard/billing/usage",
        cast_to=object,
        options={"params": {"start_date": "2026-12-01", "end_date": "2026-12-04"}},
    )

    assert answer == {
        "object": "list",
        "total_usage": 275.0,
        "daily_costs": [
            {
                "timestamp": datetime(2026, 12, 1, 6, 0, tzinfo=UTC).timestamp(),
                "line_items": [
                    {"name": "claude-sonnet-4-6", "cost": 25.0},
                    {"name": "gpt-4o", "cost": 50.0},
                ],
            },
            {
                "timestamp": datetime(2026, 12, 2, 6, 0, tzinfo=UTC).timestamp(),
                "line_items": [{"name": "gpt-4o", "cost": 200.0}],
            },
            {"timestamp": datetime(2026, 12, 3, 6, 0, tzinfo=UTC).timestamp(), "line_items": []},
        ],
    }
    legacy = relay.call("GET", "/dashboard/billing/usage?start_date=2026-12-01&end_date=2026-12-04")
    assert legacy.json() == answer
    assert charged(relay) == before


def test_usage_is_the_keys_own(relay, team, member, group):
    other = make_key(team=team, owner=member, group=group, name="other").key
    spend(relay.key, "1", datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    spend(other, "7", datetime(2026, 12, 2, 12, 0, tzinfo=UTC))

    answer = relay.call("GET", USAGE + "?start_date=2026-12-02&end_date=2026-12-03").json()

    assert answer["total_usage"] == 100.0
    assert answer["daily_costs"][0]["line_items"] == [{"name": "gpt-4o", "cost": 100.0}]


def test_usage_of_exactly_one_hundred_days_is_answered(relay):
    response = relay.call("GET", USAGE + "?start_date=2026-01-01&end_date=2026-04-11")

    assert response.status == 200
    assert len(response.json()["daily_costs"]) == 100
    assert response.json()["total_usage"] == 0.0


MISSING_DATE = "Missing {}: give start_date and end_date as YYYY-MM-DD (end_date is not included)."


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("", "missing_date", MISSING_DATE.format("start_date")),
        ("?start_date=2026-12-01", "missing_date", MISSING_DATE.format("end_date")),
        ("?start_date=&end_date=2026-12-01", "missing_date", MISSING_DATE.format("start_date")),
        (
            "?start_date=2026-13-01&end_date=2026-12-08",
            "invalid_date",
            "start_date must be a date as YYYY-MM-DD, not “2026-13-01”.",
        ),
        (
            "?start_date=20261201&end_date=2026-12-08",
            "invalid_date",
            "start_date must be a date as YYYY-MM-DD, not “20261201”.",
        ),
        (
            "?start_date=2026-12-01&end_date=tomorrow",
            "invalid_date",
            "end_date must be a date as YYYY-MM-DD, not “tomorrow”.",
        ),
        (
            "?start_date=2026-12-08&end_date=2026-12-08",
            "invalid_date_range",
            "end_date must be after start_date (end_date is not included).",
        ),
        (
            "?start_date=2026-12-08&end_date=2026-12-01",
            "invalid_date_range",
            "end_date must be after start_date (end_date is not included).",
        ),
        (
            "?start_date=2026-01-01&end_date=2026-04-12",
            "invalid_date_range",
            "The range from start_date to end_date is 101 days; "
            "at most 100 days can be asked for at once.",
        ),
    ],
)
@pytest.mark.parametrize("path", [USAGE, "/dashboard/billing/usage"])
def test_bad_dates_are_a_400_that_says_what_is_wrong(relay, path, query, code, message):
    before = charged(relay)

    response = relay.call("GET", path + query)

    assert_openai_error(response, 400, "invalid_request_error", code, message)
    assert charged(relay) == before


def test_bad_dates_through_the_openai_sdk(relay):
    with pytest.raises(openai.BadRequestError) as raised:
        relay.openai().get(
            "/dashboard/billing/usage", cast_to=object, options={"params": {"start_date": "x"}}
        )

    assert raised.value.status_code == 400
    assert raised.value.body == {
        "message": "start_date must be a date as YYYY-MM-DD, not “x”.",
        "type": "invalid_request_error",
        "code": "invalid_date",
    }


# --- the key itself ------------------------------------------------------------------------


def test_key_view_lists_every_limit_with_exact_money(relay, team, member):
    team.time_zone = CHICAGO
    team.save(update_fields=["time_zone"])
    expires_at = datetime(2027, 6, 30, 12, 0, tzinfo=UTC)
    key = set_limits(
        relay,
        quota_limit_usd=Decimal("100"),
        daily_limit_usd=Decimal("5"),
        max_concurrency=3,
        rate_limit="60/m",
        expires_at=expires_at,
    )
    Membership.objects.filter(team=team, user=member).update(monthly_limit_usd=Decimal("30"))
    spend(key, "1.23456789")
    now = timezone.now()
    day_ends = window(Period.DAY, CHICAGO, now)[1]
    month_ends = window(Period.MONTH, CHICAGO, now)[1]
    before = charged(relay)

    answer = relay.call("GET", KEY).json()

    assert answer == {
        "name": "claude-code-main",
        "prefix": key.prefix,
        "team": "Acme",
        "group": "Relay",
        "status": "enabled",
        "expires_at": "2027-06-30T12:00:00+00:00",
        "time_zone": CHICAGO,
        "max_concurrency": 3,
        "rate_limit": "60/m",
        "limits": [
            {
                "kind": "quota",
                "label": "Quota",
                "spent_usd": "1.23456789",
                "limit_usd": "100.00",
                "remaining_usd": "98.76543211",
                "resets_at": None,
            },
            {
                "kind": "daily",
                "label": "Daily limit",
                "spent_usd": "1.23456789",
                "limit_usd": "5.00",
                "remaining_usd": "3.76543211",
                "resets_at": day_ends.astimezone(ZoneInfo(CHICAGO)).isoformat(),
            },
            {
                "kind": "member_monthly",
                "label": "Your monthly cap in team Acme",
                "spent_usd": "1.23456789",
                "limit_usd": "30.00",
                "remaining_usd": "28.76543211",
                "resets_at": month_ends.astimezone(ZoneInfo(CHICAGO)).isoformat(),
            },
        ],
    }
    assert answer["limits"][1]["resets_at"].endswith(("T00:00:00-06:00", "T00:00:00-05:00"))
    assert charged(relay) == before


def test_key_view_of_a_key_without_limits(relay):
    answer = relay.call("GET", KEY).json()

    assert answer["limits"] == []
    assert (answer["expires_at"], answer["rate_limit"], answer["max_concurrency"]) == (
        None,
        None,
        0,
    )


# --- the key checks, as GET /v1/models has them ---------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_balance_endpoints_check_the_key_its_status_and_the_client_ip(relay, member, path):
    before = charged(relay)
    assert_openai_error(
        relay.call("GET", path, key=None), 401, "invalid_request_error", "missing_api_key", MISSING
    )
    assert_openai_error(
        relay.call("GET", path, key="sk-hc-" + "A" * 43),
        401,
        "invalid_request_error",
        "invalid_api_key",
        INVALID,
    )
    services.api_key_update(key=relay.key, actor=member, allowed_ips="203.0.113.7")
    assert_openai_error(
        relay.call("GET", path),
        403,
        "permission_error",
        "ip_not_allowed",
        ip_message("127.0.0.1"),
    )
    services.api_key_update(key=relay.key, actor=member, allowed_ips="")
    assert relay.call("GET", path).status == 200
    services.api_key_disable(key=relay.key, actor=member)
    assert_openai_error(relay.call("GET", path), 403, "permission_error", "key_disabled", DISABLED)
    assert charged(relay) == before


def test_a_disabled_key_is_refused_as_the_model_listing_refuses_it(relay, member):
    services.api_key_disable(key=relay.key, actor=member)

    listing = relay.call("GET", "/v1/models").json()["error"]
    balance = relay.call("GET", SUBSCRIPTION).json()["error"]

    assert balance["message"] == listing["message"] == DISABLED
    assert balance["type"] == listing["type"] == "permission_error"


def test_an_expired_key_is_refused(relay):
    set_limits(relay, expires_at=timezone.now() - timedelta(minutes=1))

    response = relay.call("GET", KEY)

    assert response.status == 403
    assert response.json()["error"]["code"] == "key_expired"


def test_a_key_with_a_rate_limit_used_up_still_reads_its_balance(relay, member):
    services.api_key_update(key=relay.key, actor=member, rate_limit="1/m")
    before = charged(relay)

    answers = [relay.call("GET", SUBSCRIPTION).status for _ in range(3)]

    assert answers == [200, 200, 200]
    assert charged(relay) == before


@pytest.mark.parametrize("path", [SUBSCRIPTION, "/dashboard/billing/usage", KEY])
def test_balance_endpoints_are_get_only(relay, path):
    response = relay.call("POST", path, {})

    assert_openai_error(
        response,
        405,
        "invalid_request_error",
        "method_not_allowed",
        f"POST is not allowed on {path}; use GET.",
    )
    assert response.headers["allow"] == "GET"


def test_an_unknown_billing_path_is_a_404_in_openais_shape(relay):
    response = relay.call("GET", "/dashboard/billing/credit_grants")

    assert response.status == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["message"].startswith(
        "Unknown endpoint /dashboard/billing/credit_grants."
    )


def test_refusals_of_a_known_key_are_counted_under_each_endpoint(relay, member):
    services.api_key_disable(key=relay.key, actor=member)

    for path in [SUBSCRIPTION, "/dashboard/billing/usage?start_date=x", KEY]:
        assert relay.call("GET", path).status == 403

    rows = refusal_rows(count=3, key=relay.key)
    assert sorted((row.endpoint, row.status_code, row.code, row.count) for row in rows) == [
        ("billing_subscription", 403, "key_disabled", 1),
        ("billing_usage", 403, "key_disabled", 1),
        ("key", 403, "key_disabled", 1),
    ]
    assert [ENDPOINT_LABELS[row.endpoint] for row in sorted(rows, key=lambda r: r.endpoint)] == [
        "Billing subscription",
        "Billing usage",
        "Key",
    ]
