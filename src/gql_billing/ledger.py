"""The only writer of ledger entries and of the wallet's balance columns.

Every movement is one atomic conditional UPDATE of the wallet row (so two concurrent spends
cannot both pass a check they would fail together) followed by the entry that records it,
inside the caller's write transaction. The CHECK constraints on `wallets` back this up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .auto_queue import queue_if_below
from .customer_webhooks import alerts
from .db import WALLETS_CHANGED
from .errors import InsufficientCredits, InvalidInput, NotFound
from .live import CHANNEL
from .models import EntryKind, LedgerEntry, Wallet, utcnow
from .money import MAX_CREDITS, check_credits


@dataclass(frozen=True)
class Movement:
    """A signed change of balance and of available credits (reserved moves by the difference)."""

    kind: EntryKind
    amount_credits: int
    balance_delta_credits: int
    available_delta_credits: int

    @property
    def reserved_delta_credits(self) -> int:
        return self.balance_delta_credits - self.available_delta_credits


def grant(amount_credits: int) -> Movement:
    return Movement(EntryKind.GRANT, amount_credits, amount_credits, amount_credits)


def bonus(amount_credits: int) -> Movement:
    return Movement(EntryKind.BONUS, amount_credits, amount_credits, amount_credits)


def adjustment(delta_credits: int) -> Movement:
    return Movement(EntryKind.ADJUSTMENT, abs(delta_credits), delta_credits, delta_credits)


def reservation(amount_credits: int) -> Movement:
    return Movement(EntryKind.RESERVATION, amount_credits, 0, -amount_credits)


def release(amount_credits: int) -> Movement:
    return Movement(EntryKind.RELEASE, amount_credits, 0, amount_credits)


def charge(amount_credits: int) -> Movement:
    """A charge of credits already reserved: balance drops, available does not."""
    return Movement(EntryKind.CHARGE, amount_credits, -amount_credits, 0)


def refund(amount_credits: int) -> Movement:
    return Movement(EntryKind.REFUND, amount_credits, amount_credits, amount_credits)


@dataclass(frozen=True)
class Posted:
    entry: LedgerEntry
    balance_credits: int
    reserved_credits: int

    @property
    def available_credits(self) -> int:
        return self.balance_credits - self.reserved_credits


async def post(
    session: AsyncSession,
    *,
    organization_id: int,
    movement: Movement,
    description: str,
    reference: str | None = None,
    topup_attempt_id: int | None = None,
    reservation_id: int | None = None,
    payment_intent_id: str | None = None,
    now: datetime | None = None,
    amount_field: str = "amount_credits",
) -> Posted:
    """Apply one movement and append its entry; InsufficientCredits if available would go < 0,
    InvalidInput (naming `amount_field`) if the balance would pass MAX_CREDITS.

    Any movement that leaves available below the auto top-up threshold queues one."""
    now = now or utcnow()
    check_credits(movement.amount_credits, amount_field)
    bd = movement.balance_delta_credits
    rd = movement.reserved_delta_credits
    new_balance = col(Wallet.balance_credits) + bd
    new_reserved = col(Wallet.reserved_credits) + rd
    stmt = (
        update(Wallet)
        .where(col(Wallet.organization_id) == organization_id)
        # reserved <= balance, so bounding the balance bounds every column and running total.
        .where(new_balance - new_reserved >= 0, new_reserved >= 0, new_balance <= MAX_CREDITS)
        .values(balance_credits=new_balance, reserved_credits=new_reserved, updated_at=now)
        .returning(Wallet)
        .execution_options(populate_existing=True)
    )
    wallet = (await session.execute(stmt)).scalar_one_or_none()
    if wallet is None:
        current = await wallet_for(session, organization_id)
        if current.balance_credits + bd > MAX_CREDITS:
            raise InvalidInput(
                amount_field, f"This would take the balance past {MAX_CREDITS} credits (2^53 - 1)"
            )
        available = current.balance_credits - current.reserved_credits
        raise InsufficientCredits(available, -movement.available_delta_credits)
    wallet_id, balance_credits, reserved_credits = (
        wallet.id,
        wallet.balance_credits,
        wallet.reserved_credits,
    )
    assert wallet_id is not None
    entry = LedgerEntry(
        organization_id=organization_id,
        wallet_id=wallet_id,
        kind=movement.kind.value,
        amount_credits=movement.amount_credits,
        balance_delta_credits=bd,
        available_delta_credits=movement.available_delta_credits,
        balance_after_credits=balance_credits,
        available_after_credits=balance_credits - reserved_credits,
        description=description,
        reference=reference,
        topup_attempt_id=topup_attempt_id,
        reservation_id=reservation_id,
        payment_intent_id=payment_intent_id,
        created_at=now,
    )
    session.add(entry)
    await session.flush()
    await _announce(session, organization_id)
    await queue_if_below(session, wallet, now)
    await alerts.on_movement(session, wallet, now)
    return Posted(entry, balance_credits, reserved_credits)


async def _announce(session: AsyncSession, organization_id: int) -> None:
    """Tell live subscribers once the transaction commits (see live.py)."""
    session.info.setdefault(WALLETS_CHANGED, set()).add(organization_id)
    if session.get_bind().dialect.name == "postgresql":
        # Delivered by PostgreSQL at commit, to every process listening.
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": str(organization_id)},
        )


async def open_wallet(session: AsyncSession, organization_id: int) -> Wallet:
    wallet = Wallet(organization_id=organization_id)
    session.add(wallet)
    await session.flush()
    return wallet


async def wallet_for(session: AsyncSession, organization_id: int, *, lock: bool = False) -> Wallet:
    query = select(Wallet).where(col(Wallet.organization_id) == organization_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    wallet = (await session.execute(query)).scalar_one_or_none()
    if wallet is None:
        raise NotFound("No wallet for this organization")
    return wallet
