"""What each limit in force on a key has left, as the relay's admission sees it.

A key may be held to its lifetime quota, its daily, weekly and monthly limits, its owner's
monthly cap in the team and the team's monthly budget (billing.windows). Each limit's spend is
its running total (billing.ledger.counter_spend): what the gate admits against, charges not yet
written to the database included. A total that is not in the cache is rebuilt from the database
(one query) and stored, as the gate would on its next request.

Pure reads: the key's portal pages and the relay's balance endpoints (proxy.balance) show these.
Callers pass keys the actor may already see (keys.selectors), with `team` (and `owner`, for a
lead's labels) loaded.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from keys.models import ApiKey, Membership

from .ledger import counter_spend, units_to_usd
from .pricing import MONEY_PLACES
from .windows import Account, Counter, LimitKind

__all__ = ["LimitKind", "LimitStatus", "key_limits", "key_limits_by_key", "tightest"]


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """One limit in force on a key: what has been spent against it and what is left."""

    kind: LimitKind
    label: str
    spent_usd: Decimal
    limit_usd: Decimal
    # Never negative: a limit overshot by the last request (at most one request's charge) has
    # nothing left.
    remaining_usd: Decimal
    # When the window starts afresh (aware, UTC); None for the lifetime quota, which never does.
    resets_at: datetime | None
    # How full the bar is: 0-100, spent / limit rounded down.
    percent: int


_KEY_WINDOWS = (
    (LimitKind.DAILY, "daily_limit_usd", gettext_noop("Daily limit")),
    (LimitKind.WEEKLY, "weekly_limit_usd", gettext_noop("Weekly limit")),
    (LimitKind.MONTHLY, "monthly_limit_usd", gettext_noop("Monthly limit")),
)


def key_limits(
    key: ApiKey, *, now: datetime | None = None, viewer: User | None = None
) -> list[LimitStatus]:
    """Every limit in force on `key` at `now` (default: now), in this order: quota, daily,
    weekly, monthly, the owner's monthly cap in the team, the team's monthly budget. Empty
    when none is. `viewer` words the owner's cap: "Your monthly cap in team <team>" for the owner
    (and for None: the relay answers the key's holder), "<owner>'s monthly cap" for anyone
    else (a lead)."""
    return key_limits_by_key([key], now=now, viewer=viewer)[key.pk]


def key_limits_by_key(
    keys: Iterable[ApiKey], *, now: datetime | None = None, viewer: User | None = None
) -> dict[int, list[LimitStatus]]:
    """key_limits of each key, by key id, for a page of keys: one query for the owners' caps,
    and each running total read once however many keys share it (a team's budget, a member's
    cap). Counter reads: one per key limit in force (quota, day, week, month) plus one per
    distinct capped owner and one per team with a budget."""
    keys = list(keys)
    now = now or timezone.now()
    caps = _member_caps(keys)
    spends: dict[str, int] = {}

    def spent(counter: Counter) -> Decimal:
        if counter.name not in spends:
            spends[counter.name] = counter_spend(counter)
        return units_to_usd(spends[counter.name]).quantize(MONEY_PLACES)

    limits = {}
    for key in keys:
        team = key.team
        account = Account(key.pk, key.team_id, key.owner_id, team.time_zone)
        found = []
        if key.quota_limit_usd > 0:
            found.append(
                _status(
                    LimitKind.QUOTA,
                    gettext("Quota"),
                    spent(account.lifetime()),
                    key.quota_limit_usd,
                )
            )
        for kind, field, label in _KEY_WINDOWS:
            limit = getattr(key, field)
            if limit > 0:
                counter = account.counter(kind, now)
                found.append(_status(kind, gettext(label), spent(counter), limit, counter.end))
        cap = caps.get((key.team_id, key.owner_id), Decimal(0))
        if cap > 0:
            counter = account.member_month(now)
            if viewer is None or viewer.pk == key.owner_id:
                label = gettext("Your monthly cap in team %(team)s") % {"team": team.name}
            else:
                label = gettext("%(owner)s's monthly cap") % {"owner": key.owner.get_username()}
            found.append(_status(LimitKind.MEMBER_MONTHLY, label, spent(counter), cap, counter.end))
        if team.monthly_budget_usd > 0:
            counter = account.team_month(now)
            found.append(
                _status(
                    LimitKind.TEAM_MONTHLY,
                    gettext("Team %(team)s's monthly budget") % {"team": team.name},
                    spent(counter),
                    team.monthly_budget_usd,
                    counter.end,
                )
            )
        limits[key.pk] = found
    return limits


def tightest(limits: Sequence[LimitStatus]) -> LimitStatus | None:
    """The limit that stops the key first: the least money left. Every request's charge counts
    against every limit in force alike, so the one with the least left is the one the relay
    refuses on first (a fuller bar of a larger limit may still have more money in it). Of limits
    with as little left, the one that resets last (the lifetime quota never does): the longest
    the key would wait. None when no limit is in force."""
    if not limits:
        return None
    return min(
        limits,
        key=lambda limit: (
            limit.remaining_usd,
            limit.resets_at is not None,
            -(limit.resets_at.timestamp() if limit.resets_at else 0),
        ),
    )


def _status(
    kind: LimitKind,
    label: str,
    spent: Decimal,
    limit: Decimal,
    resets_at: datetime | None = None,
) -> LimitStatus:
    return LimitStatus(
        kind=kind,
        label=label,
        spent_usd=spent,
        limit_usd=limit,
        remaining_usd=max(limit - spent, Decimal(0)).quantize(MONEY_PLACES),
        resets_at=resets_at,
        percent=min(100, int(spent * 100 / limit)),
    )


def _member_caps(keys: Sequence[ApiKey]) -> dict[tuple[int, int], Decimal]:
    """The monthly caps (> 0) of the keys' owners in the keys' teams, in one query. An owner
    who has left the team has no cap there (as the relay's key snapshot reads it)."""
    if not keys:
        return {}
    rows = Membership.objects.filter(
        team_id__in={key.team_id for key in keys},
        user_id__in={key.owner_id for key in keys},
        monthly_limit_usd__gt=0,
    ).values_list("team_id", "user_id", "monthly_limit_usd")
    return {(team_id, user_id): cap for team_id, user_id, cap in rows}
