from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from billing.models import ModelPrice
from billing.services import model_price_save
from keys.models import ApiKey, Group, Membership, Team
from keys.services import (
    IssuedKey,
    api_key_create,
    api_key_rotate,
    group_save,
    membership_add,
    membership_set_role,
    team_save,
)
from proxy.models import Channel
from proxy.services import channel_upsert

# Fixed so the quickstart can print them and the README can document them. They are set only
# when seed_demo creates the user; an existing user's password is never touched.
DEMO_USERS = (
    # username, password, team role (None: not in the team), superuser
    ("admin", "demo-admin-pass", None, True),
    ("lead", "demo-lead-pass", Membership.Role.LEAD, False),
    ("member", "demo-member-pass", Membership.Role.MEMBER, False),
)
DEMO_TEAM_SLUG = "demo"
DEMO_TEAM_NAME = "Demo"
DEMO_CHANNEL = "mock"
DEMO_KEY_NAME = "demo key"
DEMO_KEY_OWNER = "lead"


@dataclass(frozen=True)
class DemoGroup:
    name: str
    description: str
    multiplier: Decimal
    models: tuple[str, ...]


DEMO_GROUPS = (
    DemoGroup("CC Official Channel", "Claude models at list price.", Decimal("1.0"), ("claude-*",)),
    DemoGroup(
        "CC Kiro Channel", "Claude models at 0.6 x list price.", Decimal("0.6"), ("claude-*",)
    ),
    # o[0-9]* covers OpenAI's reasoning models (o1, o3-mini, o4-mini) without matching
    # arbitrary names that merely start with "o".
    DemoGroup(
        "gpt 0.25 CNY / $1 quota",
        "OpenAI models at 0.25 x list price.",
        Decimal("0.25"),
        ("gpt-*", "o[0-9]*"),
    ),
)
DEMO_KEY_GROUP = "CC Official Channel"

# USD per million tokens: input, output, cache write, cache read (vendors' list prices; the
# 1-hour cache write price follows from these: _price_fields).
# OpenAI does not charge for writing its prompt cache, hence 0. Claude Code sends the dated
# model ids, so those are priced as well as the aliases.
_OPUS_4_1 = ("15", "75", "18.75", "1.50")
_OPUS_4_5 = ("5", "25", "6.25", "0.50")
_SONNET_4_5 = ("3", "15", "3.75", "0.30")
_HAIKU_4_5 = ("1", "5", "1.25", "0.10")
_HAIKU_3_5 = ("0.80", "4", "1", "0.08")
DEMO_PRICES = {
    "claude-opus-4-6": _OPUS_4_5,
    "claude-sonnet-4-6": _SONNET_4_5,
    "claude-opus-4-5": _OPUS_4_5,
    "claude-opus-4-5-20251101": _OPUS_4_5,
    "claude-opus-4-1": _OPUS_4_1,
    "claude-opus-4-1-20250805": _OPUS_4_1,
    "claude-sonnet-4-5": _SONNET_4_5,
    "claude-sonnet-4-5-20250929": _SONNET_4_5,
    "claude-haiku-4-5": _HAIKU_4_5,
    "claude-haiku-4-5-20251001": _HAIKU_4_5,
    "claude-3-5-haiku-latest": _HAIKU_3_5,
    "claude-3-5-haiku-20241022": _HAIKU_3_5,
    "gpt-4o": ("2.50", "10", "0", "1.25"),
    "gpt-4o-mini": ("0.15", "0.60", "0", "0.075"),
    "gpt-4.1": ("2", "8", "0", "0.50"),
    "o3-mini": ("1.10", "4.40", "0", "0.55"),
}


