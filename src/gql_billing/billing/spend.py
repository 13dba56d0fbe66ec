"""Spend: reserve at placement, settle once on the outcome (SPEC §7).

Credits reservations move only the ledger (one transaction each). Card holds (FREE plans
without enough credits) are Stripe PaymentIntents with manual capture: as with top-ups, the
intent of each step is recorded and committed first, Stripe is called with a key stored on
the reservation, and the result settles in a second transaction. Enterprise reservations
touch no wallet; captures become lines of the month's invoice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .. import idempotency, ledger
from ..clock import Clock
from ..customer_webhooks import events
from ..db import Database
from ..errors import (
    AuthenticationRequired,
    BillingNotConfigured,
    BillingProblem,
    CardDeclined,
    InsufficientCredits,
    InvalidInput,
    InvalidState,
    NotFound,
    PaymentMethodRequired,
    PaymentProviderUnavailable,
)
from ..freetext import check_free_text
from ..models import (
    Approval,
    ApprovalStatus,
    BillingMode,
    Organization,
    Plan,
    Reservation,
    ReservationStatus,
)
from ..money import MAX_CHARGE_AUD_CENTS, check_credits
from ..stripe_gateway import (
    CANCELED,
    DECLINED,
    REQUIRES_ACTION,
    REQUIRES_CAPTURE,
    SUCCEEDED,
    PaymentGateway,
)
from . import invoices
from .topups import default_card

OPERATION = "reserveCredits"
# How long a request waits for another one carrying out the same card hold settlement at
# Stripe before answering "in progress, retry" (the winner's answer is then replayed).
SETTLEMENT_WAIT_SECONDS = 5.0
MAX_REFERENCE_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 500

S = ReservationStatus


@dataclass(frozen=True)
class ReserveRequest:
    organization_id: int | None
    amount_credits: int
    reference: str
    description: str | None
    idempotency_key: str | None

    def validate(self) -> int:
        if self.organization_id is None:
            raise InvalidInput("organization_id", "No such organization")
        if self.amount_credits <= 0:
            raise InvalidInput("amount_credits", "amount_credits must be positive")
        check_credits(self.amount_credits, "amount_credits")
        if not self.reference.strip() or len(self.reference) > MAX_REFERENCE_LENGTH:
            raise InvalidInput(
                "reference", f"reference must be 1-{MAX_REFERENCE_LENGTH} characters"
            )
        if self.description is not None and len(self.description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidInput(
                "description", f"description must be at most {MAX_DESCRIPTION_LENGTH} characters"
            )
        check_free_text("reference", self.reference)
        check_free_text("description", self.description)
        return self.organization_id

    def fingerprint(self) -> str:
        return idempotency.fingerprint(
            {
                "amountCredits": self.amount_credits,
                "reference": self.reference,
                "description": self.description,
            }
        )


@dataclass(frozen=True)
class Spend:
    """A reservation as the caller sees it, with its approval when it has one."""

    reservation: Reservation
    approval: Approval | None = None

    @property
    def stopped_at_approval(self) -> bool:
        """The spend went no further than the approval gate: still waiting for a decision,
        or refused there (a replay of a rejected spend's key is answered with its approval,
        never as a created reservation)."""
        return self.reservation.status in (S.PENDING_APPROVAL, S.REJECTED)


class SpendService:
    def __init__(
        self,
        db: Database,
        gateway: PaymentGateway | None,
        clock: Clock,
        *,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self._db = db
        self._gateway = gateway
        self._clock = clock
        self._lease = lease

    # -- reserve ----------------------------------------------------------------------------

    async def reserve(self, request: ReserveRequest) -> Spend:
        organization_id = request.validate()
        key = idempotency.validate_key(request.idempotency_key)
        now = self._clock.now()
        async with self._db.write() as session:
            org = await session.get(Organization, organization_id)
            if org is None:
                raise InvalidInput("organization_id", "No such organization")
            claim = await idempotency.claim(
                session,
                organization_id=organization_id,
                operation=OPERATION,
                key=key,
                request_hash=request.fingerprint(),
                now=now,
                lease=self._lease,
            )
            assert claim.record.id is not None
            lock_id = claim.record.id
            if claim.resource_id is not None:
                reservation = await session.get(Reservation, claim.resource_id)
                assert reservation is not None
            else:
                reservation = Reservation(
                    organization_id=organization_id,
                    status=S.HELD.value,
                    billing_mode=_mode_of(org),
                    amount_credits=request.amount_credits,
                    reference=request.reference,
                    description=request.description or "",
                    created_at=now,
                )
                session.add(reservation)
                await session.flush()
                claim.record.resource_id = reservation.id
                threshold = org.approval_threshold_credits
                if threshold is not None and request.amount_credits > threshold:
                    reservation.status = S.PENDING_APPROVAL.value
                    approval = Approval(
                        organization_id=organization_id,
                        reservation_id=reservation.id,  # type: ignore[arg-type]
                        amount_credits=request.amount_credits,
                        reference=request.reference,
                        description=request.description or "",
                        requested_at=now,
                    )
                    session.add(approval)
                    claim.record.locked_until = None
                    await session.flush()
                    await events.approval_requested(session, approval, now)
                    return Spend(reservation, approval)
                await self._hold(session, org, reservation)
            if reservation.status != S.AUTHORIZING:
                claim.record.locked_until = None
                return await self._spend(session, reservation)
        # A card hold: Stripe outside the transaction, the key's lease released whatever happens.
        try:
            reservation = await self._authorize(reservation)
        finally:
            async with self._db.write() as session:
                await idempotency.unlock(session, lock_id)
        return await self.get(reservation.id)

    async def _hold(
        self, session: AsyncSession, org: Organization, reservation: Reservation
    ) -> None:
        """Hold a new (or just approved) reservation by the organization's plan."""
        assert reservation.id is not None
        if org.plan == Plan.ENTERPRISE:
            reservation.billing_mode = BillingMode.ENTERPRISE.value
            reservation.status = S.HELD.value
            return
        try:
            await ledger.post(
                session,
                organization_id=reservation.organization_id,
                movement=ledger.reservation(reservation.amount_credits),
                description=_describe("Reserved", reservation),
                reference=reservation.reference,
                reservation_id=reservation.id,
                now=self._clock.now(),
            )
        except InsufficientCredits:
            if org.plan != Plan.FREE:
                raise
            await self._prepare_card_hold(session, org, reservation)
            return
        reservation.billing_mode = BillingMode.CREDITS.value
        reservation.status = S.HELD.value

    async def _prepare_card_hold(
        self, session: AsyncSession, org: Organization, reservation: Reservation
    ) -> None:
        if self._gateway is None:
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

    async def _authorize(self, reservation: Reservation) -> Reservation:
        """Authorise (or look up) the card hold's PaymentIntent and record the outcome."""
        gateway = self._require_gateway()
        assert reservation.id is not None and reservation.payment_method_stripe_id is not None
        if reservation.payment_intent_id is not None:
            payment = await gateway.retrieve_payment(reservation.payment_intent_id)
        else:
            async with self._db.read() as session:
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
        async with self._db.write() as session:
            fresh = await _locked(session, reservation.id)
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

    # -- settle -----------------------------------------------------------------------------

    async def capture(self, reservation_id: int, amount_credits: int | None) -> Spend:
        now = self._clock.now()
        async with self._db.write() as session:
            r = await _locked(session, reservation_id)
            amount = r.amount_credits if amount_credits is None else amount_credits
            if amount <= 0 or amount > r.amount_credits:
                raise InvalidInput(
                    "amount_credits", f"Capture between 1 and {r.amount_credits} credits"
                )
            if r.status == S.CAPTURED and r.captured_credits == amount:
                return await self._spend(session, r)
            _require_settleable(r, S.HELD, "capture")
            if r.billing_mode == BillingMode.CARD_HOLD:
                if r.pending_settlement == "capture" and r.captured_credits != amount:
                    raise InvalidState("A capture of a different amount is in progress")
                claimed = self._claim_settlement(r, "capture", now)
                r.captured_credits = amount
            else:
                await self._capture_now(session, r, amount, now)
                return await self._spend(session, r)
        if not claimed:
            return await self._after_other_settler(
                reservation_id, lambda: self.capture(reservation_id, amount_credits)
            )
        return await self._finish_card_settlement(r, "capture")

    async def _capture_now(
        self, session: AsyncSession, r: Reservation, amount: int, now: datetime
    ) -> None:
        if r.billing_mode == BillingMode.CREDITS:
            await ledger.post(
                session,
                organization_id=r.organization_id,
                movement=ledger.charge(amount),
                description=_describe("Charged", r),
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
                    description=_describe("Released the rest of", r),
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
        now = self._clock.now()
        async with self._db.write() as session:
            r = await _locked(session, reservation_id)
            if r.status == S.RELEASED:
                return await self._spend(session, r)
            _require_settleable(r, S.HELD, "release")
            if r.billing_mode == BillingMode.CARD_HOLD:
                claimed = self._claim_settlement(r, "release", now)
                r.reason = r.reason if not claimed else reason
            else:
                r.reason = reason
                if r.billing_mode == BillingMode.CREDITS:
                    await ledger.post(
                        session,
                        organization_id=r.organization_id,
                        movement=ledger.release(r.amount_credits),
                        description=_describe("Released", r),
                        reference=r.reference,
                        reservation_id=r.id,
                        now=now,
                    )
                r.status = S.RELEASED.value
                r.settled_at = now
                return await self._spend(session, r)
        if not claimed:
            return await self._after_other_settler(
                reservation_id, lambda: self.release(reservation_id, reason)
            )
        return await self._finish_card_settlement(r, "release")

    async def refund(self, reservation_id: int, reason: str | None = None) -> Spend:
        check_free_text("reason", reason)
        now = self._clock.now()
        async with self._db.write() as session:
            r = await _locked(session, reservation_id)
            if r.status == S.REFUNDED:
                return await self._spend(session, r)
            _require_settleable(r, S.CAPTURED, "refund")
            if r.billing_mode == BillingMode.CARD_HOLD:
                claimed = self._claim_settlement(r, "refund", now)
                r.reason = r.reason if not claimed else reason
            else:
                r.reason = reason
                if r.billing_mode == BillingMode.CREDITS:
                    await ledger.post(
                        session,
                        organization_id=r.organization_id,
                        movement=ledger.refund(r.captured_credits),
                        description=_describe("Refunded", r),
                        reference=r.reference,
                        reservation_id=r.id,
                        now=now,
                    )
                else:
                    await invoices.add_line(session, r, -r.captured_credits, now)
                r.status = S.REFUNDED.value
                r.refunded_at = now
                return await self._spend(session, r)
        if not claimed:
            return await self._after_other_settler(
                reservation_id, lambda: self.refund(reservation_id, reason)
            )
        return await self._finish_card_settlement(r, "refund")

    def _claim_settlement(self, r: Reservation, action: str, now: datetime) -> bool:
        """Record, in the caller's transaction, that this request carries `action` out at
        Stripe. False while another request's claim on it is alive: exactly one request
        calls Stripe for a settlement at a time, and a lapsed claim (its request died
        between Stripe and the database) is taken over with the same Stripe key."""
        claimed_until = r.settlement_claimed_until
        if r.pending_settlement == action and claimed_until is not None and claimed_until > now:
            return False
        r.pending_settlement = action
        r.settlement_claimed_until = now + self._lease
        return True

    async def _after_other_settler(
        self, reservation_id: int, again: Callable[[], Awaitable[Spend]]
    ) -> Spend:
        """Wait (briefly) for the request that holds the settlement, then ask again: its
        success is then replayed, or, if it gave up, this request takes the claim over."""
        deadline = time.monotonic() + SETTLEMENT_WAIT_SECONDS
        pause = 0.02
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
            async with self._db.read() as session:
                r = await session.get(Reservation, reservation_id)
            if r is None or r.pending_settlement is None or r.settlement_claimed_until is None:
                return await again()
        raise PaymentProviderUnavailable(
            "This settlement is being carried out at Stripe by another request; retry shortly"
        )

    async def _give_up_claim(self, reservation_id: int) -> None:
        """The Stripe call failed: keep the pending settlement, free the claim for a retry."""
        async with self._db.write() as session:
            r = await _locked(session, reservation_id)
            r.settlement_claimed_until = None

    async def _finish_card_settlement(self, r: Reservation, action: str) -> Spend:
        """Carry a card hold's claimed settlement out at Stripe, then record it done."""
        assert r.id is not None
        try:
            return await self._call_stripe_to_settle(r, action)
        except BaseException:
            # Whatever went wrong (an outage, a cancelled request), the claim is released
            # so the retry does not wait for the lease; the Stripe key makes it safe.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._give_up_claim(r.id))
            raise

    async def _call_stripe_to_settle(self, r: Reservation, action: str) -> Spend:
        gateway = self._require_gateway()
        assert r.id is not None and r.payment_intent_id is not None
        key = f"{action}:{r.stripe_key}"
        if action == "capture":
            payment = await gateway.capture_payment(
                r.payment_intent_id, amount_cents=r.captured_credits, idempotency_key=key
            )
            if payment.status == CANCELED:
                # Stripe let the authorisation lapse before we captured: nothing was charged.
                await self.mark_card_settled(r.id, "release")
                raise InvalidState("The card hold had already lapsed at Stripe; nothing charged")
            if payment.status != SUCCEEDED:
                raise PaymentProviderUnavailable("Stripe has not confirmed the capture; retry")
        elif action == "release":
            payment = await gateway.cancel_payment(r.payment_intent_id, idempotency_key=key)
            if payment.status == SUCCEEDED:
                raise InvalidState("The card hold was already captured at Stripe")
        else:
            await gateway.refund_payment(
                r.payment_intent_id, amount_cents=r.captured_credits, idempotency_key=key
            )
        return await self.mark_card_settled(r.id, action)

    async def mark_card_settled(self, reservation_id: int, action: str) -> Spend:
        now = self._clock.now()
        status = {"capture": S.CAPTURED, "release": S.RELEASED, "refund": S.REFUNDED}[action]
        async with self._db.write() as session:
            r = await _locked(session, reservation_id)
            if r.pending_settlement == action or (action == "release" and r.status == S.HELD):
                r.status = status.value
                r.pending_settlement = None
                r.settlement_claimed_until = None
                if action == "refund":
                    r.refunded_at = now
                else:
                    r.settled_at = now
            return await self._spend(session, r)

    # -- approvals --------------------------------------------------------------------------

    async def approve(self, organization_id: int, approval_id: int, token_id: int) -> Spend:
        now = self._clock.now()
        async with self._db.write() as session:
            approval = await _locked_approval(session, organization_id, approval_id)
            r = await _locked(session, approval.reservation_id)
            if approval.status == ApprovalStatus.APPROVED:
                return await self._spend(session, r)
            if approval.status != ApprovalStatus.PENDING:
                raise InvalidState(f"This request was already {approval.status.lower()}")
            if r.status == S.PENDING_APPROVAL:
                org = await session.get(Organization, organization_id)
                assert org is not None
                await self._hold(session, org, r)
            if r.status == S.HELD:
                _decide(approval, ApprovalStatus.APPROVED, now, token_id)
                await events.approval_decided(session, approval, now)
                return await self._spend(session, r)
        # A card hold: authorise at Stripe, then decide.
        r = await self._authorize(r)
        if r.status == S.HELD:
            async with self._db.write() as session:
                approval = await _locked_approval(session, organization_id, approval_id)
                if approval.status == ApprovalStatus.PENDING:
                    _decide(approval, ApprovalStatus.APPROVED, now, token_id)
                    await events.approval_decided(session, approval, now)
        assert r.id is not None
        return await self.get(r.id)

    async def reject(
        self, organization_id: int, approval_id: int, token_id: int, reason: str | None
    ) -> Spend:
        check_free_text("reason", reason)
        now = self._clock.now()
        async with self._db.write() as session:
            approval = await _locked_approval(session, organization_id, approval_id)
            r = await _locked(session, approval.reservation_id)
            if approval.status == ApprovalStatus.REJECTED:
                return await self._spend(session, r)
            # Still undecided and holding nothing: waiting, or an approval whose card hold
            # was declined or never authenticated.
            holds_nothing = (S.PENDING_APPROVAL, S.FAILED, S.AUTHORIZING)
            if approval.status != ApprovalStatus.PENDING or r.status not in holds_nothing:
                raise InvalidState("This request was already decided")
            abandoned_intent = r.payment_intent_id if r.status == S.AUTHORIZING else None
            _decide(approval, ApprovalStatus.REJECTED, now, token_id)
            approval.reason = reason
            r.status = S.REJECTED.value
            r.client_secret = None
            r.settled_at = now
            await events.approval_decided(session, approval, now)
            spend = Spend(r, approval)
        if abandoned_intent is not None:
            await self._cancel_quietly(abandoned_intent, r.stripe_key)
        return spend

    async def _cancel_quietly(self, intent_id: str, stripe_key: str) -> None:
        """Cancel an authorisation nobody will complete; Stripe expires it anyway if this fails."""
        if self._gateway is None:
            return
        with contextlib.suppress(BillingProblem):
            await self._gateway.cancel_payment(intent_id, idempotency_key=f"release:{stripe_key}")

    # -- reading ----------------------------------------------------------------------------

    async def get(self, reservation_id: int | None) -> Spend:
        assert reservation_id is not None
        async with self._db.read() as session:
            r = await session.get(Reservation, reservation_id)
            if r is None:
                raise NotFound("No such reservation")
            return await self._spend(session, r)

    async def _spend(self, session: AsyncSession, r: Reservation) -> Spend:
        """The caller's answer for a reservation's state (problems are raised)."""
        if r.status == S.FAILED:
            raise CardDeclined(r.decline_code, r.reason or "The card was declined")
        if r.status == S.AUTHORIZING:
            if r.client_secret and r.payment_intent_id:
                raise AuthenticationRequired(
                    client_secret=r.client_secret,
                    payment_intent_id=r.payment_intent_id,
                    payment_method_id=r.payment_method_stripe_id,
                )
            raise PaymentProviderUnavailable(
                "The card hold is still being authorised at Stripe; retry with the same key"
            )
        query = select(Approval).where(col(Approval.reservation_id) == r.id)
        approval = (await session.execute(query)).scalar_one_or_none()
        return Spend(r, approval)

    def _require_gateway(self) -> PaymentGateway:
        if self._gateway is None:
            raise BillingNotConfigured()
        return self._gateway

    async def release_expired_card_holds(self, ttl: timedelta) -> int:
        """Release card holds not settled within `ttl` (Stripe cancels them at about 7 days)."""
        cutoff = self._clock.now() - ttl
        async with self._db.read() as session:
            query = select(col(Reservation.id)).where(
                col(Reservation.billing_mode) == BillingMode.CARD_HOLD.value,
                col(Reservation.status) == S.HELD.value,
                col(Reservation.created_at) < cutoff,
            )
            expired = [pk for pk in (await session.execute(query)).scalars() if pk is not None]
            never_authenticated = (
                await session.execute(
                    select(Reservation).where(
                        col(Reservation.status) == S.AUTHORIZING.value,
                        col(Reservation.created_at) < cutoff,
                    )
                )
            ).scalars()
            abandoned = list(never_authenticated)
        for stale in abandoned:
            await self._abandon(stale)
        released = 0
        for reservation_id in expired:
            try:
                await self.release(reservation_id, "Card hold expired")
                released += 1
            except InvalidState:
                continue  # settled meanwhile
        return released

    async def finish_lapsed_card_settlements(self) -> int:
        """Finish card hold settlements whose request died after claiming them (its claim
        lapsed): the same call again, with the same Stripe key, so Stripe acts once."""
        now = self._clock.now()
        async with self._db.read() as session:
            query = select(
                col(Reservation.id),
                col(Reservation.pending_settlement),
                col(Reservation.captured_credits),
                col(Reservation.reason),
            ).where(
                col(Reservation.billing_mode) == BillingMode.CARD_HOLD.value,
                col(Reservation.pending_settlement).is_not(None),
                col(Reservation.settlement_claimed_until) <= now,
            )
            lapsed = (await session.execute(query)).all()
        finished = 0
        for reservation_id, action, captured_credits, reason in lapsed:
            assert reservation_id is not None
            try:
                if action == "capture":
                    await self.capture(reservation_id, captured_credits)
                elif action == "release":
                    await self.release(reservation_id, reason)
                else:
                    await self.refund(reservation_id, reason)
                finished += 1
            except BillingProblem:
                continue  # Stripe still unreachable, or settled otherwise: a retry decides
        return finished

    async def _abandon(self, stale: Reservation) -> None:
        """A card hold never completed (3-D Secure not done, or its answer lost to a
        timeout and never retried): give up on it, and cancel any authorisation Stripe
        made so the customer's card is not held until Stripe lets it lapse."""
        intent_id = stale.payment_intent_id or await self._find_hold(stale)
        async with self._db.write() as session:
            r = await _locked(session, stale.id)
            if r.status != S.AUTHORIZING:
                return
            r.status = S.FAILED.value
            r.reason = "The card hold was never completed"
            r.client_secret = None
        if intent_id is not None:
            await self._cancel_quietly(intent_id, r.stripe_key)

    async def _find_hold(self, r: Reservation) -> str | None:
        if self._gateway is None:
            return None
        async with self._db.read() as session:
            org = await session.get(Organization, r.organization_id)
        if org is None or org.stripe_customer_id is None:
            return None
        with contextlib.suppress(BillingProblem):
            found = await self._gateway.find_payment(
                org.stripe_customer_id, "reservation_id", str(r.id)
            )
            return found.intent_id if found is not None else None
        return None


def _mode_of(org: Organization) -> str:
    return (BillingMode.ENTERPRISE if org.plan == Plan.ENTERPRISE else BillingMode.CREDITS).value


def _describe(verb: str, r: Reservation) -> str:
    text = f"{verb} {r.reference}"
    return f"{text}: {r.description}" if r.description else text


def _require_settleable(r: Reservation, expected: ReservationStatus, action: str) -> None:
    in_flight = r.pending_settlement
    if r.status != expected or (in_flight is not None and in_flight != action):
        shown = in_flight or r.status.lower()
        raise InvalidState(f"Cannot {action} a reservation that is {shown}")


def _decide(approval: Approval, status: ApprovalStatus, now: datetime, token_id: int) -> None:
    approval.status = status.value
    approval.decided_at = now
    approval.decided_by_token_id = token_id


async def _locked(session: AsyncSession, reservation_id: int | None) -> Reservation:
    query = (
        select(Reservation)
        .where(col(Reservation.id) == reservation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    r = (await session.execute(query)).scalar_one_or_none()
    if r is None:
        raise NotFound("No such reservation")
    return r


async def _locked_approval(
    session: AsyncSession, organization_id: int, approval_id: int
) -> Approval:
    query = (
        select(Approval)
        .where(col(Approval.id) == approval_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    approval = (await session.execute(query)).scalar_one_or_none()
    if approval is None or approval.organization_id != organization_id:
        raise NotFound("No such approval")
    return approval
