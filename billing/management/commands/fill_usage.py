"""Fill a scratch PostgreSQL database with usage for measure_usage: teams, members, keys, and
a million usage events with their daily rollups, written with COPY.

It refuses to run unless --scratch names the database it is connected to: the rows it writes
are made up (its teams are named fill-team-NN), and it deletes nothing."""

import random
import time
import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.utils import timezone

from keys.models import Group, Membership, Team
from keys.services import api_key_create

# (model, input, output, cache write, cache read $/MTok): list prices, for plausible amounts.
MODELS = [
    ("claude-sonnet-4-5", 3, 15, 3.75, 0.30),
    ("claude-opus-4-1", 15, 75, 18.75, 1.50),
    ("claude-haiku-4-5", 1, 5, 1.25, 0.10),
    ("gpt-5", 1.25, 10, 0, 0.125),
]
ENDPOINTS = ["messages"] * 8 + ["count_tokens", "chat_completions"]
# A Claude Code session's requests, about.
SESSION_LENGTH = 40
COLUMNS = (
    "key_id",
    "team_id",
    "group_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "cost_usd",
    "charged_usd",
    "status_code",
    "latency_ms",
    "session_id",
    "request_id",
    "endpoint",
    "created_at",
    "settled_at",
)
_ROLLUP_SUMS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "cost_usd",
    "charged_usd",
)


class Command(BaseCommand):
    help = (
        "Fill a scratch PostgreSQL database with made-up usage (default: 1,000,000 events over "
        "10 teams, 200 keys and 90 days, and their daily rollups) for measure_usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scratch",
            required=True,
            metavar="DATABASE",
            help="The name of the database this connects to, to confirm it is a scratch one.",
        )
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--teams", type=int, default=10)
        parser.add_argument("--keys", type=int, default=200, help="Keys in all, over the teams.")
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=18)
        parser.add_argument(
            "--no-analyze",
            action="store_true",
            help="Leave the tables' statistics to autovacuum (by default they are gathered, "
            "so that the measurement reads the plans a settled database would).",
        )

    def handle(self, *args, **options) -> None:
        database = connection.settings_dict["NAME"]
        if connection.vendor != "postgresql":
            raise CommandError("fill_usage writes with PostgreSQL's COPY: run it on PostgreSQL.")
        if options["scratch"] != database:
            raise CommandError(
                f"Connected to “{database}”, not “{options['scratch']}”: this fills only the "
                "scratch database --scratch names."
            )
        if options["keys"] < options["teams"] or options["events"] < 1:
            raise CommandError("Give at least one key per team and one event.")
        # Made-up data, the same for the same seed: no secret in it.
        rng = random.Random(options["seed"])  # noqa: S311
        started = time.monotonic()
        keys = self._keys(options["teams"], options["keys"])
        self.stdout.write(f"{len(keys)} keys in {options['teams']} teams")
        written = self._copy_events(keys, options["events"], options["days"], rng)
        self.stdout.write(f"{written:,} usage events in {time.monotonic() - started:.1f} s")
        rollups = self._roll_up()
        if not options["no_analyze"]:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE billing_usageevent")
                cursor.execute("ANALYZE billing_usagedaily")
        self.stdout.write(
            f"{rollups:,} daily rollup rows; done in {time.monotonic() - started:.1f} s"
        )

    def _keys(self, team_count: int, key_count: int) -> list:
        group, _ = Group.objects.get_or_create(
            name="fill-group", defaults={"models": ["claude-*", "gpt-*"]}
        )
        users = get_user_model().objects
        keys = []
        per_team = key_count // team_count
        for number in range(team_count):
            team, _ = Team.objects.get_or_create(
                slug=f"fill-team-{number:02d}", defaults={"name": f"Fill team {number:02d}"}
            )
            lead, _ = users.get_or_create(username=f"fill-lead-{number:02d}")
            Membership.objects.get_or_create(
                team=team, user=lead, defaults={"role": Membership.Role.LEAD}
            )
            members = []
            for member_number in range(5):
                user, _ = users.get_or_create(username=f"fill-{number:02d}-{member_number}")
                Membership.objects.get_or_create(team=team, user=user)
                members.append(user)
            for key_number in range(per_team):
                owner = members[key_number % len(members)]
                keys.append(
                    api_key_create(
                        team=team,
                        owner=owner,
                        name=f"fill-key-{key_number:03d}",
                        actor=None,
                        group=group,
                    ).key
                )
        return keys

    def _copy_events(self, keys: list, count: int, days: int, rng: random.Random) -> int:
        now = timezone.now()
        span = timedelta(days=days).total_seconds()
        per_key = count // len(keys)
        written = 0
        with transaction.atomic(), connection.cursor() as cursor:
            columns = ", ".join(COLUMNS)
            with cursor.cursor.copy(f"COPY billing_usageevent ({columns}) FROM STDIN") as copy:
                for index, key in enumerate(keys):
                    share = per_key + (1 if index < count - per_key * len(keys) else 0)
                    # Each key's requests in time order, so a session is a run of them.
                    offsets = sorted(rng.random() * span for _ in range(share))
                    session = ""
                    for position, offset in enumerate(offsets):
                        if position % SESSION_LENGTH == 0:
                            session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                        copy.write_row(self._event(key, session, now, offset, rng, written))
                        written += 1
        return written

    def _event(self, key, session: str, now, offset: float, rng: random.Random, number: int):
        model, input_price, output_price, write_price, read_price = rng.choice(MODELS)
        input_tokens = rng.randint(1, 4000)
        output_tokens = rng.randint(1, 2000)
        cache_write = rng.choice((0, 0, rng.randint(100, 20000)))
        cache_write_1h = cache_write // 2 if rng.random() < 0.3 else 0
        cache_read = rng.randint(0, 80000)
        cost = (
            Decimal(input_tokens * input_price)
            + Decimal(output_tokens * output_price)
            + Decimal(cache_write * write_price)
            + Decimal(cache_read * read_price)
        ) / Decimal(1_000_000)
        cost = cost.quantize(Decimal("0.00000001"))
        status = 200 if rng.random() < 0.97 else rng.choice((400, 429, 500, 529))
        created_at = now - timedelta(seconds=offset)
        return (
            key.pk,
            key.team_id,
            key.group_id,
            model,
            input_tokens,
            output_tokens,
            cache_write,
            cache_write_1h,
            cache_read,
            cost,
            cost,
            status,
            rng.randint(200, 30000),
            session,
            f"fill_{number:09d}",
            rng.choice(ENDPOINTS),
            created_at,
            created_at,
        )

    def _roll_up(self) -> int:
        """The rollups of every filled event, as settlement folds them: per key, model and
        day of settings.TIME_ZONE."""
        sums = ", ".join(f"SUM({name})" for name in _ROLLUP_SUMS)
        columns = ", ".join(_ROLLUP_SUMS)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO billing_usagedaily (team_id, key_id, model, day, requests, "  # noqa: S608
                + columns
                + ") SELECT e.team_id, e.key_id, e.model, (e.created_at AT TIME ZONE %s)::date, "
                "COUNT(*), "
                + sums
                + " FROM billing_usageevent e JOIN keys_team t ON t.id = e.team_id "
                "WHERE t.slug LIKE 'fill-team-%%' GROUP BY 1, 2, 3, 4",
                [settings.TIME_ZONE],
            )
            return cursor.rowcount
