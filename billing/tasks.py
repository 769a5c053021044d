from celery import shared_task

from core.tasks import RetryOnOutageTask

from . import services


@shared_task(base=RetryOnOutageTask)
def settle_usage() -> int:
    return services.settle_usage()


@shared_task(base=RetryOnOutageTask)
def ingest_usage() -> int:
    """Move the usage the relay appended to the Redis stream into settled UsageEvent rows."""
    return services.ingest_usage_stream()


@shared_task(base=RetryOnOutageTask)
def collect_refusals() -> int:
    """Move the relay's refusal counts of closed minutes from Redis into RefusalCount rows."""
    return services.collect_refusal_counts()


@shared_task(base=RetryOnOutageTask)
def prune_usage() -> int:
    """Delete settled usage events older than USAGE_RETENTION_DAYS (the rollups stay)."""
    return services.usage_prune()
