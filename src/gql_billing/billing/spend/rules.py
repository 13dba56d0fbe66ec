"""What every part of spend shares: the request and answer types, the settlement actions,
the rules a reservation's state obeys, and row locks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ... import idempotency
from ...clock import Clock
from ...db import Database
from ...errors import (
    AuthenticationRequired,
    BillingNotConfigured,
    CardDeclined,
    InvalidInput,
    InvalidState,
    NotFound,
    PaymentProviderUnavailable,
)
from ...freetext import check_free_text
from ...models import (
    Approval,
    ApprovalStatus,
    BillingMode,
    Organization,
    Plan,
    Reservation,
    ReservationStatus,
)
from ...money import check_credits
from ...stripe_gateway import PaymentGateway

OPERATION = "reserveCredits"
# How long a request waits for another one carrying out the same card hold settlement at
# Stripe before answering "in progress, retry" (the winner's answer is then replayed).
SETTLEMENT_WAIT_SECONDS = 5.0
MAX_REFERENCE_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 500

S = ReservationStatus


class SettlementAction(StrEnum):
    """A card hold's settlement at Stripe, as stored in `pending_settlement` while it is in
    flight; each is also the prefix of its Stripe idempotency key."""

    CAPTURE = "capture"
    RELEASE = "release"
    REFUND = "refund"

    @property
    def outcome(self) -> ReservationStatus:
        return {
            SettlementAction.CAPTURE: S.CAPTURED,
            SettlementAction.RELEASE: S.RELEASED,
            SettlementAction.REFUND: S.REFUNDED,
        }[self]


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


@dataclass(frozen=True)
class SpendDeps:
    """The collaborators every part of spend works with."""

    db: Database
    gateway: PaymentGateway | None
    clock: Clock
    lease: timedelta

    def require_gateway(self) -> PaymentGateway:
        if self.gateway is None:
            raise BillingNotConfigured()
        return self.gateway


async def get(deps: SpendDeps, reservation_id: int | None) -> Spend:
    assert reservation_id is not None
    async with deps.db.read() as session:
        r = await session.get(Reservation, reservation_id)
        if r is None:
            raise NotFound("No such reservation")
        return await answer(session, r)


async def answer(session: AsyncSession, r: Reservation) -> Spend:
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


def mode_of(org: Organization) -> str:
    return (BillingMode.ENTERPRISE if org.plan == Plan.ENTERPRISE else BillingMode.CREDITS).value


def describe(verb: str, r: Reservation) -> str:
    text = f"{verb} {r.reference}"
    return f"{text}: {r.description}" if r.description else text


def require_settleable(r: Reservation, expected: ReservationStatus, action: str) -> None:
    in_flight = r.pending_settlement
    if r.status != expected or (in_flight is not None and in_flight != action):
        shown = in_flight or r.status.lower()
        raise InvalidState(f"Cannot {action} a reservation that is {shown}")


def decide(approval: Approval, status: ApprovalStatus, now: datetime, token_id: int) -> None:
    approval.status = status.value
    approval.decided_at = now
    approval.decided_by_token_id = token_id


async def locked(session: AsyncSession, reservation_id: int | None) -> Reservation:
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


async def locked_approval(
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
