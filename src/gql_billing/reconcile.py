"""Reconciliation: match top-up attempts with their Stripe PaymentIntents and repair a
succeeded charge that was never granted (through the normal grant path)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from .billing import Billing
from .errors import BillingProblem
from .models import Organization, TopupAttempt, TopupStatus
from .stripe_gateway import SUCCEEDED, Payment, PaymentProviderRefused

UNSETTLED = (TopupStatus.PROCESSING.value, TopupStatus.REQUIRES_ACTION.value)


@dataclass
class ReconcileReport:
    checked: int = 0
    repaired: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    still_open: list[int] = field(default_factory=list)


async def reconcile(
    billing: Billing,
    *,
    min_age: timedelta = timedelta(minutes=1),
    on_progress: Callable[[int, int], None] | None = None,
) -> ReconcileReport:
    """Attempts still unsettled after `min_age` are looked up at Stripe and settled.

    `on_progress(done, total)` is called after each attempt (a long run shows progress)."""
    report = ReconcileReport()
    gateway = billing.gateway
    if gateway is None:
        return report
    cutoff = billing.clock.now() - min_age
    async with billing.db.read() as session:
        query = (
            select(TopupAttempt, col(Organization.stripe_customer_id))
            .join(Organization, col(Organization.id) == col(TopupAttempt.organization_id))
            .where(col(TopupAttempt.status).in_(UNSETTLED), col(TopupAttempt.created_at) < cutoff)
            .order_by(col(TopupAttempt.id))
        )
        rows = list((await session.execute(query)).all())
    for attempt, customer_id in rows:
        assert attempt.id is not None
        report.checked += 1
        await _settle_one(billing, attempt, customer_id, report)
        if on_progress is not None:
            on_progress(report.checked, len(rows))
    return report


async def _settle_one(
    billing: Billing, attempt: TopupAttempt, customer_id: str | None, report: ReconcileReport
) -> None:
    assert attempt.id is not None
    try:
        payment = await _find(billing, attempt, customer_id)
        if payment is None:
            report.still_open.append(attempt.id)
            return
        settled = await billing.topups.settle_payment(payment, attempt_id=attempt.id)
    except (BillingProblem, PaymentProviderRefused):
        # An outage, or Stripe refusing the look-up: this attempt is reported, the run goes on.
        report.unreachable.append(attempt.id)
        return
    if payment.status == SUCCEEDED and settled.status == TopupStatus.SUCCEEDED:
        report.repaired.append(attempt.id)
    else:
        report.still_open.append(attempt.id)


async def _find(billing: Billing, attempt: TopupAttempt, customer_id: str | None) -> Payment | None:
    assert billing.gateway is not None
    if attempt.payment_intent_id is not None:
        return await billing.gateway.retrieve_payment(attempt.payment_intent_id)
    if customer_id is None:
        return None
    return await billing.gateway.find_payment(customer_id, "topup_attempt_id", str(attempt.id))
