"""The two counters the relay and settlement keep on a key: settled spend and last use.

They are bookkeeping, not settings a person changed, so they write no audit row and leave the
relay's cached snapshot alone (it holds neither).
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import F, Q

from ..models import ApiKey


def api_key_add_spend(*, key_id: int, amount: Decimal) -> None:
    """Add settled charges. An F() expression, so concurrent settlements never lose one."""
    ApiKey.objects.filter(pk=key_id).update(spent_usd=F("spent_usd") + amount)


def api_key_mark_used(*, key_id: int, used_at: datetime, precision: timedelta) -> None:
    """Move `last_used_at` forward, unless it is already within `precision` of `used_at`; the
    filter makes the UPDATE a no-op when another process refreshed it recently."""
    ApiKey.objects.filter(pk=key_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=used_at - precision)
    ).update(last_used_at=used_at)
