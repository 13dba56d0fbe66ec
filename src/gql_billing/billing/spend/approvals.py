"""Decisions on spends above the approval threshold: approving holds the reservation as
reserve would have (and may fail the same ways), rejecting ends it. A decision is made once;
repeating the one that was made replays it."""

from __future__ import annotations

from ...customer_webhooks import events
from ...errors import InvalidState
from ...freetext import check_free_text
from ...models import ApprovalStatus, Organization
from .card_holds import CardHolds
from .reserve import Reserving
from .rules import S, Spend, SpendDeps, answer, decide, get, locked, locked_approval


class Approvals:
    def __init__(self, deps: SpendDeps, reserving: Reserving, holds: CardHolds) -> None:
        self._deps = deps
        self._reserving = reserving
        self._holds = holds

    async def approve(self, organization_id: int, approval_id: int, token_id: int) -> Spend:
        now = self._deps.clock.now()
        async with self._deps.db.write() as session:
            approval = await locked_approval(session, organization_id, approval_id)
            r = await locked(session, approval.reservation_id)
            if approval.status == ApprovalStatus.APPROVED:
                return await answer(session, r)
            if approval.status != ApprovalStatus.PENDING:
                raise InvalidState(f"This request was already {approval.status.lower()}")
            if r.status == S.PENDING_APPROVAL:
                org = await session.get(Organization, organization_id)
                assert org is not None
                await self._reserving.hold(session, org, r)
            if r.status == S.HELD:
                decide(approval, ApprovalStatus.APPROVED, now, token_id)
                await events.approval_decided(session, approval, now)
                return await answer(session, r)
        # A card hold: authorise at Stripe, then decide.
        r = await self._holds.authorize(r)
        if r.status == S.HELD:
            async with self._deps.db.write() as session:
                approval = await locked_approval(session, organization_id, approval_id)
                if approval.status == ApprovalStatus.PENDING:
                    decide(approval, ApprovalStatus.APPROVED, now, token_id)
                    await events.approval_decided(session, approval, now)
        assert r.id is not None
        return await get(self._deps, r.id)

    async def reject(
        self, organization_id: int, approval_id: int, token_id: int, reason: str | None
    ) -> Spend:
        check_free_text("reason", reason)
        now = self._deps.clock.now()
        async with self._deps.db.write() as session:
            approval = await locked_approval(session, organization_id, approval_id)
            r = await locked(session, approval.reservation_id)
            if approval.status == ApprovalStatus.REJECTED:
                return await answer(session, r)
            # Still undecided and holding nothing: waiting, or an approval whose card hold
            # was declined or never authenticated.
            holds_nothing = (S.PENDING_APPROVAL, S.FAILED, S.AUTHORIZING)
            if approval.status != ApprovalStatus.PENDING or r.status not in holds_nothing:
                raise InvalidState("This request was already decided")
            abandoned_intent = r.payment_intent_id if r.status == S.AUTHORIZING else None
            decide(approval, ApprovalStatus.REJECTED, now, token_id)
            approval.reason = reason
            r.status = S.REJECTED.value
            r.client_secret = None
            r.settled_at = now
            await events.approval_decided(session, approval, now)
            spend = Spend(r, approval)
        if abandoned_intent is not None:
            await self._holds.cancel_quietly(abandoned_intent, r.stripe_key)
        return spend
