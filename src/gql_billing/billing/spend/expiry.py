"""The worker's part of spend: card holds not settled in time are released (Stripe cancels
uncaptured authorisations at about 7 days), holds never completed are abandoned, and card
settlements whose request died after claiming them are finished."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from ...errors import BillingProblem, InvalidState
from ...models import BillingMode, Reservation
from .card_holds import CardHolds
from .rules import S, SettlementAction, SpendDeps
from .settlement import Settling

A = SettlementAction


class Expiry:
    def __init__(self, deps: SpendDeps, settling: Settling, holds: CardHolds) -> None:
        self._deps = deps
        self._settling = settling
        self._holds = holds

    async def release_expired_card_holds(self, ttl: timedelta) -> int:
        """Release card holds not settled within `ttl` (Stripe cancels them at about 7 days)."""
        cutoff = self._deps.clock.now() - ttl
        async with self._deps.db.read() as session:
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
            await self._holds.abandon(stale)
        released = 0
        for reservation_id in expired:
            try:
                await self._settling.release(reservation_id, "Card hold expired")
                released += 1
            except InvalidState:
                continue  # settled meanwhile
        return released

    async def finish_lapsed_card_settlements(self) -> int:
        """Finish card hold settlements whose request died after claiming them (its claim
        lapsed): the same call again, with the same Stripe key, so Stripe acts once."""
        now = self._deps.clock.now()
        async with self._deps.db.read() as session:
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
                if action == A.CAPTURE:
                    await self._settling.capture(reservation_id, captured_credits)
                elif action == A.RELEASE:
                    await self._settling.release(reservation_id, reason)
                else:
                    await self._settling.refund(reservation_id, reason)
                finished += 1
            except BillingProblem:
                continue  # Stripe still unreachable, or settled otherwise: a retry decides
        return finished
