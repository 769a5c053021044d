"""A key's state as the relay needs it: one JSON snapshot per key digest in the shared cache.

The snapshot holds everything the gate and the forwarder need (key settings, group, team
availability, routed channels), so a warm request makes one cache read and no database query.
Channel URLs and credentials stay out of it: each worker keeps them in memory (proxy.channels).
It is stored under `core.keyspace.snapshot(digest)`, which is exactly what every key, group
and channel service deletes on commit (keys.cache): the next request in any worker process
finds no snapshot and builds a fresh one from the database.
"""

import ipaddress
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import lru_cache

from billing.ledger import usd_to_units
from billing.windows import Account
from keys.models import ApiKey, Membership
from proxy.models import Channel, Route

# How long a process remembers that a digest belongs to no key (proxy.snapshots), so repeats of
# a made-up key cost no database query.
UNKNOWN_KEY_SECONDS = 60
# Snapshots are dropped by the services on every change (keys.cache). As a safety net, a
# snapshot older than KEY_STATE_REFRESH_SECONDS is rebuilt from the database in the background
# by the next request that reads it (which goes on with it meanwhile): a drop that was lost (the
# cache unreachable at that moment, a raw SQL update) heals within seconds. It stays in the
# cache for KEY_STATE_SECONDS, so a database outage does not stop warm keys: a snapshot still in
# the cache was not dropped, so no change has been saved since it was built.
KEY_STATE_REFRESH_SECONDS = 15
KEY_STATE_SECONDS = 3600

