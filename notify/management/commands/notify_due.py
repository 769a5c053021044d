from django.core.management.base import BaseCommand

from notify.services import notify_due


class Command(BaseCommand):
    help = (
        "Find what is due to be told (expiring and expired keys, key changes) and deliver it: "
        "new deliveries and retries whose time has come, once, synchronously (Celery beat "
        "runs the same job every NOTIFY_DUE_EVERY_SECONDS). Running it twice in a row sends "
        "nothing twice."
    )

    def handle(self, *args, **options) -> None:
        due = notify_due()
        events = "1 new event" if due.events == 1 else f"{due.events} new events"
        tried = "1 delivery tried" if due.tried == 1 else f"{due.tried} deliveries tried"
        self.stdout.write(f"{events}, {tried}.")
