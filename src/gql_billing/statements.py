"""Statements: the ledger as CSV for spreadsheets, and the balance per UTC day for charts.

The one read behind both the REST CSV export (`rest.py`) and GraphQL's `balanceHistory`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import StreamingResponse

from . import errors, models
from .db import Database, utc_day
from .graphql.ids import to_global_id

LEDGER: Table = models.LedgerEntry.__table__  # type: ignore[attr-defined]

CSV_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "amount_credits",
    "balance_delta_credits",
    "available_delta_credits",
    "balance_after_credits",
    "available_after_credits",
    "description",
    "reference",
    "payment_intent_id",
)
CSV_MEDIA_TYPE = "text/csv; charset=utf-8; header=present"
# Rows per database fetch and per chunk sent: big enough that per-batch costs vanish, small
# enough that a batch is a few hundred kilobytes.
BATCH_ROWS = 2000
# A spreadsheet runs a cell starting with one of these as a formula (`=HYPERLINK(...)`,
# `@SUM(...)`); tab and carriage return too, by OWASP's advice on CSV injection.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_ENTRIES = LEDGER.c
_CSV_QUERY = select(
    _ENTRIES.id,
    _ENTRIES.created_at,
    _ENTRIES.kind,
    _ENTRIES.amount_credits,
    _ENTRIES.balance_delta_credits,
    _ENTRIES.available_delta_credits,
    _ENTRIES.balance_after_credits,
    _ENTRIES.available_after_credits,
    _ENTRIES.description,
    _ENTRIES.reference,
    _ENTRIES.payment_intent_id,
).where(_ENTRIES.organization_id == bindparam("organization_id"))


class InvalidParameter(errors.InvalidInput):
    """A query-string parameter that cannot be read: HTTP 400, naming the parameter."""

    status = 400


@dataclass(frozen=True)
class CreatedRange:
    """Entries created strictly after `after` and strictly before `before` (either open)."""

    after: datetime | None = None
    before: datetime | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CreatedRange:
        after = _timestamp(params.get("created_after"), "created_after")
        before = _timestamp(params.get("created_before"), "created_before")
        if after is not None and before is not None and before <= after:
            raise InvalidParameter("created_before", "created_before must be after created_after")
        return cls(after, before)

    def label(self) -> str:
        """For a file name: `all`, `since-20261101T000000Z`, `20261101T000000Z-to-...`."""
        after, before = (t and t.strftime("%Y%m%dT%H%M%SZ") for t in (self.after, self.before))
        if after and before:
            return f"{after}-to-{before}"
        if after:
            return f"since-{after}"
        return f"until-{before}" if before else "all"


def _timestamp(value: str | None, parameter: str) -> datetime | None:
    """ISO 8601, a date alone meaning its midnight; no offset means UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if len(value) <= 40 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidParameter(
            parameter, f"{parameter} must be an ISO 8601 timestamp, e.g. 2026-11-01T00:00:00Z"
        )
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def neutralised(text: str | None) -> str:
    """Free text made safe for a spreadsheet: a cell that would start a formula gets a
    leading apostrophe, which spreadsheets show as text. Only free text is touched: numeric
    columns keep their minus signs (a debit is `-700`, and must stay a number)."""
    if text is None:
        return ""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_cells(row: Sequence[Any]) -> list[object]:
    """One row of _CSV_QUERY as its CSV cells (the same values GraphQL's `transactions` shows)."""
    pk, created_at, kind, amount, balance_delta, available_delta, balance_after, *rest = row
    available_after, description, reference, payment_intent_id = rest
    return [
        to_global_id("Transaction", pk),
        created_at.isoformat(),
        kind,
        amount,
        balance_delta,
        available_delta,
        balance_after,
        available_after,
        neutralised(description),
        neutralised(reference),
        payment_intent_id or "",
    ]


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """RFC 4180: comma separated, CRLF line ends, a field quoted when it holds a comma, a
    quote or a line break, quotes doubled."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


async def ledger_csv(
    db: Database, organization_id: int, created: CreatedRange
) -> AsyncIterator[bytes]:
    """The header, then the organization's entries newest first, one chunk per batch."""
    yield csv_text([CSV_COLUMNS]).encode()
    query = _CSV_QUERY
    params: dict[str, Any] = {"organization_id": organization_id}
    if created.after is not None:
        query = query.where(_ENTRIES.created_at > bindparam("created_after"))
        params["created_after"] = created.after
    if created.before is not None:
        query = query.where(_ENTRIES.created_at < bindparam("created_before"))
        params["created_before"] = created.before
    batches = db.batches(query, _ENTRIES.id, size=BATCH_ROWS, params=params)
    async for batch in batches:
        yield csv_text(csv_cells(row) for row in batch).encode()


