"""The write path's limit: reserve+capture pairs as bare SQL over aiosqlite, in one process.

The same rows change as when `reserveCredits` then `captureReservation` run through GraphQL
for a STANDARD organization with credits: reserve claims the idempotency key, inserts the
reservation, moves the wallet (one conditional UPDATE ... RETURNING) and appends the
RESERVATION entry; capture settles the reservation, moves the wallet and appends the CHARGE
entry. One `BEGIN IMMEDIATE` transaction each, the connection set up as `gql_billing.db`
sets its own (WAL, synchronous=NORMAL, foreign keys on).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import aiosqlite

RESERVE_KEY = """
INSERT INTO idempotency_keys
    (organization_id, operation, key, request_hash, resource_id, locked_until, created_at)
VALUES (?, 'reserveCredits', ?, ?, NULL, ?, ?)
"""
RESERVE_ROW = """
INSERT INTO reservations (organization_id, status, billing_mode, amount_credits,
    captured_credits, reference, description, stripe_key, created_at)
VALUES (?, 'HELD', 'CREDITS', 1, 0, ?, '', ?, ?)
"""
RESOLVE_KEY = "UPDATE idempotency_keys SET resource_id = ?, locked_until = NULL WHERE id = ?"
MOVE = """
UPDATE wallets SET balance_credits = balance_credits + ?, reserved_credits = reserved_credits + ?,
    updated_at = ?
WHERE organization_id = ? AND balance_credits + ? - (reserved_credits + ?) >= 0
    AND reserved_credits + ? >= 0
RETURNING id, balance_credits, reserved_credits
"""
ENTRY = """
INSERT INTO ledger_entries (organization_id, wallet_id, kind, amount_credits,
    balance_delta_credits, available_delta_credits, balance_after_credits,
    available_after_credits, description, reference, reservation_id, created_at)
VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)
"""
SETTLE = """
UPDATE reservations SET status = 'CAPTURED', captured_credits = 1, settled_at = ?
WHERE id = ? AND status = 'HELD'
"""


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def _move(
    conn: aiosqlite.Connection,
    org: int,
    kind: str,
    balance_delta: int,
    available_delta: int,
    reservation_id: int,
    reference: str,
) -> None:
    now = _now()
    reserved_delta = balance_delta - available_delta
    cursor = await conn.execute(
        MOVE,
        (
            balance_delta,
            reserved_delta,
            now,
            org,
            balance_delta,
            reserved_delta,
            reserved_delta,
        ),
    )
    row = await cursor.fetchone()
    await cursor.close()
    assert row is not None, "the bench organization ran out of credits"
    wallet_id, balance, reserved = row
    await conn.execute(
        ENTRY,
        (
            org,
            wallet_id,
            kind,
            balance_delta,
            available_delta,
            balance,
            balance - reserved,
            f"{kind} {reference}",
            reference,
            reservation_id,
            now,
        ),
    )


async def pair(conn: aiosqlite.Connection, org: int, reference: str) -> None:
    now = _now()
    await conn.execute("BEGIN IMMEDIATE")
    cursor = await conn.execute(RESERVE_KEY, (org, reference, "0" * 64, now, now))
    key_id = cursor.lastrowid
    cursor = await conn.execute(RESERVE_ROW, (org, reference, uuid.uuid4().hex, now))
    reservation_id = cursor.lastrowid
    assert reservation_id is not None
    await conn.execute(RESOLVE_KEY, (reservation_id, key_id))
    await _move(conn, org, "RESERVATION", 0, -1, reservation_id, reference)
    await conn.execute("COMMIT")

    await conn.execute("BEGIN IMMEDIATE")
    await conn.execute(SETTLE, (_now(), reservation_id))
    await _move(conn, org, "CHARGE", -1, 0, reservation_id, reference)
    await conn.execute("COMMIT")


async def pairs_per_second(path: str, org: int, *, seconds: float, run: str) -> float:
    """Pairs done back to back for `seconds`; the rate."""
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=15000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA synchronous=NORMAL")
        done = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            await pair(conn, org, f"direct-{run}-{done}")
            done += 1
        return done / elapsed
