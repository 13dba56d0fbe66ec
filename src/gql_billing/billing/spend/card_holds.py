"""Card holds (FREE plans without enough credits): Stripe PaymentIntents with manual
capture. As with top-ups, each step's intent is recorded and committed first, Stripe is
called with a key stored on the reservation, and the result settles in a second
transaction. A settlement is claimed in the database before Stripe is called, so parallel
captures, releases and refunds of one hold make one Stripe call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ...errors import (
    BillingNotConfigured,
    BillingProblem,
    InvalidInput,
    InvalidState,
    PaymentMethodRequired,
    PaymentProviderUnavailable,
)
from ...models import BillingMode, Organization, Reservation
from ...money import MAX_CHARGE_AUD_CENTS
from ...stripe_gateway import CANCELED, DECLINED, REQUIRES_ACTION, REQUIRES_CAPTURE, SUCCEEDED
from ..topups import default_card
from .rules import (
    SETTLEMENT_WAIT_SECONDS,
    S,
    SettlementAction,
    Spend,
    SpendDeps,
    answer,
    locked,
)

A = SettlementAction


class CardHolds:
    def __init__(self, deps: SpendDeps) -> None:
        self._deps = deps

    async def prepare(
        self, session: AsyncSession, org: Organization, reservation: Reservation
    ) -> None:
        """Turn a reservation the credits cannot cover into a card hold to authorise."""
        if self._deps.gateway is None:
            raise BillingNotConfigured()
        if reservation.amount_credits > MAX_CHARGE_AUD_CENTS:
            raise InvalidInput(
                "amount_credits", f"A card hold is at most {MAX_CHARGE_AUD_CENTS} cents"
            )
        card = await default_card(session, reservation.organization_id)
        if card is None or org.stripe_customer_id is None:
            raise PaymentMethodRequired()
        reservation.billing_mode = BillingMode.CARD_HOLD.value
        reservation.status = S.AUTHORIZING.value
        reservation.payment_method_stripe_id = card.stripe_id

    async def authorize(self, reservation: Reservation) -> Reservation:
        """Authorise (or look up) the card hold's PaymentIntent and record the outcome."""
        gateway = self._deps.require_gateway()
        assert reservation.id is not None and reservation.payment_method_stripe_id is not None
        if reservation.payment_intent_id is not None:
            payment = await gateway.retrieve_payment(reservation.payment_intent_id)
        else:
            async with self._deps.db.read() as session:
                org = await session.get(Organization, reservation.organization_id)
            assert org is not None and org.stripe_customer_id is not None
            payment = await gateway.charge_off_session(
                customer_id=org.stripe_customer_id,
                payment_method_id=reservation.payment_method_stripe_id,
                amount_cents=reservation.amount_credits,
                idempotency_key=f"hold:{reservation.stripe_key}",
                metadata={
                    "reservation_id": str(reservation.id),
                    "reference": reservation.reference,
                },
                capture_manual=True,
            )
        async with self._deps.db.write() as session:
            fresh = await locked(session, reservation.id)
            if fresh.status != S.AUTHORIZING:
                return fresh
            fresh.payment_intent_id = fresh.payment_intent_id or payment.intent_id
            if payment.status == REQUIRES_CAPTURE:
                fresh.status = S.HELD.value
                fresh.client_secret = None
            elif payment.status == REQUIRES_ACTION:
                fresh.client_secret = payment.client_secret
            elif payment.status == DECLINED:
                fresh.status = S.FAILED.value
                fresh.decline_code = payment.decline_code
                fresh.reason = payment.failure_message
            return fresh

    # -- settlement ---------------------------------------------------------------------------

    def claim(self, r: Reservation, action: SettlementAction, now: datetime) -> bool:
        """Record, in the caller's transaction, that this request carries `action` out at
        Stripe. False while another request's claim on it is alive: exactly one request
        calls Stripe for a settlement at a time, and a lapsed claim (its request died
        between Stripe and the database) is taken over with the same Stripe key."""
        claimed_until = r.settlement_claimed_until
        if r.pending_settlement == action and claimed_until is not None and claimed_until > now:
            return False
        r.pending_settlement = action.value
        r.settlement_claimed_until = now + self._deps.lease
        return True

    async def after_other_settler(
        self, reservation_id: int, again: Callable[[], Awaitable[Spend]]
    ) -> Spend:
        """Wait (briefly) for the request that holds the settlement, then ask again: its
        success is then replayed, or, if it gave up, this request takes the claim over."""
        deadline = time.monotonic() + SETTLEMENT_WAIT_SECONDS
        pause = 0.02
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
            async with self._deps.db.read() as session:
                r = await session.get(Reservation, reservation_id)
            if r is None or r.pending_settlement is None or r.settlement_claimed_until is None:
                return await again()
        raise PaymentProviderUnavailable(
            "This settlement is being carried out at Stripe by another request; retry shortly"
        )

    async def finish(self, r: Reservation, action: SettlementAction) -> Spend:
        """Carry a card hold's claimed settlement out at Stripe, then record it done."""
        assert r.id is not None
        try:
            return await self._call_stripe(r, action)
        except BaseException:
            # Whatever went wrong (an outage, a cancelled request), the claim is released
            # so the retry does not wait for the lease; the Stripe key makes it safe.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._give_up_claim(r.id))
            raise

    async def _give_up_claim(self, reservation_id: int) -> None:
        """The Stripe call failed: keep the pending settlement, free the claim for a retry."""
        async with self._deps.db.write() as session:
            r = await locked(session, reservation_id)
            r.settlement_claimed_until = None

    async def _call_stripe(self, r: Reservation, action: SettlementAction) -> Spend:
        gateway = self._deps.require_gateway()
        assert r.id is not None and r.payment_intent_id is not None
        key = f"{action.value}:{r.stripe_key}"
        if action == A.CAPTURE:
            payment = await gateway.capture_payment(
                r.payment_intent_id, amount_cents=r.captured_credits, idempotency_key=key
            )
            if payment.status == CANCELED:
                # Stripe let the authorisation lapse before we captured: nothing was charged.
                await self.mark_settled(r.id, A.RELEASE)
                raise InvalidState("The card hold had already lapsed at Stripe; nothing charged")
            if payment.status != SUCCEEDED:
                raise PaymentProviderUnavailable("Stripe has not confirmed the capture; retry")
        elif action == A.RELEASE:
            payment = await gateway.cancel_payment(r.payment_intent_id, idempotency_key=key)
            if payment.status == SUCCEEDED:
                raise InvalidState("The card hold was already captured at Stripe")
        else:
            await gateway.refund_payment(
                r.payment_intent_id, amount_cents=r.captured_credits, idempotency_key=key
            )
        return await self.mark_settled(r.id, action)

    async def mark_settled(self, reservation_id: int, action: SettlementAction) -> Spend:
        """Record a settlement Stripe carried out (here, or as a webhook reports it)."""
        now = self._deps.clock.now()
        async with self._deps.db.write() as session:
            r = await locked(session, reservation_id)
            if r.pending_settlement == action or (action == A.RELEASE and r.status == S.HELD):
                r.status = action.outcome.value
                r.pending_settlement = None
                r.settlement_claimed_until = None
                if action == A.REFUND:
                    r.refunded_at = now
                else:
                    r.settled_at = now
            return await answer(session, r)

    # -- giving up ----------------------------------------------------------------------------

    async def cancel_quietly(self, intent_id: str, stripe_key: str) -> None:
        """Cancel an authorisation nobody will complete; Stripe expires it anyway if this fails."""
        if self._deps.gateway is None:
            return
        with contextlib.suppress(BillingProblem):
            await self._deps.gateway.cancel_payment(
                intent_id, idempotency_key=f"{A.RELEASE.value}:{stripe_key}"
            )

    async def abandon(self, stale: Reservation) -> None:
        """A card hold never completed (3-D Secure not done, or its answer lost to a
        timeout and never retried): give up on it, and cancel any authorisation Stripe
        made so the customer's card is not held until Stripe lets it lapse."""
        intent_id = stale.payment_intent_id or await self._find_hold(stale)
        async with self._deps.db.write() as session:
            r = await locked(session, stale.id)
            if r.status != S.AUTHORIZING:
                return
            r.status = S.FAILED.value
            r.reason = "The card hold was never completed"
            r.client_secret = None
        if intent_id is not None:
            await self.cancel_quietly(intent_id, r.stripe_key)

    async def _find_hold(self, r: Reservation) -> str | None:
        gateway = self._deps.gateway
        if gateway is None:
            return None
        async with self._deps.db.read() as session:
            org = await session.get(Organization, r.organization_id)
        if org is None or org.stripe_customer_id is None:
            return None
        with contextlib.suppress(BillingProblem):
            found = await gateway.find_payment(org.stripe_customer_id, "reservation_id", str(r.id))
            return found.intent_id if found is not None else None
        return None
