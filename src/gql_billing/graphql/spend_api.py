"""Spend over GraphQL: service tokens reserve and settle; organizations list and approve."""

from __future__ import annotations

from typing import Annotated

import strawberry
from sqlalchemy import select
from sqlmodel import col

from .. import errors, models
from ..auth import Scope as AuthScope
from ..billing.spend import ReserveRequest, Spend
from . import problems as p
from .context import Info
from .ids import pk_of
from .mutations import current_wallet, idempotency_key
from .pagination import PageArgs, edges_of
from .permissions import needs, sees_customer_data
from .queries import READ, page_of
from .scalars import Credits
from .spend_types import (
    Approval,
    ApprovalConnection,
    ApprovalEdge,
    ApprovalStatus,
    BillingMode,
    Invoice,
    InvoiceConnection,
    InvoiceEdge,
    Reservation,
    ReservationConnection,
    ReservationEdge,
    ReservationStatus,
)
from .types import Wallet

SPEND = [needs(AuthScope.BILLING_SPEND)]
APPROVE = [needs(AuthScope.BILLING_APPROVE)]


@strawberry.input
class ReserveCreditsInput:
    organization_id: strawberry.ID
    amount_credits: Credits
    reference: str
    description: str | None = None
    idempotency_key: str | None = None


@strawberry.input
class CaptureReservationInput:
    reservation_id: strawberry.ID
    amount_credits: Credits | None = None


@strawberry.input
class ReleaseReservationInput:
    reservation_id: strawberry.ID
    reason: str | None = None


@strawberry.input
class RefundReservationInput:
    reservation_id: strawberry.ID
    reason: str | None = None


@strawberry.input
class DecideApprovalInput:
    approval_id: strawberry.ID
    reason: str | None = None


@strawberry.type
class ReservationCreated:
    reservation: Reservation
    billing_mode: BillingMode  # type: ignore[valid-type]
    wallet: Wallet


@strawberry.type(
    description="The spend waits for a billing:approve decision (its reservation is "
    "PENDING_APPROVAL), or, when the same key is sent again after the decision, was "
    "rejected (the approval and its reservation are REJECTED)."
)
class ApprovalRequired:
    approval: Approval


@strawberry.type
class ReservationCaptured:
    reservation: Reservation
    billing_mode: BillingMode  # type: ignore[valid-type]
    wallet: Wallet


@strawberry.type
class ReservationReleased:
    reservation: Reservation
    wallet: Wallet


@strawberry.type
class ReservationRefunded:
    reservation: Reservation
    wallet: Wallet


@strawberry.type
class ApprovalDecided:
    approval: Approval


ReserveCreditsResult = Annotated[
    ReservationCreated
    | ApprovalRequired
    | p.InsufficientCredits
    | p.AuthenticationRequired
    | p.PaymentMethodRequired
    | p.CardDeclined
    | p.InvalidInput
    | p.IdempotencyConflict
    | p.PaymentProviderUnavailable
    | p.BillingNotConfigured,
    strawberry.union("ReserveCreditsResult"),
]
CaptureReservationResult = Annotated[
    ReservationCaptured
    | p.NotFound
    | p.InvalidState
    | p.InvalidInput
    | p.PaymentProviderUnavailable,
    strawberry.union("CaptureReservationResult"),
]
ReleaseReservationResult = Annotated[
    ReservationReleased
    | p.NotFound
    | p.InvalidState
    | p.PaymentProviderUnavailable
    | p.InvalidInput,
    strawberry.union("ReleaseReservationResult"),
]
RefundReservationResult = Annotated[
    ReservationRefunded
    | p.NotFound
    | p.InvalidState
    | p.PaymentProviderUnavailable
    | p.InvalidInput,
    strawberry.union("RefundReservationResult"),
]
DecideApprovalResult = Annotated[
    ApprovalDecided
    | p.NotFound
    | p.InvalidState
    | p.InsufficientCredits
    | p.AuthenticationRequired
    | p.PaymentMethodRequired
    | p.CardDeclined
    | p.PaymentProviderUnavailable
    | p.BillingNotConfigured
    | p.InvalidInput,
    strawberry.union("DecideApprovalResult"),
]


def _reservation_pk(global_id: str) -> int:
    pk = pk_of(global_id, "Reservation")
    if pk is None:
        raise errors.NotFound("No such reservation")
    return pk


def _approval_pk(global_id: str) -> int:
    pk = pk_of(global_id, "Approval")
    if pk is None:
        raise errors.NotFound("No such approval")
    return pk


def _as_seen_by_service(info: Info, exc: errors.BillingProblem) -> errors.BillingProblem:
    """A failed reserve tells a service token only that the amount is not available: the
    organization's balance is not its to read (`availableCredits` reads 0)."""
    if not isinstance(exc, errors.InsufficientCredits) or sees_customer_data(
        info.context.principal
    ):
        return exc
    hidden = errors.InsufficientCredits(0, exc.requested_credits)
    hidden.detail = f"{exc.requested_credits} credits requested: more than is available"
    return hidden


def _mode(spend: Spend) -> models.BillingMode:
    return models.BillingMode(spend.reservation.billing_mode)


