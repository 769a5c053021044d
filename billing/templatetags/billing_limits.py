"""The spend bars of a key's limits, for the key pages (billing.limits), so `keys` never imports
`billing`. Callers pass keys the page has already resolved through keys.selectors."""

from collections.abc import Iterable

from django import template

from billing.limits import LimitStatus, key_limits, key_limits_by_key, tightest
from keys.models import ApiKey

register = template.Library()


@register.inclusion_tag("billing/_key_limits.html", takes_context=True)
def key_limit_bars(context: template.Context, key: ApiKey) -> dict:
    """One bar per limit in force on the key, each with what is left and when it resets in the
    team's time zone; "No limit" when none is."""
    return {
        "key": key,
        "limits": key_limits(key, viewer=context["request"].user),
        "time_zone": key.team.time_zone,
    }


@register.simple_tag(takes_context=True)
def with_tightest_limit(
    context: template.Context, keys: Iterable[ApiKey]
) -> list[tuple[ApiKey, LimitStatus | None]]:
    """Each key with the limit that stops it first (billing.limits.tightest), or None, for a
    list's spend column. Reads each running total once (key_limits_by_key): at most four per
    key, plus one per capped owner and one for the team's budget."""
    keys = list(keys)
    limits = key_limits_by_key(keys, viewer=context["request"].user)
    return [(key, tightest(limits[key.pk])) for key in keys]
