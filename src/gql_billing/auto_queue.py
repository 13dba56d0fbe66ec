"""Queueing an auto top-up: at most one in flight per organization, and what
today's automatic charges add up to (the daily cap's side of the queue).

Called by the ledger after every movement, and by the worker's sweep. The partial unique
index `uq_topup_auto_in_flight` decides: a second queue attempt while one is queued,
processing or waiting for 3-D Secure fails its insert and is dropped.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .models import PaymentMethod, TopupAttempt, TopupStatus, TopupTrigger, Wallet

CHARGED_STATUSES = (TopupStatus.SUCCEEDED, TopupStatus.PROCESSING, TopupStatus.REQUIRES_ACTION)


def wants_topup(wallet: Wallet) -> bool:
    if not wallet.auto_topup_enabled or wallet.auto_threshold_credits is None:
        return False
    return wallet.balance_credits - wallet.reserved_credits < wallet.auto_threshold_credits


async def queue_if_below(session: AsyncSession, wallet: Wallet, now: datetime) -> bool:
    """Queue one auto top-up when the wallet is below its threshold; True if queued.

    During a back-off after a decline the attempt is queued all the same, to run when the
    back-off ends (`not_before`): the customer sees it waiting, and nothing is charged."""
    if not wants_topup(wallet) or wallet.auto_topup_amount_credits is None:
        return False
    card = (
        await session.execute(
            select(col(PaymentMethod.stripe_id)).where(
                col(PaymentMethod.organization_id) == wallet.organization_id,
                col(PaymentMethod.is_default),
            )
        )
    ).scalar_one_or_none()
    if card is None:
        return False
    attempt = TopupAttempt(
        organization_id=wallet.organization_id,
        trigger=TopupTrigger.AUTO.value,
        status=TopupStatus.QUEUED.value,
        aud_cents=wallet.auto_topup_amount_credits,
        payment_method_stripe_id=card,
        created_at=now,
        not_before=_backoff_end(wallet, now),
    )
    try:
        async with session.begin_nested():
            session.add(attempt)
            await session.flush()
    except IntegrityError:
        return False  # one is already in flight
    return True


def _backoff_end(wallet: Wallet, now: datetime) -> datetime | None:
    backoff_until = wallet.auto_backoff_until
    return backoff_until if backoff_until is not None and backoff_until > now else None


def day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


async def charged_today_aud_cents(
    session: AsyncSession, organization_id: int, now: datetime
) -> int:
    """Auto top-up charges claimed this UTC day that succeeded or are still in flight."""
    query = select(func.coalesce(func.sum(TopupAttempt.aud_cents), 0)).where(
        col(TopupAttempt.organization_id) == organization_id,
        col(TopupAttempt.trigger) == TopupTrigger.AUTO.value,
        col(TopupAttempt.status).in_([s.value for s in CHARGED_STATUSES]),
        col(TopupAttempt.claimed_at) >= day_start(now),
    )
    return int((await session.execute(query)).scalar_one())
