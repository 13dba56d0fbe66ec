"""Per-request dataloaders: one query per kind of object, however many fields ask."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlmodel import col
from strawberry.dataloader import DataLoader

from ..db import Database
from ..models import TopupAttempt


class Loaders:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.topup_attempt = DataLoader[int, TopupAttempt | None](load_fn=self._topup_attempts)

    async def _topup_attempts(self, ids: Sequence[int]) -> list[TopupAttempt | None]:
        async with self._db.read() as session:
            query = select(TopupAttempt).where(col(TopupAttempt.id).in_(list(ids)))
            rows = {row.id: row for row in (await session.execute(query)).scalars()}
        return [rows.get(pk) for pk in ids]
