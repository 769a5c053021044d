from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.commands import add_actor_option, describe_validation_error, user_named
from keys.models import Membership, Team
from keys.services import membership_limit_update, team_budget_update

# The services name fields after the model; operators typed options.
OPTION_FOR_FIELD = {
    "monthly_budget_usd": "--monthly-usd",
    "monthly_limit_usd": "--monthly-usd",
    "time_zone": "--time-zone",
}


class Command(BaseCommand):
    help = (
        "Set a team's monthly budget (and time zone), or with --member a member's monthly cap "
        "across their keys in the team. Months follow the team's time zone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, metavar="SLUG", help="The team's slug.")
        parser.add_argument(
            "--member",
            metavar="USERNAME",
            help="Set this member's monthly cap instead of the team's budget.",
        )
        parser.add_argument(
            "--monthly-usd",
            metavar="X",
            help="USD per calendar month, e.g. 500 or 25.50 (at least 0.01); 0 clears it.",
        )
        parser.add_argument(
            "--time-zone",
            metavar="NAME",
            help="The team's time zone, an IANA name such as Asia/Shanghai or UTC: its months "
            "(and its keys' days and weeks) start at midnight there.",
        )
        add_actor_option(parser, doing="making the change")

    def handle(self, *args, **options) -> None:
        problems: list[str] = []
        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            problems.append(f"--team: No team with slug “{options['team']}”.")
        membership = None
        if options["member"] is not None:
            if options["time_zone"] is not None:
                problems.append(
                    "--time-zone: the time zone is the team's; set it without --member."
                )
            user = user_named("--member", options["member"], problems)
            if user is not None and team is not None:
                membership = (
                    Membership.objects.select_related("team", "user")
                    .filter(team=team, user=user)
                    .first()
                )
                if membership is None:
                    problems.append(f"--member: {user} is not a member of {team.name}.")
        if options["monthly_usd"] is None and (
            options["member"] is not None or options["time_zone"] is None
        ):
            problems.append("--monthly-usd: required (0 clears it).")
        actor = user_named("--actor", options["actor"], problems)
        if problems:
            raise CommandError("\n".join(problems))

        try:
            if membership is not None:
                membership = membership_limit_update(
                    actor=actor, membership=membership, monthly_limit_usd=options["monthly_usd"]
                )
            else:
                team = team_budget_update(
                    actor=actor,
                    team=team,
                    monthly_budget_usd=options["monthly_usd"],
                    time_zone=options["time_zone"],
                )
        except ValidationError as error:
            raise CommandError(describe_validation_error(error, OPTION_FOR_FIELD)) from None
        if membership is not None:
            cap = membership.monthly_limit_usd
            shown = f"monthly cap {cap:.2f} USD" if cap else "no monthly cap"
            self.stdout.write(f"{membership.user} in {team.name}: {shown}.")
        else:
            budget = team.monthly_budget_usd
            shown = f"monthly budget {budget:.2f} USD" if budget else "no monthly budget"
            self.stdout.write(f"{team.name}: {shown}, time zone {team.time_zone}.")
