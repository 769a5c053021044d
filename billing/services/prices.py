"""Writes to prices: each creation, change or deletion writes one audit row (prices belong to
no team; the admin's "last changed" reads these rows). The admin and `manage.py seed_prices`
call these; `actor` is None when the system acts, as the command does. The relay's price
tables pick a change up within proxy.prices.REFRESH_SECONDS.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db import transaction

from keys.models import AuditEvent
from keys.services import audit_record

from ..models import ModelPrice

# What a price's audit row records, in the order the admin shows them.
PRICE_FIELDS = (
    "model",
    "input_per_mtok",
    "output_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "cache_read_per_mtok",
    "max_output_tokens",
)


@dataclass(frozen=True)
class PriceSaved:
    price: ModelPrice
    created: bool
    # {field: [old, new]} of what changed (every field, from None, when created); empty when
    # nothing did, and then nothing was written.
    changes: dict[str, list[Any]]


@transaction.atomic(durable=True)
def model_price_save(*, price: ModelPrice, actor: User | None) -> PriceSaved:
    """Create or change a price, validated (ModelPrice.clean: a 1-hour cache write price is
    required where 5-minute writes cost something). A change that changes nothing writes
    nothing: neither the row (its `updated_at` is when the price last changed, and the relay's
    model list shows it) nor an audit row."""
    stored = (
        None
        if price.pk is None
        else ModelPrice.objects.select_for_update()
        .filter(pk=price.pk)
        .values(*PRICE_FIELDS)
        .first()
    )
    # Checked first, so the values compared below are the model's (Decimals, not text).
    price.full_clean()
    after = {field: _audit_value(getattr(price, field)) for field in PRICE_FIELDS}
    if stored is None:
        changes = {field: [None, value] for field, value in after.items()}
    else:
        before = {field: _audit_value(value) for field, value in stored.items()}
        changes = {
            field: [before[field], after[field]]
            for field in PRICE_FIELDS
            if before[field] != after[field]
        }
        if not changes:
            return PriceSaved(price, created=False, changes={})
    price.save()
    audit_record(
        action=AuditEvent.Action.PRICE_CREATED
        if stored is None
        else AuditEvent.Action.PRICE_UPDATED,
        actor=actor,
        subject=price,
        changes=changes,
    )
    return PriceSaved(price, created=stored is None, changes=changes)


@transaction.atomic(durable=True)
def model_price_delete(*, price: ModelPrice, actor: User | None) -> None:
    """Delete a price: the relay refuses its model from its next price reload. The audit row
    keeps what the prices were."""
    audit_record(
        action=AuditEvent.Action.PRICE_DELETED,
        actor=actor,
        subject=price,
        changes={field: [_audit_value(getattr(price, field)), None] for field in PRICE_FIELDS},
    )
    price.delete()


def _audit_value(value: Any) -> Any:
    """A price as the audit trail writes it: "3.75", not "3.750000" (JSON has no Decimal)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value