@strawberry.type
class SpendMutation:
    @strawberry.mutation(
        permission_classes=SPEND,
        description="billing:spend (service token). Reserve credits for an external spend.",
    )
    @p.problems_as_members
    async def reserve_credits(self, info: Info, input: ReserveCreditsInput) -> ReserveCreditsResult:
        request = ReserveRequest(
            organization_id=pk_of(input.organization_id, "Organization"),
            amount_credits=input.amount_credits,
            reference=input.reference,
            description=input.description,
            idempotency_key=idempotency_key(info, input.idempotency_key),
        )
        try:
            spend = await info.context.billing.spend.reserve(request)
        except errors.BillingProblem as exc:
            raise _as_seen_by_service(info, exc) from None
        if spend.stopped_at_approval:
            assert spend.approval is not None
            return ApprovalRequired(approval=Approval.from_row(spend.approval))
        return ReservationCreated(
            reservation=Reservation.from_row(spend.reservation),
            billing_mode=_mode(spend),
            wallet=await current_wallet(info, spend.reservation.organization_id),
        )

    @strawberry.mutation(
        permission_classes=SPEND,
        description="billing:spend. Settle a reservation; any remainder is released.",
    )
    @p.problems_as_members
    async def capture_reservation(
        self, info: Info, input: CaptureReservationInput
    ) -> CaptureReservationResult:
        spend = await info.context.billing.spend.capture(
            _reservation_pk(input.reservation_id), input.amount_credits
        )
        return ReservationCaptured(
            reservation=Reservation.from_row(spend.reservation),
            billing_mode=_mode(spend),
            wallet=await current_wallet(info, spend.reservation.organization_id),
        )

    @strawberry.mutation(permission_classes=SPEND, description="billing:spend. Void a reservation.")
    @p.problems_as_members
    async def release_reservation(
        self, info: Info, input: ReleaseReservationInput
    ) -> ReleaseReservationResult:
        spend = await info.context.billing.spend.release(
            _reservation_pk(input.reservation_id), input.reason
        )
        return ReservationReleased(
            reservation=Reservation.from_row(spend.reservation),
            wallet=await current_wallet(info, spend.reservation.organization_id),
        )

    @strawberry.mutation(
        permission_classes=SPEND, description="billing:spend. Return a captured spend."
    )
    @p.problems_as_members
    async def refund_reservation(
        self, info: Info, input: RefundReservationInput
    ) -> RefundReservationResult:
        spend = await info.context.billing.spend.refund(
            _reservation_pk(input.reservation_id), input.reason
        )
        return ReservationRefunded(
            reservation=Reservation.from_row(spend.reservation),
            wallet=await current_wallet(info, spend.reservation.organization_id),
        )

    @strawberry.mutation(
        permission_classes=APPROVE, description="billing:approve. Approve a large purchase."
    )
    @p.problems_as_members
    async def approve_spend(self, info: Info, input: DecideApprovalInput) -> DecideApprovalResult:
        principal = info.context.principal
        spend = await info.context.billing.spend.approve(
            info.context.organization_id, _approval_pk(input.approval_id), principal.token_id
        )
        assert spend.approval is not None
        return ApprovalDecided(approval=Approval.from_row(spend.approval))

    @strawberry.mutation(
        permission_classes=APPROVE, description="billing:approve. Reject a large purchase."
    )
    @p.problems_as_members
    async def reject_spend(self, info: Info, input: DecideApprovalInput) -> DecideApprovalResult:
        principal = info.context.principal
        spend = await info.context.billing.spend.reject(
            info.context.organization_id,
            _approval_pk(input.approval_id),
            principal.token_id,
            input.reason,
        )
        assert spend.approval is not None
        return ApprovalDecided(approval=Approval.from_row(spend.approval))


VISIBLE = [s.value for s in models.VISIBLE_RESERVATION_STATUSES]


@strawberry.type
class SpendQuery:
    @strawberry.field(
        permission_classes=READ, description="billing:read. Reservations, newest first."
    )
    async def reservations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        status: ReservationStatus | None = None,
    ) -> ReservationConnection | None:
        table = models.Reservation
        query = select(table).where(
            col(table.organization_id) == info.context.organization_id,
            col(table.status).in_([status.value] if status else VISIBLE),
        )
        page = await page_of(info, query, col(table.id), PageArgs(first, after, last, before))
        edges = edges_of(page, ReservationEdge, Reservation.from_row)
        return ReservationConnection(edges=edges, page_info=page.page_info)

    @strawberry.field(permission_classes=READ, description="billing:read. Approval requests.")
    async def approvals(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        status: ApprovalStatus | None = None,  # type: ignore[valid-type]
    ) -> ApprovalConnection | None:
        table = models.Approval
        query = select(table).where(col(table.organization_id) == info.context.organization_id)
        if status is not None:
            query = query.where(col(table.status) == str(status))
        page = await page_of(info, query, col(table.id), PageArgs(first, after, last, before))
        edges = edges_of(page, ApprovalEdge, Approval.from_row)
        return ApprovalConnection(edges=edges, page_info=page.page_info)

    @strawberry.field(permission_classes=READ, description="billing:read. Monthly invoices.")
    async def invoices(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> InvoiceConnection | None:
        table = models.Invoice
        query = select(table).where(col(table.organization_id) == info.context.organization_id)
        page = await page_of(info, query, col(table.id), PageArgs(first, after, last, before))
        edges = edges_of(page, InvoiceEdge, Invoice.from_row)
        return InvoiceConnection(edges=edges, page_info=page.page_info)
