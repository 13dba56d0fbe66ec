"""The read layer: wallets, ledger pages, tokens, reservations and approvals, read the same
way for every door (GraphQL resolvers, REST handlers, authentication).

Functions here take a `Reader` (driver.py: a unit of read work on the driver, one snapshot)
or, for ORM rows, an `AsyncSession`, and return plain rows with attribute access (the
columns named below), never API types: each door shapes its own answer. The hot statements
are built once, at import, with bound parameters, so the driver compiles them once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, Table, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from . import models
from .driver import Reader

LEDGER: Table = models.LedgerEntry.__table__  # type: ignore[attr-defined]
WALLETS: Table = models.Wallet.__table__  # type: ignore[attr-defined]
TOKENS: Table = models.ApiToken.__table__  # type: ignore[attr-defined]

WALLET_COLUMNS = tuple(
    WALLETS.c[name]
    for name in (
        "id",
        "organization_id",
        "balance_credits",
        "reserved_credits",
        "auto_topup_enabled",
        "auto_threshold_credits",
        "auto_topup_amount_credits",
        "auto_daily_cap_aud",
        "auto_disabled_reason",
        "updated_at",
    )
)
TRANSACTION_COLUMNS = tuple(
    LEDGER.c[name]
    for name in (
        "id",
        "kind",
        "amount_credits",
        "balance_delta_credits",
        "available_delta_credits",
        "balance_after_credits",
        "available_after_credits",
        "description",
        "reference",
        "reservation_id",
        "topup_attempt_id",
        "created_at",
    )
)

WALLET_OF_ORGANIZATION = select(*WALLET_COLUMNS).where(
    WALLETS.c.organization_id == bindparam("organization_id")
)
TRANSACTIONS_OF_ORGANIZATION = select(*TRANSACTION_COLUMNS).where(
    LEDGER.c.organization_id == bindparam("organization_id")
)
LIVE_TOKEN_BY_HASH = select(TOKENS.c.id, TOKENS.c.organization_id, TOKENS.c.scopes).where(
    TOKENS.c.token_hash == bindparam("token_hash"), TOKENS.c.revoked_at.is_(None)
)

Fetch = Callable[[Select[Any], Mapping[str, Any]], Awaitable[list[Any]]]
RowT = TypeVar("RowT")


async def live_token(reader: Reader, token_hash: str) -> Any | None:
    """The live (unrevoked) token with this hash: `id`, `organization_id`, `scopes`."""
    rows = await reader.fetch(LIVE_TOKEN_BY_HASH, {"token_hash": token_hash}, reuse=True)
    return rows[0] if rows else None


async def wallet(reader: Reader, organization_id: int) -> Any | None:
    """The organization's wallet, one attribute per WALLET_COLUMNS; None if it has none."""
    rows = await reader.fetch(
        WALLET_OF_ORGANIZATION, {"organization_id": organization_id}, reuse=True
    )
    return rows[0] if rows else None


