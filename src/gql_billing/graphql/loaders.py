"""Per-request dataloaders: one query per kind of object, however many fields ask, and one
unit of read work for all the reads asked in the same turn of the event loop: the root
fields of `{ wallet {...} transactions {...} }` read in one transaction, not two."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from ..db import Database
from ..driver import Reader
from ..models import Approval, Reservation, TopupAttempt
from ..reads import approvals_of_reservations, rows_by_id

T = TypeVar("T")
RowT = TypeVar("RowT", TopupAttempt, Reservation)
Read = Callable[[AsyncSession], Awaitable[Any]]
DirectRead = Callable[[Reader], Awaitable[Any]]


class Loaders:
    def __init__(self, db: Database) -> None:
        # Module functions, not bound methods, as load_fn: a loader holding its owner would
        # make every request's loaders a reference cycle, left for the garbage collector.
        # Not cached: each read is its own query; what they share is the session.
        self._reads = DataLoader[Read, Any](load_fn=partial(_read_together, db), cache=False)
        self._direct = DataLoader[DirectRead, Any](
            load_fn=partial(_direct_together, db), cache=False
        )
        self.topup_attempt = DataLoader[int, TopupAttempt | None](
            load_fn=partial(_rows_by_id, self._reads, TopupAttempt)
        )
        self.reservation = DataLoader[int, Reservation | None](
            load_fn=partial(_rows_by_id, self._reads, Reservation)
        )
        self.approval_of_reservation = DataLoader[int, Approval | None](
            load_fn=partial(_approvals_of_reservations, self._reads)
        )

    async def read(self, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`await query(session)`, in a read session shared with the other reads of this turn:
        the root fields of `{ wallet {...} transactions {...} }` open one session, not two."""
        result: T = await self._reads.load(query)
        return result

    async def direct(self, query: Callable[[Reader], Awaitable[T]]) -> T:
        """`await query(reader)` on the driver (reads.py, driver.py), in one unit of read
        work shared with the other direct reads of this turn."""
        result: T = await self._direct.load(query)
        return result


async def _direct_together(db: Database, reads: Sequence[DirectRead]) -> list[Any]:
    async def work(reader: Reader) -> list[Any]:
        results: list[Any] = []
        for read in reads:
            try:
                results.append(await read(reader))
            except Exception as exc:  # the field that asked fails, not its siblings
                results.append(exc)
        return results

    return await db.driver.run(work)


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
    return await rows_by_id(session, table, ids)


async def _approvals_of_reservations(
    reads: DataLoader[Read, Any], reservation_ids: Sequence[int]
) -> list[Approval | None]:
    found: list[Approval | None] = await reads.load(
        partial(approvals_of_reservations, reservation_ids=reservation_ids)
    )
    return found
