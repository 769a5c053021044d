"""The spend-spike guard: a team may have a key that spends more than `spike_limit_usd` in ten
minutes turned off (NotificationSettings). Checked where usage is settled, with the
thresholds (notify.thresholds), never on the relay's path: a spike is stopped seconds after
the usage that shows it is written. The key is disabled by keys' service, which records the
system (no actor) and the reason ("key.spend_spike"); `key.disabled` is then told from that
audit row (notify.detectors), like every other disabling.
"""

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from billing.models import UsageEvent
from keys import services as keys_services
from keys.models import ApiKey

from .selectors import notification_settings_for

logger = logging.getLogger(__name__)

SPIKE_WINDOW = timedelta(minutes=10)


def spike_guard(*, keys: Iterable[ApiKey], latest: Mapping[int, datetime]) -> int:
    """Disable each enabled key whose charged spend in the ten minutes up to its latest settled
    event (`latest`) exceeds its team's spike limit; return how many were disabled."""
    now = timezone.now()
    limits: dict[int, Decimal] = {}
    disabled = 0
    for key in keys:
        if key.status != ApiKey.Status.ENABLED:
            continue
        if key.team_id not in limits:
            limits[key.team_id] = notification_settings_for(key.team).spike_limit_usd
        limit = limits[key.team_id]
        if limit <= 0:
            continue
        until = latest.get(key.pk, now)
        spent = UsageEvent.objects.filter(
            key_id=key.pk, created_at__gt=until - SPIKE_WINDOW, created_at__lte=until
        ).aggregate(total=Sum("charged_usd"))["total"] or Decimal(0)
        if spent > limit and keys_services.api_key_disable_for_spend_spike(key=key):
            logger.warning(
                "Key %s disabled: spent %s USD in %s, over its team's spike limit of %s USD",
                key.pk,
                spent,
                SPIKE_WINDOW,
                limit,
            )
            disabled += 1
    return disabled
