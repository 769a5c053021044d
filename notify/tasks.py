from celery import shared_task

from core.tasks import RetryOnOutageTask

from . import services


@shared_task(base=RetryOnOutageTask)
def notify_due() -> list[int]:
    """Find what is due to be told and deliver it (new deliveries and retries whose time has
    come); returns [new events, deliveries tried]."""
    due = services.notify_due()
    return [due.events, due.tried]
