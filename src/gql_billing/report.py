"""`gql-billing report --org ID`: an operator's view of one organization's money.

The wallet, the ledger totals by kind, every ledger invariant (docs/invariants.md) for that
organization (passed or failed), and its recent top-ups and reservations — as `rich` tables or JSON.
Read-only: it reads from the database and never calls Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlmodel import col

from .db import Database
from .errors import NotFound
from .freetext import escaped
from .graphql.ids import to_global_id
from .invariants import Check, check_invariants
from .models import LedgerEntry, Organization, Reservation, TopupAttempt, Wallet
from .reconcile import UNSETTLED

RECENT = 10
RECONCILE_HINT = (
    "{count} top-up(s) not settled (PROCESSING or REQUIRES_ACTION): once a minute old, "
    "`gql-billing reconcile` matches them with their Stripe PaymentIntents and grants any "
    "that were paid"
)


@dataclass(frozen=True)
class KindTotal:
    kind: str
    entries: int
    amount_credits: int
    balance_delta_credits: int
    available_delta_credits: int


@dataclass(frozen=True)
class Report:
    organization: Organization
    wallet: Wallet | None
    totals: list[KindTotal]
    checks: list[Check]
    topups: list[TopupAttempt]
    reservations: list[Reservation]
    unsettled_topups: int

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def hints(self) -> list[str]:
        if not self.unsettled_topups:
            return []
        return [RECONCILE_HINT.format(count=self.unsettled_topups)]

    def to_json(self) -> dict[str, Any]:
        org, wallet = self.organization, self.wallet
        assert org.id is not None
        balance = wallet.balance_credits if wallet else 0
        reserved = wallet.reserved_credits if wallet else 0
        return {
            "organization": {
                "id": to_global_id("Organization", org.id),
                "pk": org.id,
                "name": org.name,
                "plan": org.plan,
            },
            "wallet": {
                "balanceCredits": balance,
                "reservedCredits": reserved,
                "availableCredits": balance - reserved,
            },
            "ledgerTotals": {
                t.kind: {
                    "entries": t.entries,
                    "amountCredits": t.amount_credits,
                    "balanceDeltaCredits": t.balance_delta_credits,
                    "availableDeltaCredits": t.available_delta_credits,
                }
                for t in self.totals
            },
            "invariants": [
                {"key": c.key, "name": c.name, "passed": c.passed, "detail": c.detail}
                for c in self.checks
            ],
            "passed": self.passed,
            "recentTopups": [_topup_json(t) for t in self.topups],
            "recentReservations": [_reservation_json(r) for r in self.reservations],
            "unsettledTopups": self.unsettled_topups,
            "hints": self.hints,
        }


async def build_report(db: Database, organization_id: int) -> Report:
    async with db.read() as session:
        org = await session.get(Organization, organization_id)
        if org is None:
            raise NotFound(f"No organization {organization_id}")
        wallet = (
            await session.execute(
                select(Wallet).where(col(Wallet.organization_id) == organization_id)
            )
        ).scalar_one_or_none()
        totals = await _totals(session, organization_id)
        topups = await _recent(session, TopupAttempt, organization_id)
        reservations = await _recent(session, Reservation, organization_id)
        unsettled = await _unsettled(session, organization_id)
    checks = await check_invariants(db, organization_id)
    return Report(org, wallet, totals, checks, topups, reservations, unsettled)


async def _totals(session: Any, organization_id: int) -> list[KindTotal]:
    query = (
        select(
            col(LedgerEntry.kind),
            func.count(),
            func.coalesce(func.sum(LedgerEntry.amount_credits), 0),
            func.coalesce(func.sum(LedgerEntry.balance_delta_credits), 0),
            func.coalesce(func.sum(LedgerEntry.available_delta_credits), 0),
        )
        .where(col(LedgerEntry.organization_id) == organization_id)
        .group_by(col(LedgerEntry.kind))
        .order_by(col(LedgerEntry.kind))
    )
    try:
        async with session.begin_nested():
            rows = (await session.execute(query)).all()
    except DBAPIError:
        # Amounts out of range overflow the sums; the amounts_in_range check names the rows.
        return []
    return [KindTotal(str(k), int(n), int(a), int(b), int(v)) for k, n, a, b, v in rows]


async def _recent(session: Any, model: Any, organization_id: int) -> list[Any]:
    query = (
        select(model)
        .where(col(model.organization_id) == organization_id)
        .order_by(col(model.id).desc())
        .limit(RECENT)
    )
    return list((await session.execute(query)).scalars())


async def _unsettled(session: Any, organization_id: int) -> int:
    query = select(func.count()).where(
        col(TopupAttempt.organization_id) == organization_id,
        col(TopupAttempt.status).in_(UNSETTLED),
    )
    return int((await session.execute(query)).scalar_one())


def _topup_json(t: TopupAttempt) -> dict[str, Any]:
    # No client secret and no payment method: the report may be pasted into a ticket.
    assert t.id is not None
    return {
        "id": to_global_id("TopupAttempt", t.id),
        "pk": t.id,
        "createdAt": t.created_at.isoformat(),
        "trigger": t.trigger,
        "status": t.status,
        "audCents": t.aud_cents,
        "creditsGranted": t.credits_granted,
        "bonusCredits": t.bonus_credits,
        "paymentIntentId": t.payment_intent_id,
        "failureReason": t.failure_reason,
    }


def _reservation_json(r: Reservation) -> dict[str, Any]:
    assert r.id is not None
    return {
        "id": to_global_id("Reservation", r.id),
        "pk": r.id,
        "createdAt": r.created_at.isoformat(),
        "status": r.status,
        "billingMode": r.billing_mode,
        "amountCredits": r.amount_credits,
        "capturedCredits": r.captured_credits,
        "reference": r.reference,
    }


def render(report: Report, console: Console) -> None:
    """The report as tables, for a person at a terminal."""
    data = report.to_json()
    org, wallet = data["organization"], data["wallet"]
    console.print(Text(escaped(f"{org['name']} ({org['plan']}) {org['id']}"), style="bold"))
    console.print(
        f"balance {wallet['balanceCredits']:,}  reserved {wallet['reservedCredits']:,}  "
        f"available {wallet['availableCredits']:,} credits"
    )
    console.print(_totals_table(data["ledgerTotals"]))
    console.print(_invariants_table(report.checks))
    console.print(_topups_table(data["recentTopups"]))
    console.print(_reservations_table(data["recentReservations"]))
    for hint in data["hints"]:
        console.print(Text(hint, style="yellow"))
    if report.passed:
        console.print(Text("all invariants hold", style="green"))
    else:
        console.print(Text("some invariants FAILED", style="bold red"))
    if not data["hints"]:
        console.print("(a top-up stuck at Stripe is repaired by `gql-billing reconcile`)")


def _totals_table(totals: dict[str, dict[str, int]]) -> Table:
    rows = [
        [kind, t["entries"], t["amountCredits"], t["balanceDeltaCredits"]]
        for kind, t in totals.items()
    ]
    return _table("Ledger totals by kind", ["kind", "entries", "amount", "balance delta"], rows)


def _invariants_table(checks: list[Check]) -> Table:
    rows: list[list[Any]] = [
        [
            Text("passed", style="green") if c.passed else Text("FAILED", style="bold red"),
            c.name,
            c.detail,
        ]
        for c in checks
    ]
    return _table("Ledger invariants", ["", "invariant", "detail"], rows)


def _topups_table(topups: list[dict[str, Any]]) -> Table:
    columns = ["pk", "created", "trigger", "status", "AUD cents", "granted", "payment intent"]
    rows = [
        [
            t["pk"],
            t["createdAt"][:19],
            t["trigger"],
            t["status"],
            t["audCents"],
            t["creditsGranted"] + t["bonusCredits"],
            t["paymentIntentId"] or "",
        ]
        for t in topups
    ]
    return _table("Recent top-ups", columns, rows)


def _reservations_table(reservations: list[dict[str, Any]]) -> Table:
    columns = ["pk", "created", "status", "mode", "amount", "captured", "reference"]
    rows = [
        [
            r["pk"],
            r["createdAt"][:19],
            r["status"],
            r["billingMode"],
            r["amountCredits"],
            r["capturedCredits"],
            r["reference"],
        ]
        for r in reservations
    ]
    return _table("Recent reservations", columns, rows)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        # Text, not markup: a reference or a name may contain "[...]"; and escaped, since
        # rows stored before free text was checked may hold terminal control sequences.
        table.add_row(*(c if isinstance(c, Text) else Text(escaped(str(c))) for c in row))
    if not rows:
        table.add_row(Text("none"), *([""] * (len(columns) - 1)))
    return table
