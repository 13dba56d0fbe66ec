"""Client idempotency keys: claimed by INSERT under a unique constraint, never check-then-insert.

A key belongs to (organization, operation, key). The first request inserts it and holds a
short lease while it runs; a concurrent request with the same key sees the lease and gets
IdempotencyConflict ("in progress"); a later one with the same input finds the resource the
first one made (a top-up attempt, a reservation) and replays or resumes it; a different
input is IdempotencyConflict. A key whose request changed nothing is removed with the
transaction's rollback, so it is not consumed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .errors import IdempotencyConflict, InvalidInput
from .models import IdempotencyKey

MAX_KEY_LENGTH = 255


def validate_key(key: str | None) -> str:
    if key is None or key == "":
        raise InvalidInput(
            "idempotency_key", "An idempotency key is required (input or Idempotency-Key header)"
        )
    if len(key) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise InvalidInput(
            "idempotency_key", "Idempotency keys are 1-255 printable ASCII characters"
        )
    return key


def fingerprint(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Claim:
    record: IdempotencyKey

    @property
    def resource_id(self) -> int | None:
        return self.record.resource_id


async def claim(
    session: AsyncSession,
    *,
    organization_id: int,
    operation: str,
    key: str,
    request_hash: str,
    now: datetime,
    lease: timedelta,
) -> Claim:
    """Take the key for this request (inside the caller's write transaction)."""
    record = IdempotencyKey(
        organization_id=organization_id,
        operation=operation,
        key=key,
        request_hash=request_hash,
        locked_until=now + lease,
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(record)
            await session.flush()
        return Claim(record)
    except IntegrityError:
        pass
    query = (
        select(IdempotencyKey)
        .where(
            col(IdempotencyKey.organization_id) == organization_id,
            col(IdempotencyKey.operation) == operation,
            col(IdempotencyKey.key) == key,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    existing = (await session.execute(query)).scalar_one()
    if existing.request_hash != request_hash:
        raise IdempotencyConflict(
            "This idempotency key was already used with different input; use a new key"
        )
    if existing.locked_until is not None and existing.locked_until > now:
        raise IdempotencyConflict(
            "A request with this idempotency key is still in progress; retry shortly"
        )
    existing.locked_until = now + lease
    return Claim(existing)


async def unlock(session: AsyncSession, record_id: int) -> None:
    """End the lease: the next request with the key may resume or replay."""
    record = await session.get(IdempotencyKey, record_id, with_for_update=True)
    if record is not None:
        record.locked_until = None
