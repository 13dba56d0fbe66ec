"""The benchmark's data: organizations, tokens, and ledgers of 1,000 and 1,000,000 entries.

Organizations, wallets and tokens go through the gateway's own services; the bulk ledger rows
are inserted directly with SQL (executemany in batches on SQLite, COPY on PostgreSQL) with
running totals that chain, so `gql-billing report` finds the invariants intact.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from gql_billing import auth
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.db import Database, is_sqlite, postgres_dsn
from gql_billing.graphql.ids import to_global_id
from gql_billing.models import Plan

BATCH = 50_000
# Enough for every reserve+capture pair a run makes (one credit each).
WRITE_ORG_CREDITS = 10**12

COLUMNS = (
    "organization_id",
    "wallet_id",
    "kind",
    "amount_credits",
    "balance_delta_credits",
    "available_delta_credits",
    "balance_after_credits",
    "available_after_credits",
    "description",
    "created_at",
)
INSERT_ENTRY = f"INSERT INTO ledger_entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 10)})"


@dataclass(frozen=True)
class Org:
    pk: int
    global_id: str
    token: str


@dataclass(frozen=True)
class Seeded:
    small: Org  # 1,000 ledger entries
    large: Org  # 1,000,000 ledger entries
    writes: Org  # reserve+capture pairs spend from here
    topups: Org  # a saved card is attached to this one later
    service_token: str  # billing:spend, for reserveCredits / captureReservation


def sqlite_path(database_url: str) -> Path:
    return Path(database_url.split("///", 1)[1])


async def _org(db: Database, name: str, scopes: frozenset[auth.Scope]) -> Org:
    org = await create_organization(db, name=name, plan=Plan.STANDARD)
    assert org.id is not None
    issued = await auth.issue_token(db, organization_id=org.id, scopes=scopes, name="bench")
    return Org(org.id, to_global_id("Organization", org.id), issued.token)


async def _services(database_url: str) -> Seeded:
    db = Database(database_url)
    read_write = frozenset({auth.Scope.BILLING_READ, auth.Scope.BILLING_WRITE})
    try:
        small = await _org(db, "Bench small ledger", read_write)
        large = await _org(db, "Bench large ledger", read_write)
        writes = await _org(db, "Bench writes", read_write)
        topups = await _org(db, "Bench top-ups", read_write)
        await grant_credits(
            db, organization_id=writes.pk, amount_credits=WRITE_ORG_CREDITS, reason="Bench"
        )
        service = await auth.issue_token(
            db, organization_id=None, scopes=auth.SERVICE_SCOPES, name="bench service"
        )
    finally:
        await db.dispose()
    return Seeded(small, large, writes, topups, service.token)


def _wallet_id(conn: sqlite3.Connection, organization_id: int) -> int:
    row = conn.execute(
        "SELECT id FROM wallets WHERE organization_id = ?", (organization_id,)
    ).fetchone()
    return int(row[0])


def _entries(
    organization_id: int, wallet_id: int, count: int, stamp: Any
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of `count` adjustments (+1000, +1000, -700, ...) ending now, in batches, with
    running totals that chain; `stamp` turns a naive UTC datetime into the column's value."""
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=count + 60)
    balance = 0
    for first in range(0, count, BATCH):
        rows = []
        for i in range(first, min(first + BATCH, count)):
            delta = -700 if i % 3 == 2 else 1000
            balance += delta
            rows.append(
                (
                    organization_id,
                    wallet_id,
                    "ADJUSTMENT",
                    abs(delta),
                    delta,
                    delta,
                    balance,
                    balance,
                    f"Bench adjustment {i}",
                    stamp(start + timedelta(seconds=i)),
                )
            )
        yield rows


def _final_balance(count: int) -> int:
    return sum(-700 if i % 3 == 2 else 1000 for i in range(count))


def bulk_ledger(path: Path, organization_id: int, count: int) -> int:
    """Append `count` adjustments (+1000, +1000, -700, ...) ending now; returns the balance."""
    conn = sqlite3.connect(path)
    try:
        wallet_id = _wallet_id(conn, organization_id)
        with conn:
            for rows in _entries(
                organization_id,
                wallet_id,
                count,
                lambda at: at.isoformat(sep=" ", timespec="microseconds"),
            ):
                conn.executemany(INSERT_ENTRY, rows)
            balance = _final_balance(count)
            conn.execute(
                "UPDATE wallets SET balance_credits = ?, reserved_credits = 0 WHERE id = ?",
                (balance, wallet_id),
            )
        return balance
    finally:
        conn.close()


async def bulk_ledger_postgres(dsn: str, organization_id: int, count: int) -> int:
    """The same on PostgreSQL, with COPY."""
    conn = await asyncpg.connect(dsn)
    try:
        wallet_id = await conn.fetchval(
            "SELECT id FROM wallets WHERE organization_id = $1", organization_id
        )
        async with conn.transaction():
            for rows in _entries(organization_id, wallet_id, count, lambda at: at):
                await conn.copy_records_to_table("ledger_entries", records=rows, columns=COLUMNS)
            balance = _final_balance(count)
            await conn.execute(
                "UPDATE wallets SET balance_credits = $1, reserved_credits = 0 WHERE id = $2",
                balance,
                wallet_id,
            )
        await conn.execute("ANALYZE ledger_entries")
        return balance
    finally:
        await conn.close()


def seed(database_url: str, *, small_entries: int, large_entries: int) -> Seeded:
    """Orgs and tokens through the services, then the bulk ledgers (database already migrated)."""
    seeded = asyncio.run(_services(database_url))
    for org, count in ((seeded.small, small_entries), (seeded.large, large_entries)):
        if is_sqlite(database_url):
            bulk_ledger(sqlite_path(database_url), org.pk, count)
        else:
            asyncio.run(bulk_ledger_postgres(postgres_dsn(database_url), org.pk, count))
    return seeded


async def _pg_customer(dsn: str, organization_id: int) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT stripe_customer_id FROM organizations WHERE id = $1", organization_id
        )
    finally:
        await conn.close()


def stripe_customer(database_url: str, organization_id: int) -> str:
    if is_sqlite(database_url):
        conn = sqlite3.connect(sqlite_path(database_url))
        try:
            row = conn.execute(
                "SELECT stripe_customer_id FROM organizations WHERE id = ?", (organization_id,)
            ).fetchone()
        finally:
            conn.close()
        customer = None if row is None else row[0]
    else:
        customer = asyncio.run(_pg_customer(postgres_dsn(database_url), organization_id))
    assert customer, "the organization has no Stripe customer yet"
    return str(customer)
