"""What each billing change tells the organization's endpoints: the event payloads, in the
REST API's snake_case shapes, recorded in the caller's transaction (outbox.record)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ..auto_queue import charged_today_aud_cents
from ..balance_answer import balance_answer
from ..graphql.ids import to_global_id
from ..models import Approval, Invoice, TopupAttempt, TopupStatus, TopupTrigger, Wallet
from ..money import SETTLEMENT_ONLY
from .outbox import EventType, record

TOPUP_EVENTS = {
    TopupStatus.SUCCEEDED: EventType.TOPUP_SUCCEEDED,
    TopupStatus.FAILED: EventType.TOPUP_FAILED,
    TopupStatus.REQUIRES_ACTION: EventType.TOPUP_REQUIRES_ACTION,
}


def topup_data(attempt: TopupAttempt) -> dict[str, Any]:
    """The top-up answer of the REST API, plus `trigger` and `organization_id`."""
    assert attempt.id is not None
    return {
        "topup_attempt_id": to_global_id("TopupAttempt", attempt.id),
        "organization_id": to_global_id("Organization", attempt.organization_id),
        "trigger": attempt.trigger.lower(),
        "payment_intent_id": attempt.payment_intent_id,
        "status": attempt.status.lower(),
        "aud_cents": attempt.aud_cents,
        "credits_granted": attempt.credits_granted,
        "bonus_credits": attempt.bonus_credits,
        "new_balance": attempt.new_balance_credits,
        "decline_code": attempt.decline_code,
        "failure_reason": attempt.failure_reason,
    }


async def topup_changed(
    session: AsyncSession, attempt: TopupAttempt, previous: str, now: datetime
) -> None:
    """A top-up reached a status its organization hears about. 3-D Secure is news only for
    an automatic top-up: a manual one's caller got the challenge in its answer."""
    if attempt.status == previous:
        return
    event = TOPUP_EVENTS.get(TopupStatus(attempt.status))
    if event is None:
        return
    if event == EventType.TOPUP_REQUIRES_ACTION and attempt.trigger != TopupTrigger.AUTO:
        return
    await record(session, attempt.organization_id, event, topup_data(attempt), now=now)


async def auto_topup_disabled(session: AsyncSession, wallet: Wallet, now: datetime) -> None:
    data = {
        "organization_id": to_global_id("Organization", wallet.organization_id),
        "enabled": False,
        "threshold_credits": wallet.auto_threshold_credits or 0,
        "topup_amount_credits": wallet.auto_topup_amount_credits or 0,
        "daily_charge_cap_aud": wallet.auto_daily_cap_aud or 0,
        "disabled_reason": wallet.auto_disabled_reason,
        "consecutive_failures": wallet.auto_consecutive_failures,
    }
    await record(session, wallet.organization_id, EventType.AUTO_TOPUP_DISABLED, data, now=now)


def approval_data(approval: Approval) -> dict[str, Any]:
    assert approval.id is not None
    return {
        "approval_id": to_global_id("Approval", approval.id),
        "reservation_id": to_global_id("Reservation", approval.reservation_id),
        "organization_id": to_global_id("Organization", approval.organization_id),
        "status": approval.status.lower(),
        "amount_credits": approval.amount_credits,
        "reference": approval.reference,
        "description": approval.description,
        "requested_at": approval.requested_at.isoformat(),
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "reason": approval.reason,
    }


async def approval_requested(session: AsyncSession, approval: Approval, now: datetime) -> None:
    await session.flush()  # the approval's id
    await record(
        session,
        approval.organization_id,
        EventType.APPROVAL_REQUESTED,
        approval_data(approval),
        now=now,
    )


async def approval_decided(session: AsyncSession, approval: Approval, now: datetime) -> None:
    await record(
        session,
        approval.organization_id,
        EventType.APPROVAL_DECIDED,
        approval_data(approval),
        now=now,
    )


async def invoice_finalized(session: AsyncSession, invoice: Invoice, now: datetime) -> None:
    assert invoice.id is not None
    data = {
        "invoice_id": to_global_id("Invoice", invoice.id),
        "organization_id": to_global_id("Organization", invoice.organization_id),
        "period": invoice.period,
        "status": "finalized",
        "total_credits": invoice.total_credits,
        "finalized_at": now.isoformat(),
    }
    await record(session, invoice.organization_id, EventType.INVOICE_FINALIZED, data, now=now)


async def balance_low(
    session: AsyncSession, wallet: Wallet, alert_threshold_credits: int, now: datetime
) -> None:
    """The balance operation's answer at the crossing (in AUD), with the floor crossed."""
    charged = await charged_today_aud_cents(session, wallet.organization_id, now)
    answer = balance_answer(wallet, charged_today_aud_cents=charged, rates=SETTLEMENT_ONLY)
    data = {
        **answer.model_dump(mode="json"),
        "organization_id": to_global_id("Organization", wallet.organization_id),
        "alert_threshold_credits": alert_threshold_credits,
    }
    await record(session, wallet.organization_id, EventType.WALLET_BALANCE_LOW, data, now=now)
