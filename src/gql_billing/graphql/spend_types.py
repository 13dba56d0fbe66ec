"""Types of spend: reservations, approvals and enterprise invoices."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from sqlalchemy import select
from sqlmodel import col

from .. import models
from .common import Money, Node, PageInfo, money
from .context import Info
from .ids import to_global_id
from .scalars import Credits


@strawberry.enum(name="ReservationStatus")
class ReservationStatus(Enum):
    """What a client sees; a card hold's internal steps are not among them."""

    PENDING_APPROVAL = "PENDING_APPROVAL"
    HELD = "HELD"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    REFUNDED = "REFUNDED"
    REJECTED = "REJECTED"


BillingMode = strawberry.enum(models.BillingMode, name="BillingMode")
ApprovalStatus = strawberry.enum(models.ApprovalStatus, name="ApprovalStatus")
InvoiceStatus = strawberry.enum(models.InvoiceStatus, name="InvoiceStatus")


def visible_status(row: models.Reservation) -> ReservationStatus:
    """A card hold still being authorised reads as held, a declined one as released; the
    `reservations` query does not list either."""
    status = models.ReservationStatus(row.status)
    if status == models.ReservationStatus.AUTHORIZING:
        return ReservationStatus.HELD
    if status == models.ReservationStatus.FAILED:
        return ReservationStatus.RELEASED
    return ReservationStatus(status.value)


async def _approval_of(root: Reservation, info: Info) -> Approval | None:
    assert root.row.id is not None
    row = await info.context.loaders.approval_of_reservation.load(root.row.id)
    return Approval.from_row(row) if row else None


@strawberry.type
class Reservation(Node):
    row: strawberry.Private[models.Reservation]
    status: ReservationStatus
    billing_mode: BillingMode  # type: ignore[valid-type]
    amount_credits: Credits
    captured_credits: Credits
    reference: str
    description: str
    payment_intent_id: str | None = strawberry.field(
        description="The Stripe PaymentIntent of a card hold (CARD_HOLD)."
    )

    @classmethod
    def from_row(cls, row: models.Reservation) -> Reservation:
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("Reservation", row.id)),
            row=row,
            status=visible_status(row),
            billing_mode=models.BillingMode(row.billing_mode),
            amount_credits=row.amount_credits,
            captured_credits=row.captured_credits,
            reference=row.reference,
            description=row.description,
            payment_intent_id=row.payment_intent_id,
            created_at=row.created_at,
            settled_at=row.settled_at,
        )

    approval: Approval | None = strawberry.field(resolver=_approval_of)
    created_at: datetime
    settled_at: datetime | None


@strawberry.type
class Approval(Node):
    row: strawberry.Private[models.Approval]
    status: ApprovalStatus  # type: ignore[valid-type]
    amount_credits: Credits
    reference: str
    description: str
    requested_at: datetime
    decided_at: datetime | None
    reason: str | None

    @classmethod
    def from_row(cls, row: models.Approval) -> Approval:
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("Approval", row.id)),
            row=row,
            status=models.ApprovalStatus(row.status),
            amount_credits=row.amount_credits,
            reference=row.reference,
            description=row.description,
            requested_at=row.requested_at,
            decided_at=row.decided_at,
            reason=row.reason,
        )

    @strawberry.field
    async def reservation(self, info: Info) -> Reservation | None:
        # Through the loader: a page of approvals reads its reservations in one query.
        row = await info.context.loaders.reservation.load(self.row.reservation_id)
        return Reservation.from_row(row) if row else None


@strawberry.type
class InvoiceLine:
    reference: str
    description: str
    amount_credits: Credits
    created_at: datetime


@strawberry.type
class Invoice(Node):
    row: strawberry.Private[models.Invoice]

    @classmethod
    def from_row(cls, row: models.Invoice) -> Invoice:
        assert row.id is not None
        return cls(id=strawberry.ID(to_global_id("Invoice", row.id)), row=row)

    @strawberry.field(description='The month, "2026-11".')
    def period(self) -> str:
        return self.row.period

    @strawberry.field
    def status(self) -> InvoiceStatus:  # type: ignore[valid-type]
        return models.InvoiceStatus(self.row.status)

    @strawberry.field
    def total_credits(self) -> Credits:
        return self.row.total_credits

    @strawberry.field
    def total(self, info: Info) -> Money:
        return money(info, self.row.total_credits, None)

    @strawberry.field
    async def lines(self, info: Info) -> list[InvoiceLine]:
        query = (
            select(models.InvoiceLine)
            .where(col(models.InvoiceLine.invoice_id) == self.row.id)
            .order_by(col(models.InvoiceLine.id))
        )
        async with info.context.billing.db.read() as session:
            rows = (await session.execute(query)).scalars().all()
        return [
            InvoiceLine(
                reference=r.reference,
                description=r.description,
                amount_credits=r.amount_credits,
                created_at=r.created_at,
            )
            for r in rows
        ]


@strawberry.type
class ReservationEdge:
    cursor: str
    node: Reservation


@strawberry.type
class ReservationConnection:
    edges: list[ReservationEdge]
    page_info: PageInfo


@strawberry.type
class ApprovalEdge:
    cursor: str
    node: Approval


@strawberry.type
class ApprovalConnection:
    edges: list[ApprovalEdge]
    page_info: PageInfo


@strawberry.type
class InvoiceEdge:
    cursor: str
    node: Invoice


@strawberry.type
class InvoiceConnection:
    edges: list[InvoiceEdge]
    page_info: PageInfo
