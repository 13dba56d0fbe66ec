"""The raw baseline's database access: the driver itself, no ORM and no project code.

SQLite through aiosqlite: one connection for reads and one for writes per process (writes
serialised by an asyncio lock and run as `BEGIN IMMEDIATE` transactions, so the write lock is
taken up front), set up with the same PRAGMAs the app uses. PostgreSQL through asyncpg: a
small pool, each unit of work on one connection, writes in a transaction that locks the rows
it settles with `SELECT ... FOR UPDATE`.

Statements are written once with `?` placeholders; the PostgreSQL side numbers them ($1, $2,
...) once per statement text. Timestamps are stored as the app stores them: naive UTC
(SQLite keeps `YYYY-MM-DD HH:MM:SS.ffffff` text, PostgreSQL a `timestamp`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

import aiosqlite
import asyncpg

# Where the app announces wallet changes to live subscribers on PostgreSQL (delivered at
# commit); a write that moves a wallet sends it too.
WALLET_CHANNEL = "gql_billing_wallet"
PG_POOL_SIZE = 4


class Queries(Protocol):
    """What a route needs from one connection."""

    backend: str

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None: ...

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]: ...

    def stamp(self, moment: datetime) -> Any:
        """An aware UTC datetime as the column stores it."""
        ...

    def iso(self, stored: Any) -> str:
        """A stored timestamp as the GraphQL `DateTime` scalar prints it."""
        ...

    async def announce(self, organization_id: int) -> None: ...


class Driver(Protocol):
    def reading(self) -> Any: ...  # an async context manager yielding Queries

    def writing(self) -> Any: ...  # the same, inside one write transaction

    async def close(self) -> None: ...


@lru_cache(maxsize=64)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`, ..."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


class SqliteQueries:
    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        # One hop to the connection's thread per statement (execute and fetch together).
        rows = await self._conn.execute_fetchall(sql, args)
        return rows[0] if rows else None  # type: ignore[index]

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return list(await self._conn.execute_fetchall(sql, args))

    def stamp(self, moment: datetime) -> Any:
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        return naive.isoformat(sep=" ", timespec="microseconds")

    def iso(self, stored: Any) -> str:
        return datetime.fromisoformat(stored).replace(tzinfo=UTC).isoformat()

    async def announce(self, organization_id: int) -> None:
        """Nothing to send: on SQLite the app tells its live subscribers in-process."""


class SqliteDriver:
    def __init__(self, reader: aiosqlite.Connection, writer: aiosqlite.Connection) -> None:
        self._read = SqliteQueries(reader)
        self._reader = reader
        self._write = SqliteQueries(writer)
        self._writer = writer
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteDriver:
        async def connect() -> aiosqlite.Connection:
            conn = await aiosqlite.connect(path, isolation_level=None)
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA busy_timeout=15000",
                "PRAGMA foreign_keys=ON",
                "PRAGMA synchronous=NORMAL",
            ):
                await conn.execute(pragma)
            return conn

        return cls(await connect(), await connect())

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Queries]:
        yield self._read

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Queries]:
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._write
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()


class PostgresQueries:
    backend = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._conn.fetchrow(numbered(sql), *args)
        return row

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self._conn.fetch(numbered(sql), *args)
        return rows

    def stamp(self, moment: datetime) -> Any:
        return moment.astimezone(UTC).replace(tzinfo=None)

    def iso(self, stored: Any) -> str:
        moment: datetime = stored
        return moment.replace(tzinfo=UTC).isoformat()

    async def announce(self, organization_id: int) -> None:
        await self._conn.execute("SELECT pg_notify($1, $2)", WALLET_CHANNEL, str(organization_id))


class PostgresDriver:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresDriver:
        pool = await asyncpg.create_pool(dsn, min_size=PG_POOL_SIZE, max_size=PG_POOL_SIZE)
        return cls(pool)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Queries]:
        async with self._pool.acquire() as conn:
            yield PostgresQueries(conn)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Queries]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresQueries(conn)

    async def close(self) -> None:
        await self._pool.close()


async def open_driver(database_url: str) -> Driver:
    """From the app's own setting (`sqlite+aiosqlite:///path`, `postgresql+asyncpg://...`)."""
    scheme, _, rest = database_url.partition("://")
    if scheme.startswith("sqlite"):
        return await SqliteDriver.open(rest.removeprefix("/"))
    if scheme.startswith("postgresql"):
        return await PostgresDriver.open(f"postgresql://{rest}")
    raise SystemExit(f"unsupported database URL: {database_url}")
