from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.commands import add_actor_option, describe_validation_error, user_named
from keys.models import Group, Team
from keys.services import api_key_create
from keys.validators import MAX_ALLOWED_IPS, MAX_CONCURRENCY

# The service names fields after the model; operators typed options.
OPTION_FOR_FIELD = {
    "name": "--name",
    "owner": "--owner",
    "group": "--group",
    "allowed_ips": "--allowed-ips",
    "quota_limit_usd": "--quota-usd",
    "rate_limit": "--rate-limit",
    "expires_at": "--expires",
    "daily_limit_usd": "--daily-usd",
    "weekly_limit_usd": "--weekly-usd",
    "monthly_limit_usd": "--monthly-usd",
    "max_concurrency": "--max-concurrency",
}

EXPIRES_EXAMPLES = "2030-01-31, 2030-01-31T18:00, 2030-01-31T18:00:00Z or 2030-01-31T18:00+08:00"


class Command(BaseCommand):
    help = (
        "Create an API key and print it (only the key, one line) on stdout, e.g. "
        "KEY=$(python manage.py create_key ...). The key is shown this once and never again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, metavar="SLUG", help="The team's slug.")
        parser.add_argument(
            "--owner", required=True, metavar="USERNAME", help="A member of the team."
        )
        parser.add_argument(
            "--group", required=True, metavar="NAME", help="An active group the team may use."
        )
        parser.add_argument("--name", required=True, help="The key's name (at most 100 chars).")
        parser.add_argument(
            "--quota-usd",
            default="0",
            metavar="X",
            help="Spending limit in USD, e.g. 25.00 (at least 0.01); 0 = unlimited.",
        )
        parser.add_argument(
            "--rate-limit", default="", metavar="N/UNIT", help="e.g. 60/m (units s, m, h, d)."
        )
        for option, period in (
            ("--daily-usd", "calendar day"),
            ("--weekly-usd", "calendar week (from Monday)"),
            ("--monthly-usd", "calendar month"),
        ):
            parser.add_argument(
                option,
                default="0",
                metavar="X",
                help=f"Spend allowed per {period} in the team's time zone, in USD, e.g. 5.00 "
                "(at least 0.01); 0 = none.",
            )
        parser.add_argument(
            "--max-concurrency",
            default="0",
            metavar="N",
            help=f"Requests of the key in flight at once, at most {MAX_CONCURRENCY:,}; "
            "0 = unlimited.",
        )
        parser.add_argument(
            "--expires",
            metavar="ISO-8601",
            help=(
                f"When the key stops working, e.g. {EXPIRES_EXAMPLES}. Without an offset or Z "
                "the time is read in the TIME_ZONE setting; a date alone means its midnight."
            ),
        )
        parser.add_argument(
            "--allowed-ips",
            default="",
            metavar='"A,B"',
            help=(
                "IPv4/IPv6 addresses or CIDRs, separated by commas or spaces, at most "
                f"{MAX_ALLOWED_IPS:,}; empty = any."
            ),
        )
        add_actor_option(parser, doing="creating the key")

    def handle(self, *args, **options) -> None:
        problems: list[str] = []

        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            problems.append(f"--team: No team with slug “{options['team']}”.")
        owner = user_named("--owner", options["owner"], problems)
        group = Group.objects.filter(name=options["group"]).first()
        if group is None:
            problems.append(f"--group: No group named “{options['group']}”.{_offer(team)}")
        actor = user_named("--actor", options["actor"], problems)
        expires_at = None
        if options["expires"]:
            try:
                expires_at = _parse_expiry(options["expires"])
            except ValueError:
                problems.append(
                    f"--expires: “{options['expires']}” is not an ISO-8601 date and time "
                    f"(for example {EXPIRES_EXAMPLES})."
                )
        if problems:
            raise CommandError("\n".join(problems))

        try:
            issued = api_key_create(
                team=team,
                owner=owner,
                name=options["name"],
                group=group,
                actor=actor,
                allowed_ips=options["allowed_ips"],
                quota_limit_usd=options["quota_usd"],
                rate_limit=options["rate_limit"],
                expires_at=expires_at,
                daily_limit_usd=options["daily_usd"],
                weekly_limit_usd=options["weekly_usd"],
                monthly_limit_usd=options["monthly_usd"],
                max_concurrency=options["max_concurrency"],
            )
        except ValidationError as error:
            raise CommandError(describe_validation_error(error, OPTION_FOR_FIELD)) from None
        self.stdout.write(issued.plaintext)


def _parse_expiry(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return moment


def _offer(team: Team | None) -> str:
    if team is None:
        return ""
    names = ", ".join(f"“{group.name}”" for group in team.available_groups())
    return f" Groups available to team {team.name}: {names or 'none'}."
