"""ledger entries by organization and time, for balance history and dated exports

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-01 14:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # balanceHistory reads one organization's entries between two instants, and the last
    # one before the first: with only (organization_id, id) that walks the whole ledger.
    # A plain CREATE INDEX on both backends: nothing here needs SQLite's table copy.
    op.create_index("ix_ledger_org_created", "ledger_entries", ["organization_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_org_created", table_name="ledger_entries")
