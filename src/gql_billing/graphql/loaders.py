"""Per-request dataloaders: one query per kind of object, however many fields ask, and one
read session for all the reads asked in the same turn of the event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from strawberry.dataloader import DataLoader

from ..db import Database
from ..models import Reservation, TopupAttempt

T = TypeVar("T")
RowT = TypeVar("RowT", TopupAttempt, Reservation)
Read = Callable[[AsyncSession], Awaitable[Any]]


class Loaders:
    def __init__(self, db: Database) -> None:
        # Module functions, not bound methods, as load_fn: a loader holding its owner would
        # make every request's loaders a reference cycle, left for the garbage collector.
        # Not cached: each read is its own query; what they share is the session.
        self._reads = DataLoader[Read, Any](load_fn=partial(_read_together, db), cache=False)
        self.topup_attempt = DataLoader[int, TopupAttempt | None](
            load_fn=partial(_rows_by_id, self._reads, TopupAttempt)
        )
        self.reservation = DataLoader[int, Reservation | None](
            load_fn=partial(_rows_by_id, self._reads, Reservation)
        )

    async def read(self, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`await query(session)`, in a read session shared with the other reads of this turn:
        the root fields of `{ wallet {...} transactions {...} }` open one session, not two."""
        result: T = await self._reads.load(query)
        return result


async def _read_together(db: Database, reads: Sequence[Read]) -> list[Any]:
    results: list[Any] = []
    async with db.read() as session:
        for read in reads:
            try:
                results.append(await read(session))
            except Exception as exc:  # the field that asked fails, not its siblings
                results.append(exc)
    return results


async def _rows_by_id(
    reads: DataLoader[Read, Any], table: type[RowT], ids: Sequence[int]
) -> list[RowT | None]:
    rows: list[RowT | None] = await reads.load(partial(_by_id, table, ids))
    return rows


async def _by_id(table: type[RowT], ids: Sequence[int], session: AsyncSession) -> list[RowT | None]:
    query = select(table).where(col(table.id).in_(list(ids)))
    rows = {row.id: row for row in (await session.execute(query)).scalars()}
    return [rows.get(pk) for pk in ids]
