"""Settle once on the outcome: capture (a CHARGE, any remainder released), release, or
refund a captured one. Credits move in the ledger, enterprise spend on the month's invoice,
card holds at Stripe (claimed first, see card_holds). A repeat of the settlement that won
replays its success; any other settlement of a settled reservation is InvalidState."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ... import ledger
from ...errors import InvalidInput, InvalidState
from ...freetext import check_free_text
from ...models import BillingMode, Reservation
from .. import invoices
from .card_holds import CardHolds
from .rules import (
    S,
    SettlementAction,
    Spend,
    SpendDeps,
    answer,
    describe,
    locked,
    require_settleable,
)

A = SettlementAction


class Settling:
    def __init__(self, deps: SpendDeps, holds: CardHolds) -> None:
        self._deps = deps
        self._holds = holds

    async def capture(self, reservation_id: int, amount_credits: int | None) -> Spend:
        now = self._deps.clock.now()
        async with self._deps.db.write() as session:
            r = await locked(session, reservation_id)
            amount = r.amount_credits if amount_credits is None else amount_credits
            if amount <= 0 or amount > r.amount_credits:
                raise InvalidInput(
                    "amount_credits", f"Capture between 1 and {r.amount_credits} credits"
                )
            if r.status == S.CAPTURED and r.captured_credits == amount:
                return await answer(session, r)
            require_settleable(r, S.HELD, A.CAPTURE)
            if r.billing_mode == BillingMode.CARD_HOLD:
                if r.pending_settlement == A.CAPTURE and r.captured_credits != amount:
                    raise InvalidState("A capture of a different amount is in progress")
                claimed = self._holds.claim(r, A.CAPTURE, now)
                r.captured_credits = amount
            else:
                await self._capture_now(session, r, amount, now)
                return await answer(session, r)
        if not claimed:
            return await self._holds.after_other_settler(
                reservation_id, lambda: self.capture(reservation_id, amount_credits)
            )
        return await self._holds.finish(r, A.CAPTURE)

    async def _capture_now(
        self, session: AsyncSession, r: Reservation, amount: int, now: datetime
    ) -> None:
        if r.billing_mode == BillingMode.CREDITS:
            await ledger.post(
                session,
                organization_id=r.organization_id,
                movement=ledger.charge(amount),
                description=describe("Charged", r),
                reference=r.reference,
                reservation_id=r.id,
                now=now,
            )
            rest = r.amount_credits - amount
            if rest:
                await ledger.post(
                    session,
                    organization_id=r.organization_id,
                    movement=ledger.release(rest),
                    description=describe("Released the rest of", r),
                    reference=r.reference,
                    reservation_id=r.id,
                    now=now,
                )
        else:
            await invoices.add_line(session, r, amount, now)
        r.status = S.CAPTURED.value
        r.captured_credits = amount
        r.settled_at = now

    async def release(self, reservation_id: int, reason: str | None = None) -> Spend:
        check_free_text("reason", reason)
        now = self._deps.clock.now()
        async with self._deps.db.write() as session:
            r = await locked(session, reservation_id)
            if r.status == S.RELEASED:
                return await answer(session, r)
            require_settleable(r, S.HELD, A.RELEASE)
            if r.billing_mode == BillingMode.CARD_HOLD:
                claimed = self._holds.claim(r, A.RELEASE, now)
                r.reason = r.reason if not claimed else reason
            else:
                r.reason = reason
                if r.billing_mode == BillingMode.CREDITS:
                    await ledger.post(
                        session,
                        organization_id=r.organization_id,
                        movement=ledger.release(r.amount_credits),
                        description=describe("Released", r),
                        reference=r.reference,
                        reservation_id=r.id,
                        now=now,
                    )
                r.status = S.RELEASED.value
                r.settled_at = now
                return await answer(session, r)
        if not claimed:
            return await self._holds.after_other_settler(
                reservation_id, lambda: self.release(reservation_id, reason)
            )
        return await self._holds.finish(r, A.RELEASE)

    async def refund(self, reservation_id: int, reason: str | None = None) -> Spend:
        check_free_text("reason", reason)
        now = self._deps.clock.now()
        async with self._deps.db.write() as session:
            r = await locked(session, reservation_id)
            if r.status == S.REFUNDED:
                return await answer(session, r)
            require_settleable(r, S.CAPTURED, A.REFUND)
            if r.billing_mode == BillingMode.CARD_HOLD:
                claimed = self._holds.claim(r, A.REFUND, now)
                r.reason = r.reason if not claimed else reason
            else:
                r.reason = reason
                if r.billing_mode == BillingMode.CREDITS:
                    await ledger.post(
                        session,
                        organization_id=r.organization_id,
                        movement=ledger.refund(r.captured_credits),
                        description=describe("Refunded", r),
                        reference=r.reference,
                        reservation_id=r.id,
                        now=now,
                    )
                else:
                    await invoices.add_line(session, r, -r.captured_credits, now)
                r.status = S.REFUNDED.value
                r.refunded_at = now
                return await answer(session, r)
        if not claimed:
            return await self._holds.after_other_settler(
                reservation_id, lambda: self.refund(reservation_id, reason)
            )
        return await self._holds.finish(r, A.REFUND)
