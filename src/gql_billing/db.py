"""Engine and transactions: the only module that knows SQLite from PostgreSQL.

Writes go through `Database.write()`: on SQLite a `BEGIN IMMEDIATE` transaction (the write
lock is taken up front, so two writers never deadlock upgrading read locks), serialised
in-process by an asyncio lock so waiting happens in the event loop instead of in SQLite's
busy handler; on PostgreSQL a normal transaction in which callers lock rows with
`SELECT ... FOR UPDATE` (which SQLAlchemy leaves out on SQLite, where the immediate
transaction already holds the whole database).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import ColumnElement, Date, Row, Select, bindparam, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .driver import DriverReads

WALLETS_CHANGED = "wallets_changed"


def postgres_dsn(url: str) -> str:
    """The plain libpq DSN of an SQLAlchemy PostgreSQL URL (for a raw asyncpg connection)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class Database:
    def __init__(self, url: str, *, busy_timeout_ms: int = 15000) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        if self.sqlite:
            self.read_engine = _sqlite_engine(url, busy_timeout_ms, "BEGIN")
            self.write_engine = _sqlite_engine(url, busy_timeout_ms, "BEGIN IMMEDIATE")
        else:
            # At most 20 connections a process (plus the driver's 4 for hot reads): several
            # servers and workers share one PostgreSQL (100 connections by default), and a
            # request waiting a moment for a pooled connection beats one refused by the server.
            self.read_engine = create_async_engine(url, pool_size=10, max_overflow=10)
            self.write_engine = self.read_engine
        # The hot reads (token, wallet, ledger page) go to the driver itself: driver.py.
        self.driver = DriverReads(url, self.read_engine.dialect, busy_timeout_ms=busy_timeout_ms)
        self._write_lock: asyncio.Lock | None = None
        # Told, after each committed write, which organizations' wallets it moved.
        self.on_wallets_changed: list[Callable[[set[int]], None]] = []
        # Told the ids of tokens revoked through this object (each process's token cache).
        self.on_tokens_revoked: list[Callable[[set[int]], None]] = []

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self.read_engine, expire_on_commit=False) as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed on success, rolled back on any exception."""
        async with self._transaction() as session:
            yield session
        changed: set[int] = session.info.pop(WALLETS_CHANGED, set())
        if changed:
            for listener in self.on_wallets_changed:
                listener(changed)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        if not self.sqlite:
            async with (
                AsyncSession(self.write_engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session
            return
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with (
            self._write_lock,
            AsyncSession(self.write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    async def batches(
        self,
        query: Select[Any],
        newest_first_by: ColumnElement[int],
        *,
        size: int,
        params: Mapping[str, Any],
    ) -> AsyncIterator[Sequence[Row[Any]]]:
        """`query`'s rows, newest first by the (unique) `newest_first_by` column, `size` at a
        time, so a million rows never sit in memory at once.

        PostgreSQL: one server-side cursor (asyncpg), read `size` rows a fetch. SQLite: keyset
        batches (`WHERE id < :last ORDER BY id DESC LIMIT :size`), each in its own short read
        transaction: one read held open for a whole export would keep SQLite from
        checkpointing its write-ahead log while writers go on appending to it. Rows appended
        meanwhile have larger ids, so they never show up after the first batch either way."""
        ordered = query.order_by(newest_first_by.desc())
        if not self.sqlite:
            async with self.read() as session:
                result = await session.stream(
                    ordered.execution_options(yield_per=size), dict(params)
                )
                async for partition in result.partitions():
                    yield partition
            return
        first = ordered.limit(size)
        later = ordered.where(newest_first_by < bindparam("before_key")).limit(size)
        bound = dict(params)
        statement = first
        while True:
            async with self.read() as session:
                rows = (await session.execute(statement, bound)).all()
            if rows:
                yield rows
            if len(rows) < size:
                return
            bound["before_key"] = rows[-1]._mapping[newest_first_by]
            statement = later

    async def dispose(self) -> None:
        await self.driver.close()
        await self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            await self.write_engine.dispose()


# Connections kept open per engine, and how many more a burst may open (closed again when
# returned). An SQLite connection is a file handle and a thread: keeping ten avoids opening
# and closing one (a thread, the file, four PRAGMAs) for every request above five at a steady
# load of several concurrent requests; keeping many more measured slower under a burst of
# 32 top-ups (more threads waking for the GIL).
SQLITE_POOL_SIZE = 10
SQLITE_MAX_OVERFLOW = 40


def _sqlite_engine(url: str, busy_timeout_ms: int, begin_sql: str) -> AsyncEngine:
    engine = create_async_engine(
        url,
        connect_args={"timeout": busy_timeout_ms / 1000},
        pool_size=SQLITE_POOL_SIZE,
        max_overflow=SQLITE_MAX_OVERFLOW,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN
        # would be deferred and could not become IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin_sql)

    return engine


class utc_day(FunctionElement[Any]):
    """The UTC calendar day of a stored timestamp (stored as naive UTC on both backends)."""

    type = Date()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # 'YYYY-MM-DD' text, which the Date type reads back as a date.
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DATE)"
