import logging

from celery import shared_task

from core.tasks import RetryOnOutageTask

from . import services
from .models import ApiKey

logger = logging.getLogger(__name__)


@shared_task(base=RetryOnOutageTask)
def expire_keys() -> int:
    """Disable each enabled key whose expiry has passed; the service audits and uncaches it."""
    expired = 0
    for key_id in ApiKey.objects.expired_but_enabled().order_by("pk").values_list("pk", flat=True):
        if services.api_key_expire(key=ApiKey(pk=key_id)):
            expired += 1
    if expired:
        logger.info("Expired %d keys", expired)
    return expired
