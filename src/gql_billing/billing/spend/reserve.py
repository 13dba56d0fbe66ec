"""Reserve at placement: by plan, credits are held in the ledger (STANDARD, FREE with
enough), a card hold is authorised (FREE without), or nothing is held (ENTERPRISE: captures
are invoiced). Above the organization's approval threshold the reservation waits for a
decision, holding nothing."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ... import idempotency, ledger
from ...customer_webhooks import events
from ...errors import InsufficientCredits, InvalidInput
from ...models import Approval, BillingMode, Organization, Plan, Reservation
from .card_holds import CardHolds
from .rules import OPERATION, ReserveRequest, S, Spend, SpendDeps, answer, describe, get, mode_of


class Reserving:
    def __init__(self, deps: SpendDeps, holds: CardHolds) -> None:
        self._deps = deps
        self._holds = holds

    async def reserve(self, request: ReserveRequest) -> Spend:
        organization_id = request.validate()
        key = idempotency.validate_key(request.idempotency_key)
        now = self._deps.clock.now()
        async with self._deps.db.write() as session:
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
                lease=self._deps.lease,
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
                    billing_mode=mode_of(org),
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
                await self.hold(session, org, reservation)
            if reservation.status != S.AUTHORIZING:
                claim.record.locked_until = None
                return await answer(session, reservation)
        # A card hold: Stripe outside the transaction, the key's lease released whatever happens.
        try:
            reservation = await self._holds.authorize(reservation)
        finally:
            async with self._deps.db.write() as session:
                await idempotency.unlock(session, lock_id)
        return await get(self._deps, reservation.id)

    async def hold(
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
                description=describe("Reserved", reservation),
                reference=reservation.reference,
                reservation_id=reservation.id,
                now=self._deps.clock.now(),
            )
        except InsufficientCredits:
            if org.plan != Plan.FREE:
                raise
            await self._holds.prepare(session, org, reservation)
            return
        reservation.billing_mode = BillingMode.CREDITS.value
        reservation.status = S.HELD.value
