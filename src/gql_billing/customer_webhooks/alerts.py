"""The low-balance alert: `wallet.balance_low` once per crossing below the floor.

Checked by the ledger with every movement, in its transaction. One conditional UPDATE flips
`armed` only when it disagrees with the new available balance, so of several movements that
cross the floor together exactly one sees the flip (the wallet row they all update orders
them) and raises the alert; a movement back at or above the floor re-arms it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ..db import Database
from ..errors import InvalidInput, NotFound
from ..models import BalanceAlert, Wallet
from . import events


async def on_movement(session: AsyncSession, wallet: Wallet, now: datetime) -> bool:
    """After a movement of `wallet` (already updated): raise or re-arm. True if raised."""
    available = wallet.balance_credits - wallet.reserved_credits
    at_or_above = literal(available, BigInteger) >= col(BalanceAlert.threshold_credits)
    flipped = (
        await session.execute(
            update(BalanceAlert)
            .where(
                col(BalanceAlert.organization_id) == wallet.organization_id,
                col(BalanceAlert.enabled),
                col(BalanceAlert.armed) != at_or_above,
            )
            .values(armed=at_or_above, updated_at=now)
            .returning(col(BalanceAlert.armed), col(BalanceAlert.threshold_credits))
        )
    ).one_or_none()
    if flipped is None or flipped.armed:
        return False
    await events.balance_low(session, wallet, flipped.threshold_credits, now)
    return True


async def configure(
    session: AsyncSession,
    wallet: Wallet,
    *,
    enabled: bool,
    threshold_credits: int | None,
    now: datetime,
) -> BalanceAlert:
    """Set the floor (a null threshold keeps the stored one); armed afresh, and raised at
    once when the wallet is already below it."""
    if threshold_credits is not None and threshold_credits < 0:
        raise InvalidInput("thresholdCredits", "thresholdCredits must be zero or more")
    alert = await session.get(BalanceAlert, wallet.organization_id, with_for_update=True)
    if alert is None:
        if enabled and threshold_credits is None:
            raise InvalidInput("thresholdCredits", "Set thresholdCredits to enable the alert")
        alert = BalanceAlert(organization_id=wallet.organization_id)
        session.add(alert)
    unchanged = alert.enabled == enabled and threshold_credits in (None, alert.threshold_credits)
    alert.enabled = enabled
    if threshold_credits is not None:
        alert.threshold_credits = threshold_credits
    if not unchanged:
        # A new floor starts a new watch (an unchanged one keeps the crossing it raised).
        alert.armed = True
    alert.updated_at = now
    await session.flush()
    if enabled:
        await on_movement(session, wallet, now)
        await session.refresh(alert)
    return alert


def triggered(alert: BalanceAlert | None) -> bool:
    """True while below the floor: the alert for this crossing has been raised."""
    return alert is not None and alert.enabled and not alert.armed


async def set_alert(
    db: Database,
    organization_id: int,
    *,
    enabled: bool,
    threshold_credits: int | None,
    now: datetime,
) -> Wallet:
    """setBalanceAlert: the wallet afterwards (locked meanwhile, so no movement slips past)."""
    async with db.write() as session:
        query = (
            select(Wallet)
            .where(col(Wallet.organization_id) == organization_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        wallet = (await session.execute(query)).scalar_one_or_none()
        if wallet is None:
            raise NotFound("No wallet for this organization")
        await configure(
            session, wallet, enabled=enabled, threshold_credits=threshold_credits, now=now
        )
        return wallet