class Command(BaseCommand):
    help = (
        "Seed a demo: users admin / demo-admin-pass (superuser), lead / demo-lead-pass and "
        "member / demo-member-pass in team 'demo', three groups, model prices, a 'mock' channel "
        "routed to every demo group, and a fresh key for 'lead' printed once with the shell "
        "lines to use it. Safe to run again: it updates the same rows, never resets an existing "
        "user's password, and keeps one demo key: created by the first run, rotated by each later "
        "one, so every run prints a fresh secret (none with --no-key). Refuses to run with "
        "DEBUG off unless given --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-key",
            action="store_true",
            help="Seed everything but neither create nor rotate the demo key.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even though DEBUG is off (a deployment that is only a demo).",
        )

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG and not options["force"]:
            # The demo superuser's password is printed in the README: on a real deployment
            # this would be an open door.
            raise CommandError(
                "DEBUG is off, so this looks like a real deployment, and seed_demo would create "
                "the superuser admin with the published password demo-admin-pass. Nothing was "
                "written. Pass --force if this deployment is only a demo."
            )
        # Everything printed is worked out before the key is issued, so a failure here cannot
        # leave a key whose plaintext nobody saw.
        base_url = settings.PUBLIC_BASE_URL
        admin_url = base_url + reverse("admin:index")
        # Each step is a service's own transaction (one action, one audit row) and finds what
        # an earlier run made, so a run stopped part-way is completed by running it again.
        logins = _seed_users_and_team()
        groups = _seed_groups()
        for model, prices in DEMO_PRICES.items():
            price = ModelPrice.objects.filter(model=model).first() or ModelPrice(model=model)
            for field, value in _price_fields(model, prices).items():
                setattr(price, field, value)
            model_price_save(price=price, actor=None)
        channel = _seed_channel(groups)
        issued, rotated = (None, False) if options["no_key"] else _issue_key(groups)

        self.stdout.write(f"Logins (portal {base_url}/, staff admin {admin_url}):")
        for line in logins:
            self.stdout.write(f"  {line}")
        self.stdout.write(
            f"Team {DEMO_TEAM_SLUG}: groups {', '.join(group.name for group in groups)}; "
            f"{len(DEMO_PRICES)} model prices; channel {channel.name} routed to every demo group."
        )
        if issued is None:
            return
        key = issued.plaintext
        shown_once = (
            ": its previous secret no longer works. The new one is shown only this once"
            if rotated
            else ". It is shown only this once"
        )
        self.stdout.write(
            f"\n{'Rotated' if rotated else 'New'} key “{issued.key.name}” for "
            f"{issued.key.owner.get_username()} in group {issued.key.group.name}{shown_once}:\n\n"
            "# Windows PowerShell\n"
            f'$env:ANTHROPIC_AUTH_TOKEN="{key}"\n'
            f'$env:ANTHROPIC_BASE_URL="{base_url}"\n'
            "# macOS/Linux\n"
            f'export ANTHROPIC_AUTH_TOKEN="{key}"\n'
            f'export ANTHROPIC_BASE_URL="{base_url}"'
        )


def _seed_users_and_team() -> list[str]:
    User = get_user_model()
    team = Team.objects.filter(slug=DEMO_TEAM_SLUG).first() or team_save(
        team=Team(slug=DEMO_TEAM_SLUG, name=DEMO_TEAM_NAME), actor=None
    )
    logins = []
    # Leads are settled before members so that demoting a user never leaves the team leadless.
    for username, password, role, superuser in DEMO_USERS:
        user = User.objects.filter(username=username).first()
        if user is None:
            make = User.objects.create_superuser if superuser else User.objects.create_user
            user = make(username=username, email=f"{username}@example.com", password=password)
            what = "superuser" if superuser else f"{role} of team {DEMO_TEAM_SLUG}"
            logins.append(f"created {username} / {password} ({what})")
        else:
            logins.append(f"{username} already existed (password unchanged)")
        if role is None:
            continue
        membership = Membership.objects.filter(team=team, user=user).first()
        if membership is None:
            membership_add(team=team, user=user, role=role, actor=None)
        else:
            membership_set_role(membership=membership, role=role, actor=None)
    return logins


def _seed_groups() -> list[Group]:
    groups = []
    for spec in DEMO_GROUPS:
        group = Group.objects.filter(name=spec.name).first() or Group(name=spec.name)
        group.description = spec.description
        group.multiplier = spec.multiplier
        group.models = list(spec.models)
        group.is_active = True
        groups.append(group_save(group=group, actor=None))
    return groups


def _price_fields(model: str, prices: tuple[str, str, str, str]) -> dict[str, Decimal]:
    input_price, output_price, cache_write, cache_read = (Decimal(price) for price in prices)
    return {
        "input_per_mtok": input_price,
        "output_per_mtok": output_price,
        "cache_write_per_mtok": cache_write,
        # Anthropic's 1-hour cache writes cost twice the input; OpenAI's cost nothing.
        "cache_write_1h_per_mtok": input_price * 2 if model.startswith("claude") else cache_write,
        "cache_read_per_mtok": cache_read,
    }


def _seed_channel(groups: list[Group]) -> Channel:
    # Keep any other groups an operator routed to the mock channel by hand.
    already_routed = Group.objects.filter(routes__channel__name=DEMO_CHANNEL).exclude(
        pk__in=[group.pk for group in groups]
    )
    channel, _ = channel_upsert(
        name=DEMO_CHANNEL, provider=Channel.Provider.MOCK, groups=[*groups, *already_routed]
    )
    return channel


def _issue_key(groups: list[Group]) -> tuple[IssuedKey, bool]:
    """The demo key with a fresh secret, and whether it was rotated rather than created.

    The only way to print a working secret again is a new one, since only digests are stored;
    rotating the existing key gives it without piling up a "demo key" per run. (A database
    seeded before this has several: the newest is rotated.)"""
    team = Team.objects.get(slug=DEMO_TEAM_SLUG)
    lead = get_user_model().objects.get(username=DEMO_KEY_OWNER)
    existing = (
        ApiKey.objects.filter(team=team, owner=lead, name=DEMO_KEY_NAME).order_by("-pk").first()
    )
    if existing is not None:
        return api_key_rotate(key=existing, actor=None), True
    group = next(group for group in groups if group.name == DEMO_KEY_GROUP)
    return api_key_create(team=team, owner=lead, name=DEMO_KEY_NAME, group=group, actor=None), False
