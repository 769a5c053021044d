"""Usage as the relay records it and ingestion writes it, for the notification tests."""

from collections.abc import Iterable
from datetime import datetime

from billing import ledger, services
from billing.ledger import UsageRecord
from billing.windows import Account
from keys.models import ApiKey

from ..billing.factories import usage_record

_sequence = iter(range(1, 10**9))


def charge(key: ApiKey, amount: str, at: datetime) -> UsageRecord:
    """One request of `key` charged `amount` USD, made at `at`."""
    return usage_record(
        key, charged=amount, request_id=f"req_notify_{next(_sequence)}", created_at=at
    )


def relay_counts(records: Iterable[UsageRecord]) -> None:
    """What the relay does as it records a charge, before ingestion writes it: raise each
    running total the charge counts in, if that total exists (billing.windows.Account)."""
    totals = ledger.spend_totals()
    for record in records:
        key = ApiKey.objects.select_related("team").get(pk=record.key_id)
        account = Account(key.pk, key.team_id, key.owner_id, key.team.time_zone)
        for name in account.targets(record.created_at).counters:
            totals.raise_by(name, record.charge_units)


def ingest(records: list[UsageRecord]) -> int:
    """Record as the relay does, then write and settle the batch (the real ingestion path)."""
    relay_counts(records)
    return services.write_and_settle_usage(records=records)
