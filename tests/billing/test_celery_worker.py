"""A real Celery worker, on the configured broker, runs both periodic tasks.

The broker is whatever settings configure: Redis when REDIS_URL is set (CI, production), the
file-system transport otherwise. The worker runs in a thread of this process, so it sees the
test database (committed rows: these tests are transactional) and the same cache.

It is a separate app instance on the same settings, with a queue of its own and, for the
file-system transport, a folder of its own: a developer's running worker cannot take these
messages, and messages left over in var/ from earlier runs cannot reach this worker.
"""

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from django.core.cache import cache
from django.utils import timezone

from billing.models import UsageDaily, UsageEvent
from billing.tasks import settle_usage
from core.keyspace import snapshot_cache_key
from hcai.celery import app as project_app
from keys.models import ApiKey, AuditEvent
from keys.tasks import expire_keys

from ..factories import make_key
from .factories import UsageEventFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_app(tmp_path):
    app = Celery("hcai-test-worker", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    overrides: dict = {"task_default_queue": f"test-worker-{uuid.uuid4().hex}"}
    if project_app.conf.broker_url.startswith("filesystem:"):
        folder = tmp_path / "celery-broker"
        (folder / "processed").mkdir(parents=True)
        overrides["broker_transport_options"] = {
            **project_app.conf.broker_transport_options,
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
        }
    app.conf.update(overrides)
    yield app
    # start_worker made the test app the current one, which `.delay()` on a shared task uses.
    project_app.set_current()
    project_app.set_default()
    app.close()


def wait_for(condition: Callable[[], bool], *, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {seconds} s: {condition.__doc__}")
        time.sleep(0.2)


def test_a_worker_settles_usage_and_expires_keys(worker_app, team, member, group):
    paying = make_key(team=team, owner=member, group=group, name="paying").key
    UsageEventFactory.create_batch(
        3, key=paying, cost_usd=Decimal("0.2"), charged_usd=Decimal("0.10000001")
    )
    expiring = make_key(team=team, owner=member, group=group, name="expiring").key
    ApiKey.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    cache.set(snapshot_cache_key(expiring.digest), {"status": "enabled"})

    def settled() -> bool:
        """every usage event is settled"""
        return not UsageEvent.objects.filter(settled_at__isnull=True).exists()

    def expired() -> bool:
        """the expired key is disabled"""
        return ApiKey.objects.get(pk=expiring.pk).status == ApiKey.Status.DISABLED

    with start_worker(worker_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        assert settle_usage.app is worker_app
        settle_usage.delay()
        expire_keys.delay()
        wait_for(settled)
        wait_for(expired)

    paying.refresh_from_db()
    assert paying.spent_usd == Decimal("0.30000003")
    assert list(UsageDaily.objects.values_list("key", "requests", "charged_usd")) == [
        (paying.pk, 3, Decimal("0.30000003"))
    ]
    assert list(
        AuditEvent.objects.filter(key=expiring, action=AuditEvent.Action.KEY_EXPIRED).values_list(
            "actor", "changes"
        )
    ) == [(None, {"status": ["enabled", "disabled"]})]
    assert cache.get(snapshot_cache_key(expiring.digest)) is None
    assert ApiKey.objects.get(pk=paying.pk).status == ApiKey.Status.ENABLED
