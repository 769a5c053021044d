"""Usage as CSV, streamed: one function for the API, the portal's download and the admin.

Rows come from a server-side cursor (`.iterator(chunk_size=...)` declares a named cursor on
PostgreSQL) as tuples (values_list: no model instances), are written a chunk at a time and
forgotten, so an export of millions of rows uses the memory of one chunk and sends its first
bytes as soon as the first chunk is read. The cursor runs inside a transaction: outside one,
Django declares it WITH HOLD, and PostgreSQL then materialises the whole result before the
first row comes back.
"""

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC
from itertools import islice

from django.db import connection, transaction
from django.db.models import CharField, F, Func, QuerySet
from django.db.models.functions import Cast

from core.streaming import SyncStreamingResponse

from .pricing import TOKEN_FIELDS

# Rows fetched from the cursor, and written to the client, at a time.
CHUNK_ROWS = 2000
# A time as UTC ISO 8601 with microseconds, written by PostgreSQL.
_PG_UTC_ISO = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

# Who and what a row is about, as both exports name them: CSV column -> the field read.
_ABOUT = {
    "team": "team__slug",
    "member": "key__owner__username",
    "key_name": "key__name",
    "key_prefix": "key__prefix",
    "model": "model",
}
_AMOUNTS = {name: name for name in (*TOKEN_FIELDS, "cost_usd", "charged_usd")}
_MONEY = ("cost_usd", "charged_usd")
_EVENT = {
    "time": "created_at",
    **_ABOUT,
    "endpoint": "endpoint",
    "status": "status_code",
    **_AMOUNTS,
    "session_id": "session_id",
    "request_id": "request_id",
}
_DAILY = {"day": "day", **_ABOUT, "requests": "requests", **_AMOUNTS}
EVENT_COLUMNS = tuple(_EVENT)
DAILY_COLUMNS = tuple(_DAILY)


def _writer(columns: tuple[str, ...], first: str, first_text: Callable) -> Callable:
    """A row as written: its first value (a time or day) as `first_text` gives it, and the
    amounts of money with all their decimal places."""
    at = columns.index(first)
    money = [columns.index(name) for name in _MONEY]

    def line(row: tuple) -> list:
        values = list(row)
        values[at] = first_text(values[at])
        for index in money:
            values[index] = f"{values[index]:f}"
        return values

    return line


def usage_event_csv(events: QuerySet) -> Iterator[bytes]:
    """The CSV of `events` (already scoped and filtered), oldest first: one row per request,
    its time in UTC ISO 8601 to the microsecond ("2026-12-07T15:52:13.123456Z"), amounts to 8
    places. On PostgreSQL the database writes the time and amounts as text: parsing them into
    datetimes and Decimals only to print them again took most of an export's time."""
    fields = dict(_EVENT)
    if connection.vendor == "postgresql":
        events = events.annotate(
            csv_time=Func(F("created_at"), template=_PG_UTC_ISO, output_field=CharField()),
            csv_cost=Cast("cost_usd", CharField()),
            csv_charged=Cast("charged_usd", CharField()),
        )
        fields.update(time="csv_time", cost_usd="csv_cost", charged_usd="csv_charged")
        line = None
    else:
        line = _writer(
            EVENT_COLUMNS, "time", lambda at: f"{at.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"
        )
    rows = events.order_by("created_at", "id").values_list(*fields.values())
    return _csv_chunks(rows, EVENT_COLUMNS, line)


def usage_daily_csv(rollups: QuerySet) -> Iterator[bytes]:
    """The CSV of daily rollup rows, oldest day first (days of settings.TIME_ZONE)."""

    line = _writer(DAILY_COLUMNS, "day", lambda day: day.isoformat())
    rows = rollups.order_by("day", "team_id", "key_id", "model", "id").values_list(*_DAILY.values())
    return _csv_chunks(rows, DAILY_COLUMNS, line)


def csv_response(chunks: Iterator[bytes], *, filename: str) -> SyncStreamingResponse:
    response = SyncStreamingResponse(chunks, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Proxies that buffer responses (nginx) would hold the stream back until its end.
    response["X-Accel-Buffering"] = "no"
    response["Cache-Control"] = "no-store"
    return response


def _csv_chunks(
    rows: QuerySet, columns: tuple[str, ...], line: Callable[[tuple], tuple] | None
) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    with transaction.atomic():
        fetched = rows.iterator(chunk_size=CHUNK_ROWS)
        while chunk := list(islice(fetched, CHUNK_ROWS)):
            writer.writerows(chunk if line is None else map(line, chunk))
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()