UNKNOWN_MARKER = b'{"unknown":true}'

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ChannelState:
    """A routed channel as the snapshot names it. Its URL and credential are not in the
    snapshot (see proxy.channels)."""

    id: int
    name: str
    provider: str
    timeout_seconds: int
    version: int


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def channel_version(channel: Channel) -> int:
    """When the channel was last saved, in whole microseconds (exact, unlike a float)."""
    return (channel.updated_at - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class KeyState:
    key_id: int
    team_id: int
    group_id: int
    group_name: str
    group_usable: bool
    enabled: bool
    expires_at: datetime | None
    allowed_networks: tuple[IPNetwork, ...]
    quota_limit_units: int
    quota_limit_usd: str
    rate_limit: str
    multiplier: Decimal
    model_patterns: tuple[str, ...]
    channels: tuple[ChannelState, ...]
    # When to rebuild it (seconds since the epoch): see KEY_STATE_REFRESH_SECONDS.
    refresh_at: float
    # The key was disabled by the expiry task (ApiKey.expired_and_disabled): its refusal says
    # how to bring it back.
    disabled_by_expiry: bool = False
    # Spend controls (billing.windows; 0 = none): the key's windows, its owner's monthly cap in
    # the team, the team's monthly budget, in spend units, and the key's concurrency.
    owner_id: int = 0
    team_name: str = ""
    time_zone: str = "UTC"
    daily_limit_units: int = 0
    weekly_limit_units: int = 0
    monthly_limit_units: int = 0
    member_monthly_limit_units: int = 0
    team_monthly_budget_units: int = 0
    max_concurrency: int = 0

    @property
    def account(self) -> Account:
        return Account(self.key_id, self.team_id, self.owner_id, self.time_zone)

    @property
    def admits(self) -> bool:
        """Whether a request of this key is admitted against any limit in the store (money,
        concurrency, rate) rather than let through on the snapshot alone."""
        return bool(
            self.quota_limit_units
            or self.daily_limit_units
            or self.weekly_limit_units
            or self.monthly_limit_units
            or self.member_monthly_limit_units
            or self.team_monthly_budget_units
            or self.max_concurrency
            or self.rate_limit
        )

    def allows_model(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.model_patterns)

    def allows_ip(self, address: str) -> bool:
        return not self.allowed_networks or _allowed(self.allowed_networks, address)


@lru_cache(maxsize=4096)
def _allowed(networks: tuple[IPNetwork, ...], address: str) -> bool:
    """Whether the address is in one of the networks: decided once per restriction and client
    (it showed in the relay's profile, decided anew every request)."""
    ip = client_address(address)
    return ip is not None and any(ip in network for network in networks)


@lru_cache(maxsize=4096)
def client_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address as the IP restriction compares it (an IPv4-mapped IPv6 address as
    its IPv4 address), None if it is not one; parsed once per address (it showed in the
    relay's profile, once per request for a key with an IP restriction)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


@lru_cache(maxsize=4096)
def parse_key_state(raw: bytes) -> KeyState | None:
    """Decode a snapshot; memoised on the bytes, so a warm key is parsed once per process."""
    data = json.loads(raw)
    if data.get("unknown"):
        return None
    return KeyState(
        key_id=data["key_id"],
        team_id=data["team_id"],
        group_id=data["group_id"],
        group_name=data["group_name"],
        group_usable=data["group_usable"],
        enabled=data["enabled"],
        expires_at=datetime.fromisoformat(data["expires_at"]) if data["expires_at"] else None,
        # Snapshots written before it existed give the plain "disabled" refusal.
        disabled_by_expiry=data.get("disabled_by_expiry", False),
        allowed_networks=tuple(
            ipaddress.ip_network(entry, strict=False) for entry in data["allowed_ips"]
        ),
        quota_limit_units=data["quota_limit_units"],
        quota_limit_usd=data["quota_limit_usd"],
        rate_limit=data["rate_limit"],
        multiplier=Decimal(data["multiplier"]),
        model_patterns=tuple(data["model_patterns"]),
        channels=tuple(
            ChannelState(
                id=channel["id"],
                name=channel["name"],
                provider=channel["provider"],
                timeout_seconds=channel["timeout_seconds"],
                # Snapshots written before channel versions existed (until they expire).
                version=channel.get("version", 0),
            )
            for channel in data["channels"]
        ),
        # Snapshots written before refresh times existed are rebuilt at once.
        refresh_at=data.get("refresh_at", 0),
        **{name: data[name] for name in _SPEND_CONTROLS if name in data},
    )


# The spend controls' snapshot fields, named as KeyState's (a snapshot written before them has
# none: the defaults, no limit, until it is rebuilt).
_SPEND_CONTROLS = (
    "owner_id",
    "team_name",
    "time_zone",
    "daily_limit_units",
    "weekly_limit_units",
    "monthly_limit_units",
    "member_monthly_limit_units",
    "team_monthly_budget_units",
    "max_concurrency",
)


def build_key_state(digest: str) -> bytes:
    """Read a key's state from the database (sync: the relay calls it in a thread on a miss)."""
    key = ApiKey.objects.select_related("group", "team").filter(digest=digest).first()
    if key is None:
        return UNKNOWN_MARKER
    group = key.group
    routes = (
        Route.objects.filter(group=group, channel__is_active=True)
        .select_related("channel")
        .order_by("priority", "id")
    )
    channels = [
        {
            "id": route.channel.pk,
            "name": route.channel.name,
            "provider": route.channel.provider,
            "timeout_seconds": route.channel.timeout_seconds,
            "version": channel_version(route.channel),
        }
        for route in routes
    ]
    team = key.team
    usable = group.is_active and team.available_groups().filter(pk=group.pk).exists()
    member_cap = (
        Membership.objects.filter(team=team, user_id=key.owner_id)
        .values_list("monthly_limit_usd", flat=True)
        .first()
    )
    snapshot = {
        "key_id": key.pk,
        "team_id": key.team_id,
        "group_id": group.pk,
        "group_name": group.name,
        "group_usable": usable,
        "enabled": key.status == ApiKey.Status.ENABLED,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "disabled_by_expiry": key.expired_and_disabled,
        "allowed_ips": list(key.allowed_ips),
        "quota_limit_units": usd_to_units(key.quota_limit_usd),
        "quota_limit_usd": f"{key.quota_limit_usd:.2f}",
        "rate_limit": key.rate_limit,
        "multiplier": str(group.multiplier),
        "model_patterns": list(group.models),
        "channels": channels,
        "refresh_at": round(time.time() + KEY_STATE_REFRESH_SECONDS, 3),
        "owner_id": key.owner_id,
        "team_name": team.name,
        "time_zone": team.time_zone,
        "daily_limit_units": usd_to_units(key.daily_limit_usd),
        "weekly_limit_units": usd_to_units(key.weekly_limit_usd),
        "monthly_limit_units": usd_to_units(key.monthly_limit_usd),
        "member_monthly_limit_units": usd_to_units(member_cap or 0),
        "team_monthly_budget_units": usd_to_units(team.monthly_budget_usd),
        "max_concurrency": key.max_concurrency,
    }
    return json.dumps(snapshot, separators=(",", ":")).encode()


def provider_matches(channel: ChannelState, provider: str) -> bool:
    return channel.provider in (provider, Channel.Provider.MOCK)
