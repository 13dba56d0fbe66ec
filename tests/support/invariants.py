"""Every test that moves money ends by checking the ledger invariants (docs/invariants.md)."""

from __future__ import annotations

from gql_billing.db import Database
from gql_billing.invariants import check_invariants


async def assert_invariants(db: Database) -> None:
    failed = [f"{c.name}: {c.detail}" for c in await check_invariants(db) if not c.passed]
    assert not failed, failed
