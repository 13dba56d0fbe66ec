"""Checks the command line runs before touching a database, so a mistake gets one line that
says what to do instead of a driver's traceback (and a read-only command never creates an
empty SQLite file by opening a path that does not exist)."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import URL, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from .migrate import alembic_config

EXAMPLE_URLS = "sqlite+aiosqlite:///./gql_billing.db or postgresql+asyncpg://user@host:5432/db"
MIGRATE = "run `gql-billing migrate`"


class PreflightError(Exception):
    """What is wrong and what to do, in one line."""


def parse_database_url(url: str) -> URL:
    """The URL, or a PreflightError naming the problem (empty, malformed, not async)."""
    if not url.strip():
        raise PreflightError(f"GQL_BILLING_DATABASE_URL is empty: set it to {EXAMPLE_URLS}")
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise PreflightError(
            f"GQL_BILLING_DATABASE_URL is not a database URL ({_one_line(exc)}): use {EXAMPLE_URLS}"
        ) from None
    if not getattr(dialect, "is_async", False):
        raise PreflightError(
            f"GQL_BILLING_DATABASE_URL names the synchronous driver {parsed.drivername!r}: "
            f"use {EXAMPLE_URLS}"
        )
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """The file of an SQLite URL (None for other backends and in-memory databases)."""
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


async def require_migrated(url: str) -> None:
    """Refuse (PreflightError) a database that is missing, unreachable or behind the code."""
    parsed = parse_database_url(url)
    shown = parsed.render_as_string(hide_password=True)
    path = sqlite_path(parsed)
    if path is not None and not path.exists():
        # Opening it would create an empty file the next command trips over.
        raise PreflightError(
            f"no database at {path}: {MIGRATE} first (or set GQL_BILLING_DATABASE_URL)"
        )
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            try:
                current = (
                    await connection.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            except DBAPIError:
                current = None
    except (SQLAlchemyError, OSError) as exc:
        raise PreflightError(f"cannot open the database {shown}: {_one_line(exc)}") from None
    finally:
        await engine.dispose()
    if current is None:
        raise PreflightError(f"the database {shown} is not migrated: {MIGRATE}")
    if current != head:
        raise PreflightError(
            f"the database {shown} is at schema {current}, this version needs {head}: {MIGRATE}"
        )


def _one_line(exc: BaseException) -> str:
    # Drivers' messages run over several lines (SQL, background links): the first says it.
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return first[0] if first else type(exc).__name__
