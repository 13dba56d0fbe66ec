"""A clean database for every test, on SQLite (a copied file) or PostgreSQL (a database
created from a migrated template), chosen by GQL_BILLING_TEST_BACKEND."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import asyncpg

from gql_billing import migrate

BACKEND = os.environ.get("GQL_BILLING_TEST_BACKEND", "sqlite")
# Where PostgreSQL runs (trust auth); tests create and drop their own databases there.
PG_ADMIN_DSN = os.environ.get(
    "GQL_BILLING_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def pg_url(database: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


async def pg_reachable() -> bool:
    try:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


class PostgresDatabases:
    """A migrated template, then `CREATE DATABASE ... TEMPLATE` per test (fast)."""

    def __init__(self) -> None:
        self.prefix = f"gqlb_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_template"

    def create_template(self) -> None:
        asyncio.run(_admin(f'CREATE DATABASE "{self.template}"'))
        migrate.upgrade(pg_url(self.template))

    def drop_template(self) -> None:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))

    async def create(self) -> tuple[str, str]:
        name = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name, pg_url(name)

    async def drop(self, name: str) -> None:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def sqlite_copy(template: Path, directory: Path) -> str:
    path = directory / "billing.db"
    shutil.copy(template, path)
    return f"sqlite+aiosqlite:///{path}"
