"""bench/environment.py: the benchmark's keys, the headline one with every restriction on."""

from argparse import Namespace
from decimal import Decimal

import pytest
from django.utils import timezone

from bench.environment import (
    HEADLINE_LIMIT_USD,
    HEADLINE_RATE_LIMIT,
    describe_restrictions,
    headline_max_concurrency,
    make_keys,
)
from keys.models import ApiKey, AuditEvent, Membership, Team
from keys.validators import MAX_CONCURRENCY
from proxy.keystate import build_key_state, parse_key_state

from ..factories import GroupFactory, MembershipFactory, TeamFactory


@pytest.fixture
def bench_keys(db):
    team = TeamFactory(name="Benchmark", slug="bench")
    unrestricted_team = TeamFactory(name="Benchmark, unrestricted", slug="bench-unrestricted")
    owner = MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="bench").user
    MembershipFactory(team=unrestricted_team, user=owner, role=Membership.Role.LEAD)
    group = GroupFactory(name="Benchmark", models=["claude-*"])
    return make_keys(
        team=team,
        unrestricted_team=unrestricted_team,
        owner=owner,
        group=group,
        quota_usd="100000",
        max_concurrency=4096,
    )


def key_state(key_id: int):
    return parse_key_state(build_key_state(ApiKey.objects.get(pk=key_id).digest))


def test_the_headline_key_carries_every_restriction_and_the_relay_sees_each(bench_keys):
    key = ApiKey.objects.get(pk=bench_keys.key_id)
    limit = Decimal(HEADLINE_LIMIT_USD)

    assert key.allowed_ips == ["127.0.0.1"]
    assert (key.quota_limit_usd, key.rate_limit, key.max_concurrency) == (
        limit,
        HEADLINE_RATE_LIMIT,
        4096,
    )
    assert (key.daily_limit_usd, key.weekly_limit_usd, key.monthly_limit_usd) == (
        limit,
        limit,
        limit,
    )
    assert key.expires_at > timezone.now()
    assert Team.objects.get(slug="bench").monthly_budget_usd == limit
    assert Membership.objects.get(team=key.team, user=key.owner).monthly_limit_usd == limit
    # What the relay reads of it: every limit on, so every request goes through admission.
    state = key_state(key.pk)
    assert state.admits
    assert all(
        getattr(state, name)
        for name in (
            "allowed_networks",
            "expires_at",
            "quota_limit_units",
            "daily_limit_units",
            "weekly_limit_units",
            "monthly_limit_units",
            "member_monthly_limit_units",
            "team_monthly_budget_units",
            "max_concurrency",
            "rate_limit",
        )
    )
    assert "off" not in bench_keys.restrictions.values()
    assert bench_keys.restrictions["rate limit"] == "100000/s"
    assert bench_keys.restrictions["team's monthly budget"] == "$100,000.00"


def test_the_unrestricted_key_carries_none_in_a_team_without_budget(bench_keys):
    key = ApiKey.objects.get(pk=bench_keys.unrestricted_key_id)

    assert key.team.slug == "bench-unrestricted"
    assert key.team.monthly_budget_usd == 0
    assert Membership.objects.get(team=key.team, user=key.owner).monthly_limit_usd == 0
    state = key_state(key.pk)
    # Let through on the snapshot alone: no admission in the store.
    assert not state.admits
    assert (state.allowed_networks, state.expires_at) == ((), None)
    described = describe_restrictions(key, member_cap=0, team_budget=key.team.monthly_budget_usd)
    assert set(described.values()) == {"off"}


def test_the_refused_key_is_spent_and_only_the_two_measured_keys_count_as_usage(bench_keys):
    refused = ApiKey.objects.get(pk=bench_keys.refused_key_id)

    assert (refused.quota_limit_usd, refused.spent_usd) == (Decimal("1"), Decimal("1"))
    assert bench_keys.key_ids == [bench_keys.key_id, bench_keys.unrestricted_key_id]
    # Created through the service: one audit row per key, none for the direct row updates.
    assert AuditEvent.objects.filter(action=AuditEvent.Action.KEY_CREATED).count() == 3


def test_a_lifetime_quota_of_zero_leaves_the_other_limits_on(db):
    team = TeamFactory(slug="bench")
    unrestricted_team = TeamFactory(slug="bench-unrestricted")
    owner = MembershipFactory(team=team).user
    MembershipFactory(team=unrestricted_team, user=owner)

    data = make_keys(
        team=team,
        unrestricted_team=unrestricted_team,
        owner=owner,
        group=GroupFactory(),
        quota_usd="0",
        max_concurrency=10,
    )

    assert data.restrictions["lifetime quota"] == "off"
    assert data.restrictions["daily limit"] == "$100,000.00"
    assert key_state(data.key_id).admits


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        (([16, 64, 256], [16, 64, 256, 512, 1024, 2048], [64, 128, 256, 512, 1024]), 4096),
        (([16], [16, 32], [8]), 64),
        (([16], [16, 9000], [8]), MAX_CONCURRENCY),
    ],
)
def test_max_concurrency_is_above_every_level_the_benchmark_opens(levels, expected):
    options = Namespace(levels=levels[0], search_levels=levels[1], stream_levels=levels[2])

    assert headline_max_concurrency(options) == expected
