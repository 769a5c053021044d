"""factory_boy factories for billing rows, and usage records as the relay would send them."""

from decimal import Decimal

import factory
from django.utils import timezone

from billing.ledger import UsageRecord
from billing.models import ModelPrice, RefusalCount, UsageEvent


class ModelPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice
        django_get_or_create = ("model",)

    model = "claude-sonnet-4-5"
    input_per_mtok = Decimal("3")
    output_per_mtok = Decimal("15")
    cache_write_per_mtok = Decimal("3.75")
    cache_write_1h_per_mtok = Decimal("6")
    cache_read_per_mtok = Decimal("0.30")


class RefusalCountFactory(factory.django.DjangoModelFactory):
    """One minute's count of one kind of refusal of `key` (pass one), this minute."""

    class Meta:
        model = RefusalCount

    team = factory.LazyAttribute(lambda row: row.key.team)
    minute = factory.LazyFunction(lambda: timezone.now().replace(second=0, microsecond=0))
    status_code = 403
    code = "key_disabled"
    endpoint = "messages"
    count = 1


class UsageEventFactory(factory.django.DjangoModelFactory):
    """An unsettled event of `key` (pass one); team and group follow the key."""

    class Meta:
        model = UsageEvent

    team = factory.LazyAttribute(lambda event: event.key.team)
    group = factory.LazyAttribute(lambda event: event.key.group)
    model = "claude-sonnet-4-5"
    input_tokens = 1000
    output_tokens = 200
    cost_usd = Decimal("0.006")
    charged_usd = Decimal("0.006")
    status_code = 200
    created_at = factory.LazyFunction(timezone.now)


def usage_record(key, *, charged: str, request_id: str = "req_ledger_test_1", **fields):
    """One request's usage of `key` as the relay records it (cost = charge unless given)."""
    values = {
        "key_id": key.pk,
        "team_id": key.team_id,
        "group_id": key.group_id,
        "model": "claude-sonnet-4-5",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
        "cost_usd": Decimal(charged),
        "charged_usd": Decimal(charged),
        "status_code": 200,
        "latency_ms": 12,
        "client_ip": "203.0.113.7",
        "session_id": "session-1",
        "request_id": request_id,
        "created_at": timezone.now(),
    }
    return UsageRecord(**{**values, **fields})
