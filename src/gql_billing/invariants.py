"""The ledger invariants (docs/invariants.md), checked from the database (tests and operators).

Each check is a query for the rows that break it: none found, the invariant holds. `{org}`
in a query becomes `AND <alias>.organization_id = :org` when one organization is checked
(the operator's `gql-billing report --org`), or nothing when all are.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from .db import Database
from .money import MAX_CREDITS, MAX_DAILY_CAP_AUD


@dataclass(frozen=True)
class Check:
    key: str
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class _Invariant:
    key: str
    name: str
    sql: str
    # The table alias carrying organization_id in `sql`, for the per-organization filter.
    scope: str


_INVARIANTS: list[_Invariant] = [
    _Invariant(
        "running_totals",
        "running totals chain: each entry's totals follow from the previous one and its deltas",
        """
        SELECT e.id FROM ledger_entries e
        LEFT JOIN ledger_entries p ON p.id = (
            SELECT max(id) FROM ledger_entries q
            WHERE q.wallet_id = e.wallet_id AND q.id < e.id)
        WHERE (e.balance_after_credits
              != coalesce(p.balance_after_credits, 0) + e.balance_delta_credits
           OR e.available_after_credits
              != coalesce(p.available_after_credits, 0) + e.available_delta_credits) {org}
        """,
        "e",
    ),
    _Invariant(
        "balance",
        "balance = Σ GRANT + BONUS + REFUND ± ADJUSTMENT − Σ CHARGE",
        """
        SELECT w.id FROM wallets w
        WHERE w.balance_credits != (
            SELECT coalesce(sum(balance_delta_credits), 0) FROM ledger_entries e
            WHERE e.wallet_id = w.id) {org}
        """,
        "w",
    ),
    _Invariant(
        "reserved",
        "reserved = Σ open HELD credits-mode reservations",
        """
        SELECT w.id FROM wallets w
        WHERE w.reserved_credits != (
            SELECT coalesce(sum(r.amount_credits), 0) FROM reservations r
            WHERE r.organization_id = w.organization_id
              AND r.status = 'HELD' AND r.billing_mode = 'CREDITS') {org}
        """,
        "w",
    ),
    _Invariant(
        "available",
        "available = balance − reserved, and the last entry's totals match the wallet",
        """
        SELECT w.id FROM wallets w
        JOIN ledger_entries e ON e.id = (
            SELECT max(id) FROM ledger_entries WHERE wallet_id = w.id)
        WHERE (e.balance_after_credits != w.balance_credits
           OR e.available_after_credits != w.balance_credits - w.reserved_credits) {org}
        """,
        "w",
    ),
    _Invariant(
        "non_negative",
        "available >= 0 and reserved >= 0",
        """
        SELECT w.id FROM wallets w
        WHERE (w.balance_credits - w.reserved_credits < 0 OR w.reserved_credits < 0) {org}
        """,
        "w",
    ),
    _Invariant(
        "grant_once_per_intent",
        "a PaymentIntent grants at most once",
        """
        SELECT e.payment_intent_id FROM ledger_entries e
        WHERE e.kind = 'GRANT' AND e.payment_intent_id IS NOT NULL {org}
        GROUP BY e.payment_intent_id HAVING count(*) > 1
        """,
        "e",
    ),
    _Invariant(
        "grant_per_topup",
        "every succeeded top-up has exactly one GRANT of its amount",
        """
        SELECT t.id FROM topup_attempts t
        WHERE t.status = 'SUCCEEDED' AND (
            SELECT count(*) FROM ledger_entries e
            WHERE e.topup_attempt_id = t.id AND e.kind = 'GRANT'
              AND e.amount_credits = t.aud_cents) != 1 {org}
        """,
        "t",
    ),
    _Invariant(
        "no_unpaid_grant",
        "no GRANT without a succeeded top-up",
        """
        SELECT e.id FROM ledger_entries e
        LEFT JOIN topup_attempts t ON t.id = e.topup_attempt_id
        WHERE e.kind IN ('GRANT', 'BONUS') AND (t.id IS NULL OR t.status != 'SUCCEEDED') {org}
        """,
        "e",
    ),
]

# Every stored amount of credits or cents, by table, with its bound. Tables without an
# organization_id column are read through a subquery that supplies one (alias `x`).
_AMOUNT_COLUMNS: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "wallets",
        "wallets",
        (
            "balance_credits",
            "reserved_credits",
            "auto_threshold_credits",
            "auto_topup_amount_credits",
        ),
    ),
    (
        "ledger_entries",
        "ledger_entries",
        (
            "amount_credits",
            "balance_delta_credits",
            "available_delta_credits",
            "balance_after_credits",
            "available_after_credits",
        ),
    ),
    ("reservations", "reservations", ("amount_credits", "captured_credits")),
    ("approvals", "approvals", ("amount_credits",)),
    ("invoices", "invoices", ("total_credits",)),
    (
        "invoice_lines",
        "(SELECT l.id, i.organization_id, l.amount_credits FROM invoice_lines l"
        " JOIN invoices i ON i.id = l.invoice_id)",
        ("amount_credits",),
    ),
    (
        "topup_attempts",
        "topup_attempts",
        ("aud_cents", "credits_granted", "bonus_credits", "new_balance_credits"),
    ),
    (
        "organizations",
        "(SELECT id, id AS organization_id, approval_threshold_credits FROM organizations)",
        ("approval_threshold_credits",),
    ),
]


def _amounts_in_range(dialect: str) -> _Invariant:
    """Rows holding an amount beyond ±(2^53 − 1) or, on SQLite (whose columns take any
    type), one stored as anything but an integer; the daily cap (whole dollars) within
    GraphQL's Int."""
    columns = [(label, source, c, MAX_CREDITS) for label, source, cs in _AMOUNT_COLUMNS for c in cs]
    columns.append(("wallets", "wallets", "auto_daily_cap_aud", MAX_DAILY_CAP_AUD))
    selects = []
    for label, source, column, bound in columns:
        value = f"x.{column}"
        wrong = f"{value} > {bound} OR {value} < -{bound}"
        if dialect == "sqlite":
            wrong = f"typeof({value}) NOT IN ('integer', 'null') OR {wrong}"
        selects.append(
            f"SELECT '{label}.{column} #' || CAST(x.id AS VARCHAR) FROM {source} x"
            f" WHERE ({wrong}) {{org}}"
        )
    return _Invariant(
        "amounts_in_range",
        "every stored amount is an integer within ±(2^53 − 1)",
        "\nUNION ALL\n".join(selects),
        "x",
    )


