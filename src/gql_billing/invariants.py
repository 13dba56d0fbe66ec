"""The ledger invariants of SPEC §8, checked from the database (tests and operators)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from .db import Database


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


_CHECKS: list[tuple[str, str]] = [
    (
        "running totals chain: each entry's totals follow from the previous one and its deltas",
        """
        SELECT e.id FROM ledger_entries e
        LEFT JOIN ledger_entries p ON p.id = (
            SELECT max(id) FROM ledger_entries q
            WHERE q.wallet_id = e.wallet_id AND q.id < e.id)
        WHERE e.balance_after_credits
              != coalesce(p.balance_after_credits, 0) + e.balance_delta_credits
           OR e.available_after_credits
              != coalesce(p.available_after_credits, 0) + e.available_delta_credits
        """,
    ),
    (
        "balance = Σ GRANT + BONUS + REFUND ± ADJUSTMENT − Σ CHARGE",
        """
        SELECT w.id FROM wallets w
        WHERE w.balance_credits != (
            SELECT coalesce(sum(balance_delta_credits), 0) FROM ledger_entries e
            WHERE e.wallet_id = w.id)
        """,
    ),
    (
        "available = balance − reserved, and the last entry's totals match the wallet",
        """
        SELECT w.id FROM wallets w
        JOIN ledger_entries e ON e.id = (
            SELECT max(id) FROM ledger_entries WHERE wallet_id = w.id)
        WHERE e.balance_after_credits != w.balance_credits
           OR e.available_after_credits != w.balance_credits - w.reserved_credits
        """,
    ),
    (
        "available >= 0 and reserved >= 0",
        """
        SELECT id FROM wallets
        WHERE balance_credits - reserved_credits < 0 OR reserved_credits < 0
        """,
    ),
    (
        "a PaymentIntent grants at most once",
        """
        SELECT payment_intent_id FROM ledger_entries
        WHERE kind = 'GRANT' AND payment_intent_id IS NOT NULL
        GROUP BY payment_intent_id HAVING count(*) > 1
        """,
    ),
    (
        "every succeeded top-up has exactly one GRANT of its amount",
        """
        SELECT t.id FROM topup_attempts t
        WHERE t.status = 'SUCCEEDED' AND (
            SELECT count(*) FROM ledger_entries e
            WHERE e.topup_attempt_id = t.id AND e.kind = 'GRANT'
              AND e.amount_credits = t.aud_cents) != 1
        """,
    ),
    (
        "no GRANT without a succeeded top-up",
        """
        SELECT e.id FROM ledger_entries e
        LEFT JOIN topup_attempts t ON t.id = e.topup_attempt_id
        WHERE e.kind IN ('GRANT', 'BONUS') AND (t.id IS NULL OR t.status != 'SUCCEEDED')
        """,
    ),
]


async def check_invariants(db: Database, organization_id: int | None = None) -> list[Check]:
    """Each invariant with pass/fail and the offending rows (all organizations by default)."""
    del organization_id  # the checks are cheap enough to run over everything
    results = []
    async with db.read() as session:
        for name, sql in _CHECKS:
            rows = (await session.execute(text(sql))).all()
            offenders = ", ".join(str(r[0]) for r in rows[:10])
            results.append(Check(name, not rows, f"offending: {offenders}" if rows else "ok"))
    return results