async def csv_file_name(db: Database, organization_id: int, created: CreatedRange) -> str:
    async with db.read() as session:
        org = await session.get(models.Organization, organization_id)
    slug = re.sub(r"[^a-z0-9]+", "-", (org.name if org else "").lower()).strip("-")[:40]
    return f"ledger-{slug or 'organization'}-{organization_id}-{created.label()}.csv"


def wants_csv(format_param: str | None, accept: str | None) -> bool:
    """`?format=csv` (or `json`) decides; without it, an Accept header naming text/csv."""
    if format_param is not None:
        if format_param not in ("csv", "json"):
            raise InvalidParameter("format", "format must be csv or json")
        return format_param == "csv"
    media_types = (part.split(";", 1)[0].strip().lower() for part in (accept or "").split(","))
    return "text/csv" in media_types


async def csv_response(
    db: Database, organization_id: int, params: Mapping[str, str]
) -> StreamingResponse:
    """The organization's ledger (or the part `created_after`..`created_before`) as a CSV
    download, streamed batch by batch. The range is checked before anything is sent."""
    created = CreatedRange.from_params(params)
    name = await csv_file_name(db, organization_id, created)
    return StreamingResponse(
        ledger_csv(db, organization_id, created),
        media_type=CSV_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            # Statements hold financial data: no shared cache keeps a copy.
            "Cache-Control": "no-store",
        },
    )


# -- balance history ---------------------------------------------------------------------------

MAX_HISTORY_DAYS = 366


@dataclass(frozen=True)
class DayBalance:
    day: date
    closing_balance_credits: int
    credited_credits: int
    debited_credits: int


class InvalidDays(ValueError):
    def __init__(self, argument: str, detail: str) -> None:
        super().__init__(detail)
        self.argument = argument


def check_days(first_day: date, last_day: date) -> None:
    """InvalidDays naming the argument at fault: `to` before `from`, or over 366 days."""
    if last_day < first_day:
        raise InvalidDays("to", "`to` must not be before `from`")
    if (last_day - first_day).days + 1 > MAX_HISTORY_DAYS:
        raise InvalidDays("to", f"At most {MAX_HISTORY_DAYS} days from `from` to `to`")
    if last_day >= date.max:
        raise InvalidDays("to", "`to` is out of range")


_DELTA = _ENTRIES.balance_delta_credits
_IN_RANGE = (
    (_ENTRIES.organization_id == bindparam("organization_id"))
    & (_ENTRIES.created_at >= bindparam("start"))
    & (_ENTRIES.created_at < bindparam("end"))
)
_DAY = utc_day(_ENTRIES.created_at)
# Sums as BIGINT: PostgreSQL's SUM of a bigint is numeric, which would come back a Decimal.
_DAYS_QUERY = (
    select(
        _DAY.label("day"),
        cast(func.sum(case((_DELTA > 0, _DELTA), else_=0)), BigInteger).label("credited"),
        cast(func.sum(case((_DELTA < 0, -_DELTA), else_=0)), BigInteger).label("debited"),
    )
    .where(_IN_RANGE)
    .group_by(_DAY)
)
_OPENING_QUERY = (
    select(_ENTRIES.balance_after_credits)
    .where(_ENTRIES.organization_id == bindparam("organization_id"))
    .where(_ENTRIES.created_at < bindparam("start"))
    .order_by(_ENTRIES.created_at.desc(), _ENTRIES.id.desc())
    .limit(1)
)


async def balance_history(
    session: AsyncSession, *, organization_id: int, first_day: date, last_day: date
) -> list[DayBalance]:
    """One point per UTC day from `first_day` to `last_day` inclusive (check_days first):
    the day's credits and debits from one grouped query over its entries, and the closing
    balance carried on from the last entry before the range."""
    start = datetime.combine(first_day, time(), UTC)
    end = datetime.combine(last_day + timedelta(days=1), time(), UTC)
    params = {"organization_id": organization_id, "start": start, "end": end}
    opening = (await session.execute(_OPENING_QUERY, params)).scalar_one_or_none() or 0
    days = {row.day: row for row in (await session.execute(_DAYS_QUERY, params)).all()}
    points: list[DayBalance] = []
    balance = opening
    for offset in range((last_day - first_day).days + 1):
        day = first_day + timedelta(days=offset)
        moved = days.get(day)
        credited, debited = (moved.credited, moved.debited) if moved else (0, 0)
        balance += credited - debited
        points.append(DayBalance(day, balance, credited, debited))
    return points