INVARIANT_KEYS = (*(invariant.key for invariant in _INVARIANTS), "amounts_in_range")


async def check_invariants(db: Database, organization_id: int | None = None) -> list[Check]:
    """Each invariant with pass/fail and the offending rows (all organizations by default)."""
    params = {} if organization_id is None else {"org": organization_id}
    results = []
    async with db.read() as session:
        invariants = [*_INVARIANTS, _amounts_in_range(session.get_bind().dialect.name)]
        for invariant in invariants:
            sql = text(_scoped(invariant, organization_id))
            try:
                # A savepoint: on PostgreSQL a failed query would abort the rest.
                async with session.begin_nested():
                    rows = (await session.execute(sql, params)).all()
            except DBAPIError as exc:
                # Out-of-range values can make the check's own sums overflow: that fails it.
                detail = f"could not be checked: {type(exc.orig).__name__}: {exc.orig}"
                results.append(Check(invariant.key, invariant.name, False, detail))
                continue
            offenders = ", ".join(str(r[0]) for r in rows[:10])
            detail = f"offending: {offenders}" if rows else "ok"
            results.append(Check(invariant.key, invariant.name, not rows, detail))
    return results


def _scoped(invariant: _Invariant, organization_id: int | None) -> str:
    scope = "" if organization_id is None else f"AND {invariant.scope}.organization_id = :org"
    return invariant.sql.replace("{org}", scope)