@dataclass(frozen=True)
class LedgerFilter:
    kinds: Sequence[str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    reference: str | None = None

    def query(self) -> Select[Any]:
        """The organization's entries with this filter; the prebuilt statement when empty."""
        entries = LEDGER.c
        query = TRANSACTIONS_OF_ORGANIZATION
        if self.kinds:
            # `=` per kind rather than an expanding IN: the driver binds each value as is.
            query = query.where(or_(*(entries.kind == kind for kind in self.kinds)))
        if self.created_after is not None:
            query = query.where(entries.created_at > self.created_after.astimezone(UTC))
        if self.created_before is not None:
            query = query.where(entries.created_at < self.created_before.astimezone(UTC))
        if self.reference is not None:
            query = query.where(entries.reference == self.reference)
        return query


@dataclass(frozen=True)
class Keyset:
    """Which slice of a newest-first list: `size` rows older than `after_id` (or the newest),
    or (`upwards`) `size` rows newer than `before_id` (or the oldest)."""

    size: int
    after_id: int | None = None
    before_id: int | None = None
    upwards: bool = False


@dataclass(frozen=True)
class Slice:
    rows: list[Any]  # newest first
    # More rows lie beyond the slice in the direction read (older; newer when upwards).
    has_more: bool


# Page statements of long-lived base queries, by (base, id column, after?, before?, upwards?).
# The base is kept in the value, so its id cannot be reused while the entry exists.
_STATEMENTS: dict[tuple[int, int, bool, bool, bool], tuple[Select[Any], Select[Any]]] = {}


def page_statement(
    query: Select[Any], id_column: Any, *, after: bool, before: bool, upwards: bool, reuse: bool
) -> Select[Any]:
    """`query` with the keyset conditions and the order, the cursors and the limit as bound
    parameters (`after_id`, `before_id`, `page_limit`). With `reuse` (a base query that lives
    as long as the process), built once per shape, so it is compiled once too."""
    key = (id(query), id(id_column), after, before, upwards)
    if reuse and key in _STATEMENTS:
        return _STATEMENTS[key][1]
    statement = query
    if after:
        statement = statement.where(id_column < bindparam("after_id"))
    if before:
        statement = statement.where(id_column > bindparam("before_id"))
    order = id_column.asc() if upwards else id_column.desc()
    statement = statement.order_by(order).limit(bindparam("page_limit"))
    if reuse:
        _STATEMENTS[key] = (query, statement)
    return statement


async def keyset(
    fetch: Fetch,
    query: Select[Any],
    id_column: Any,
    keys: Keyset,
    params: Mapping[str, Any],
    *,
    reuse: bool = False,
) -> Slice:
    """One keyset slice of `query` (never OFFSET): one statement, `size + 1` rows read to
    know whether more lie beyond."""
    bound = dict(params)
    if keys.after_id is not None:
        bound["after_id"] = keys.after_id
    if keys.before_id is not None:
        bound["before_id"] = keys.before_id
    bound["page_limit"] = keys.size + 1
    statement = page_statement(
        query,
        id_column,
        after=keys.after_id is not None,
        before=keys.before_id is not None,
        upwards=keys.upwards,
        reuse=reuse,
    )
    rows = await fetch(statement, bound)
    has_more = len(rows) > keys.size
    rows = rows[: keys.size]
    return Slice(rows[::-1] if keys.upwards else rows, has_more)


async def ledger(
    reader: Reader, organization_id: int, keys: Keyset, filter: LedgerFilter | None = None
) -> Slice:
    """A slice of the organization's ledger, newest first (rows of TRANSACTION_COLUMNS)."""
    query = (filter or LedgerFilter()).query()
    reuse = query is TRANSACTIONS_OF_ORGANIZATION

    async def fetch(statement: Select[Any], params: Mapping[str, Any]) -> list[Any]:
        return await reader.fetch(statement, params, reuse=reuse)

    return await keyset(
        fetch, query, LEDGER.c.id, keys, {"organization_id": organization_id}, reuse=reuse
    )


async def reservations_by_id(
    session: AsyncSession, ids: Sequence[int]
) -> list[models.Reservation | None]:
    """The reservations with these ids, in order (None where there is none)."""
    return await rows_by_id(session, models.Reservation, ids)


async def approvals_of_reservations(
    session: AsyncSession, reservation_ids: Sequence[int]
) -> list[models.Approval | None]:
    """The approval of each reservation, in order (None for one that needed none)."""
    approval = models.Approval
    query = select(approval).where(col(approval.reservation_id).in_(list(reservation_ids)))
    found = {row.reservation_id: row for row in (await session.execute(query)).scalars()}
    return [found.get(pk) for pk in reservation_ids]


async def rows_by_id(
    session: AsyncSession, table: type[RowT], ids: Sequence[int]
) -> list[RowT | None]:
    """Rows of an ORM table by primary key, in the order asked, in one query."""
    key = col(table.id)  # type: ignore[attr-defined]
    query = select(table).where(key.in_(list(ids)))
    rows = {row.id: row for row in (await session.execute(query)).scalars()}  # type: ignore[attr-defined]
    return [rows.get(pk) for pk in ids]
