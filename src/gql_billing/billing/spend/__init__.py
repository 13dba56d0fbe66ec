"""Spend: reserve at placement, settle once on the outcome.

One module per decision: `reserve` (by plan, with the approval gate), `settlement`
(capture, release, refund), `card_holds` (Stripe authorisations and their settlement,
claimed before Stripe is called), `approvals` (approve, reject), `expiry` (the worker's
sweeps); `rules` holds what they share. `SpendService` is the one door the APIs and the
worker use.
"""

from __future__ import annotations

from datetime import timedelta

from ...clock import Clock
from ...db import Database
from ...stripe_gateway import PaymentGateway
from .approvals import Approvals
from .card_holds import CardHolds
from .expiry import Expiry
from .reserve import Reserving
from .rules import (
    MAX_DESCRIPTION_LENGTH,
    MAX_REFERENCE_LENGTH,
    OPERATION,
    ReserveRequest,
    SettlementAction,
    Spend,
    SpendDeps,
    get,
)
from .settlement import Settling

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_REFERENCE_LENGTH",
    "OPERATION",
    "ReserveRequest",
    "SettlementAction",
    "Spend",
    "SpendService",
]


class SpendService:
    def __init__(
        self,
        db: Database,
        gateway: PaymentGateway | None,
        clock: Clock,
        *,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self._deps = SpendDeps(db=db, gateway=gateway, clock=clock, lease=lease)
        holds = CardHolds(self._deps)
        reserving = Reserving(self._deps, holds)
        settling = Settling(self._deps, holds)
        approvals = Approvals(self._deps, reserving, holds)
        expiry = Expiry(self._deps, settling, holds)
        self.reserve = reserving.reserve
        self.capture = settling.capture
        self.release = settling.release
        self.refund = settling.refund
        self.approve = approvals.approve
        self.reject = approvals.reject
        self.mark_card_settled = holds.mark_settled
        self.release_expired_card_holds = expiry.release_expired_card_holds
        self.finish_lapsed_card_settlements = expiry.finish_lapsed_card_settlements

    async def get(self, reservation_id: int | None) -> Spend:
        return await get(self._deps, reservation_id)
