"""Time the usage explorer and the CSV export on the database as it is (fill_usage fills a
scratch one): the explorer page of one team for each grouping, as a lead sees it, through the
whole Django stack, and the export's time to first byte and rows per second."""

import logging
import resource
import statistics
import time
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import selectors
from billing.export import usage_event_csv
from billing.models import UsageEvent
from billing.usage_query import GROUPINGS, read_usage_query
from keys.models import Membership, Team

# What each measured page asks for, besides its grouping.
CASES = [
    ("30 days", {"range": "30d"}),
    ("90 days", {"range": "custom", "since": None, "until": None}),
    ("30 days, errors only", {"range": "30d", "status": "error"}),
    ("today", {"range": "today"}),
]


class Command(BaseCommand):
    help = "Time the usage explorer's pages and the CSV export (after fill_usage)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", metavar="SLUG", help="Default: the team with most usage.")
        parser.add_argument("--repeat", type=int, default=5, help="Runs per page (median).")

    def handle(self, *args, **options) -> None:
        # One log line per request would drown the figures.
        logging.getLogger("hcai.request").setLevel(logging.WARNING)
        team = self._team(options["team"])
        lead = (
            Membership.objects.filter(team=team, role=Membership.Role.LEAD)
            .select_related("user")
            .first()
        )
        if lead is None:
            raise CommandError(f"{team.slug} has no lead to look through.")
        events = UsageEvent.objects.filter(team=team).count()
        self.stdout.write(
            f"{UsageEvent.objects.count():,} usage events; team {team.slug}: {events:,}"
        )
        client = Client(HTTP_HOST="localhost")
        client.force_login(lead.user)
        url = reverse("billing:team_usage", args=[team.slug])
        first_day = UsageEvent.objects.filter(team=team).order_by("created_at").first()
        self.stdout.write(
            "page (lead's view)            group_by  page ms (median, max)  selector ms  source"
        )
        today = timezone.localdate(timezone=ZoneInfo(team.time_zone))
        for label, params in CASES:
            if "since" in params:
                params = {
                    **params,
                    "since": f"{first_day.created_at:%Y-%m-%d}",
                    "until": f"{today:%Y-%m-%d}",
                }
            for group_by in GROUPINGS:
                asked = {**params, "group_by": group_by}
                pages, selections = [], []
                for _ in range(options["repeat"] + 1):  # The first run warms the caches.
                    started = time.perf_counter()
                    response = client.get(url, asked)
                    pages.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200 or b"data-query-errors" in response.content:
                        raise CommandError(f"{label} {group_by}: {response.status_code}")
                    reading = read_usage_query(asked, actor=lead.user, team=team, today=today)
                    started = time.perf_counter()
                    report = selectors.usage_explorer(
                        actor=lead.user, team=team, query=reading.query
                    )
                    selections.append((time.perf_counter() - started) * 1000)
                pages, selections = pages[1:], selections[1:]
                self.stdout.write(
                    f"{label:<30}{group_by:<10}{statistics.median(pages):>8.0f}"
                    f"{max(pages):>8.0f}{statistics.median(selections):>18.0f}  {report.source}"
                )
        self._export(f"team {team.slug}", UsageEvent.objects.filter(team=team))
        self._export("every team (staff)", UsageEvent.objects.all())
        client.logout()

    def _team(self, slug: str | None) -> Team:
        if slug:
            team = Team.objects.filter(slug=slug).first()
            if team is None:
                raise CommandError(f"No team {slug}.")
            return team
        busiest = (
            UsageEvent.objects.values("team_id").annotate(n=Count("id")).order_by("-n").first()
        )
        if busiest is None:
            raise CommandError("No usage to measure: run fill_usage first.")
        return Team.objects.get(pk=busiest["team_id"])

    def _export(self, label: str, events) -> None:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        chunks = usage_event_csv(events)
        first = next(chunks)
        first_byte = time.perf_counter() - started
        lines = first.count(b"\n") - 1
        size = len(first)
        for chunk in chunks:
            lines += chunk.count(b"\n")
            size += len(chunk)
        elapsed = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.stdout.write(
            f"export, {label}: {lines:,} rows ({size / 1e6:.0f} MB) in {elapsed:.1f} s = "
            f"{lines / elapsed:,.0f} rows/s; first byte after {first_byte * 1000:.0f} ms; "
            f"peak memory grew {(rss_after - rss_before) / 1024:.0f} MB"
        )
