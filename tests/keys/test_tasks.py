from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import OperationalError
from django.utils import timezone

from core.keyspace import snapshot_cache_key
from keys import services, tasks
from keys.models import ApiKey, AuditEvent

from ..factories import make_key

YESTERDAY = timedelta(days=-1)
TOMORROW = timedelta(days=1)


def key_expiring(team, member, group, *, name, status=ApiKey.Status.ENABLED, delta=None):
    """A key whose expiry is `delta` from now (None: never). The create service refuses a past
    expiry, so it is set afterwards, as if that time had simply passed."""
    key = make_key(team=team, owner=member, group=group, name=name, status=status).key
    expires_at = None if delta is None else timezone.now() + delta
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expires_at)
    cache.set(snapshot_cache_key(key.digest), {"status": status})
    return ApiKey.objects.get(pk=key.pk)


@pytest.fixture
def keys_of_every_kind(team, member, group):
    return {
        "expired yesterday": key_expiring(team, member, group, name="a", delta=YESTERDAY),
        "expired a second ago": key_expiring(
            team, member, group, name="b", delta=timedelta(seconds=-1)
        ),
        "expired but disabled": key_expiring(
            team, member, group, name="c", status=ApiKey.Status.DISABLED, delta=YESTERDAY
        ),
        "never expires": key_expiring(team, member, group, name="d"),
        "expires tomorrow": key_expiring(team, member, group, name="e", delta=TOMORROW),
    }


def test_expire_keys_disables_exactly_the_expired_enabled_keys(
    keys_of_every_kind, django_capture_on_commit_callbacks
):
    events_before = set(AuditEvent.objects.filter(subject_type="key").values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.expire_keys() == 2

    statuses = {
        label: ApiKey.objects.get(pk=key.pk).status for label, key in keys_of_every_kind.items()
    }
    assert statuses == {
        "expired yesterday": "disabled",
        "expired a second ago": "disabled",
        "expired but disabled": "disabled",
        "never expires": "enabled",
        "expires tomorrow": "enabled",
    }
    new_events = AuditEvent.objects.filter(subject_type="key").exclude(pk__in=events_before)
    assert sorted(new_events.values_list("key_id", "action", "actor", "changes")) == sorted(
        (
            keys_of_every_kind[label].pk,
            "key.expired",
            None,
            {"status": ["enabled", "disabled"]},
        )
        for label in ["expired yesterday", "expired a second ago"]
    )
    cached = {
        label: cache.get(snapshot_cache_key(key.digest)) is not None
        for label, key in keys_of_every_kind.items()
    }
    assert cached == {
        "expired yesterday": False,
        "expired a second ago": False,
        "expired but disabled": True,
        "never expires": True,
        "expires tomorrow": True,
    }


def test_expiring_again_changes_nothing(keys_of_every_kind, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        tasks.expire_keys()
    events = AuditEvent.objects.filter(subject_type="key").count()

    assert tasks.expire_keys() == 0
    assert AuditEvent.objects.filter(subject_type="key").count() == events


def test_no_expired_keys_means_no_writes(team, member, group, django_assert_num_queries):
    key_expiring(team, member, group, name="fine", delta=TOMORROW)

    with django_assert_num_queries(1):
        assert tasks.expire_keys() == 0


def test_expire_keys_retries_outages_and_raises(keys_of_every_kind, monkeypatch):
    task = tasks.expire_keys
    assert OperationalError in task.autoretry_for
    assert task.retry_backoff
    assert task.max_retries == 5

    def database_down(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "api_key_expire", database_down)
    with pytest.raises(OperationalError):
        task()
