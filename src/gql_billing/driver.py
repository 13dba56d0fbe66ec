"""Hot reads on the database driver itself: Core statements compiled once, no session.

A request's reads (the token, the wallet, a page of the ledger) cost little in the database;
what cost most was the way there. Through an `AsyncSession` on aiosqlite every statement is
a cursor, an execute, a fetch and a close, each a hop to the connection's thread and back,
and each hop waits for the GIL behind the event loop. So the hot reads run here instead:

- SQLite: one plain `sqlite3` connection per process, used on the event loop's own thread.
  A read of a few indexed rows takes tens of microseconds, far less than one hop to a
  thread; in WAL mode a reader never waits for the writer, and the reads of one unit of work
  run between `BEGIN` and `COMMIT` without yielding to the loop, so they share a snapshot.
  `query_only` makes the connection unable to write, whatever it is given.
- PostgreSQL: a small asyncpg pool; asyncpg prepares each statement text once per
  connection, and a unit of work runs its reads on one connection in one transaction.

Statements are compiled once per statement object (long-lived ones are built at import) for
the engine's dialect; results go through the columns' own result processors (aware UTC
datetimes), so rows read here equal rows read through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy import Select, make_url
from sqlalchemy.engine import Dialect

T = TypeVar("T")

# asyncpg connections kept for hot reads: reads are short, a few cover a process.
PG_POOL_SIZE = 4


@dataclass(frozen=True)
class Compiled:
    sql: str
    # Bound parameter names in the order the driver takes them.
    names: tuple[str, ...]
    # Values bound in the statement itself (literals such as `kind = 'GRANT'`), by name.
    fixed: Mapping[str, Any]
    bind_processors: Mapping[str, Callable[[Any], Any]]
    row: type[tuple[Any, ...]]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def parameters(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name in self.names:
            value = params[name] if name in params else self.fixed[name]
            process = self.bind_processors.get(name)
            values.append(value if process is None else process(value))
        return values

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Any]:
        processors, row = self.processors, self.row
        if not any(processors):
            return [row(*values) for values in raw]
        return [
            row(*(v if p is None else p(v) for p, v in zip(processors, values, strict=True)))
            for values in raw
        ]


def compile_select(statement: Select[Any], dialect: Dialect) -> Compiled:
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    keys = [str(column.key) for column in statement.selected_columns]
    processors = tuple(
        column.type._cached_result_processor(dialect, None) for column in statement.selected_columns
    )
    fixed = {k: v for k, v in compiled.params.items() if v is not None}
    return Compiled(
        sql=compiled.string,
        names=names,
        fixed=fixed,
        # Scalar processors only: these statements bind no tuples.
        bind_processors={k: v for k, v in compiled._bind_processors.items() if callable(v)},
        row=namedtuple("Row", keys, rename=True),
        processors=processors,
    )


class Reader(Protocol):
    """What a unit of read work is given: run a select, get its rows (attribute access)."""

    async def fetch(
        self, statement: Select[Any], params: Mapping[str, Any], *, reuse: bool = False
    ) -> list[Any]:
        """`reuse`: the statement object lives as long as the process (compiled once)."""
        ...


class DriverReads:
    """Units of read work on the driver; see the module's docstring."""

    def __init__(self, url: str, dialect: Dialect, *, busy_timeout_ms: int) -> None:
        self._url = make_url(url)
        self._dialect = dialect
        self._busy_timeout_ms = busy_timeout_ms
        self.sqlite = self._url.get_backend_name() == "sqlite"
        # Compiled forms by statement; the statement is kept in the value so its id stays
        # its own. Only long-lived statements are cached (`reuse`); others compile per use.
        self._compiled: dict[int, tuple[Select[Any], Compiled]] = {}
        self._sqlite: sqlite3.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    def compiled(self, statement: Select[Any], *, reuse: bool) -> Compiled:
        if reuse:
            found = self._compiled.get(id(statement))
            if found is not None:
                return found[1]
        result = compile_select(statement, self._dialect)
        if reuse:
            self._compiled[id(statement)] = (statement, result)
        return result

    async def run(self, work: Callable[[Reader], Coroutine[Any, Any, T]]) -> T:
        """`work` with a reader whose selects all see one transaction."""
        if self.sqlite:
            return await self._run_sqlite(work)
        pool = await self._postgres_pool()
        async with pool.acquire() as connection, connection.transaction(readonly=True):
            return await work(_PostgresReader(self, connection))

    async def _run_sqlite(self, work: Callable[[Reader], Coroutine[Any, Any, T]]) -> T:
        connection = self._sqlite_connection()
        reader = _SqliteReader(self, connection)
        connection.execute("BEGIN")
        try:
            coroutine = work(reader)
            # The reader never suspends, so neither does `work` unless it awaits something
            # else; running it by hand keeps BEGIN..COMMIT in one turn of the event loop.
            try:
                coroutine.send(None)
            except StopIteration as done:
                result: T = done.value
                return result
            coroutine.close()
            raise RuntimeError("a unit of SQLite read work awaited something else")
        finally:
            connection.execute("COMMIT")

    def _sqlite_connection(self) -> sqlite3.Connection:
        if self._sqlite is None:
            database = self._url.database or ""
            connection = sqlite3.connect(
                database,
                isolation_level=None,
                check_same_thread=False,
                timeout=min(self._busy_timeout_ms, 1000) / 1000,
            )
            # A WAL reader is busy only in rare moments (recovery); waiting blocks the loop.
            connection.execute(f"PRAGMA busy_timeout={min(int(self._busy_timeout_ms), 1000)}")
            connection.execute("PRAGMA query_only=ON")
            self._sqlite = connection
        return self._sqlite

    async def _postgres_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    dsn = self._url.set(drivername="postgresql").render_as_string(
                        hide_password=False
                    )
                    self._pool = await asyncpg.create_pool(dsn, min_size=1, max_size=PG_POOL_SIZE)
        return self._pool

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class _SqliteReader:
    def __init__(self, reads: DriverReads, connection: sqlite3.Connection) -> None:
        self._reads = reads
        self._connection = connection

    async def fetch(
        self, statement: Select[Any], params: Mapping[str, Any], *, reuse: bool = False
    ) -> list[Any]:
        compiled = self._reads.compiled(statement, reuse=reuse)
        cursor = self._connection.execute(compiled.sql, compiled.parameters(params))
        return compiled.rows(cursor.fetchall())


class _PostgresReader:
    def __init__(self, reads: DriverReads, connection: asyncpg.Connection) -> None:
        self._reads = reads
        self._connection = connection

    async def fetch(
        self, statement: Select[Any], params: Mapping[str, Any], *, reuse: bool = False
    ) -> list[Any]:
        compiled = self._reads.compiled(statement, reuse=reuse)
        records = await self._connection.fetch(compiled.sql, *compiled.parameters(params))
        return compiled.rows(records)
