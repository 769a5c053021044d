from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services import usage_prune


class Command(BaseCommand):
    help = (
        "Delete settled usage events older than the retention (USAGE_RETENTION_DAYS, or "
        "--days), in batches. The daily rollups, and so spend history and charts, stay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            metavar="N",
            help=f"Keep this many days of events (default {settings.USAGE_RETENTION_DAYS}, "
            "from USAGE_RETENTION_DAYS); 0 keeps everything.",
        )

    def handle(self, *args, **options) -> None:
        days = options["days"]
        if days is not None and days < 0:
            raise CommandError(f"--days: must be 0 (keep everything) or more, not {days}.")
        deleted = usage_prune(days=days)
        kept = settings.USAGE_RETENTION_DAYS if days is None else days
        if kept == 0:
            self.stdout.write("Retention is 0 days: every usage event is kept.")
        else:
            self.stdout.write(f"Deleted {deleted} usage events older than {kept} days.")
