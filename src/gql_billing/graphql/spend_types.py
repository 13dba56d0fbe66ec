"""Types of spend: reservations, approvals and enterprise invoices."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from sqlalchemy import select
from sqlmodel import col

from .. import models
from .context import Info
from .ids import to_global_id
from .scalars import Credits
from .types import Money, Node, PageInfo, money


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


@strawberry.type
class Reservation(Node):
    row: strawberry.Private[models.Reservation]

    @classmethod
    def from_row(cls, row: models.Reservation) -> Reservation:
        assert row.id is not None
        return cls(id=strawberry.ID(to_global_id("Reservation", row.id)), row=row)

    @strawberry.field
    def status(self) -> ReservationStatus:
        return visible_status(self.row)

    @strawberry.field
    def billing_mode(self) -> BillingMode:  # type: ignore[valid-type]
        return models.BillingMode(self.row.billing_mode)

    @strawberry.field
    def amount_credits(self) -> Credits:
        return self.row.amount_credits

    @strawberry.field
    def captured_credits(self) -> Credits:
        return self.row.captured_credits

    @strawberry.field
    def reference(self) -> str:
        return self.row.reference

    @strawberry.field
    def description(self) -> str:
        return self.row.description

    @strawberry.field(description="The Stripe PaymentIntent of a card hold (CARD_HOLD).")
    def payment_intent_id(self) -> str | None:
        return self.row.payment_intent_id

    @strawberry.field
    async def approval(self, info: Info) -> Approval | None:
        query = select(models.Approval).where(col(models.Approval.reservation_id) == self.row.id)
        async with info.context.billing.db.read() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        return Approval.from_row(row) if row else None

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field
    def settled_at(self) -> datetime | None:
        return self.row.settled_at


@strawberry.type
class Approval(Node):
    row: strawberry.Private[models.Approval]

    @classmethod
    def from_row(cls, row: models.Approval) -> Approval:
        assert row.id is not None
        return cls(id=strawberry.ID(to_global_id("Approval", row.id)), row=row)

    @strawberry.field
    def status(self) -> ApprovalStatus:  # type: ignore[valid-type]
        return models.ApprovalStatus(self.row.status)

    @strawberry.field
    def amount_credits(self) -> Credits:
        return self.row.amount_credits

    @strawberry.field
    def reference(self) -> str:
        return self.row.reference

    @strawberry.field
    def description(self) -> str:
        return self.row.description

    @strawberry.field
    def requested_at(self) -> datetime:
        return self.row.requested_at

    @strawberry.field
    def decided_at(self) -> datetime | None:
        return self.row.decided_at

    @strawberry.field
    def reason(self) -> str | None:
        return self.row.reason

    @strawberry.field
    async def reservation(self, info: Info) -> Reservation | None:
        async with info.context.billing.db.read() as session:
            row = await session.get(models.Reservation, self.row.reservation_id)
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
