"""factory_boy factories for billing rows, as the relay would record them."""

from decimal import Decimal

import factory
from django.utils import timezone

from billing.models import ModelPrice, UsageEvent


class ModelPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice
        django_get_or_create = ("model",)

    model = "claude-sonnet-4-5"
    input_per_mtok = Decimal("3")
    output_per_mtok = Decimal("15")
    cache_write_per_mtok = Decimal("3.75")
    cache_read_per_mtok = Decimal("0.30")


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
