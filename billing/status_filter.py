"""Which requests a usage list shows by status, read from the text a person or an
integration types: shared by the selectors, the explorer's query, the portal's form and the
API's serializers."""

import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from .models import RefusalCount


@dataclass(frozen=True)
class StatusFilter:
    """Which requests a list shows by status: one status code, a class of them ("4xx"), or
    the refusals of the relay only ("refused"). Read from text by `status_filter`."""

    low: int = 100
    high: int = 600  # Exclusive.
    refused_only: bool = False

    def narrow(self, rows: QuerySet) -> QuerySet:
        """Usage events or refusal counts with a status in range; "refused" keeps no usage
        event, since the relay's own refusals are counted apart (RefusalCount)."""
        if self.refused_only and rows.model is not RefusalCount:
            return rows.none()
        return rows.filter(status_code__gte=self.low, status_code__lt=self.high)


STATUS_FILTER_HELP = (
    "A status code such as 402, a class such as 4xx, or “refused” for the requests the relay "
    "refused itself (disabled or expired key, IP, model, quota, rate limit, bad request)."
)
_STATUS_CODE = re.compile(r"[1-5][0-9][0-9]")
_STATUS_CLASS = re.compile(r"[1-5]xx")


def status_filter(value: str) -> StatusFilter:
    """The filter `value` names (see STATUS_FILTER_HELP); a ValidationError if it names none.
    Shared by the portal's form and the API's query serializers."""
    text = value.strip().lower()
    if text == "refused":
        return StatusFilter(refused_only=True)
    if _STATUS_CODE.fullmatch(text):
        return StatusFilter(int(text), int(text) + 1)
    if _STATUS_CLASS.fullmatch(text):
        low = int(text[0]) * 100
        return StatusFilter(low, low + 100)
    raise ValidationError(
        "Enter a status code such as 402, a class such as 4xx, or “refused”.",
        code="invalid_status",
    )
