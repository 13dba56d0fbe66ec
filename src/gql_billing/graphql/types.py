"""Object types of the contract, each built from a store row."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from sqlalchemy import select
from sqlmodel import col
from strawberry.permission import BasePermission

from .. import models
from ..auto_queue import charged_today_aud_cents
from .balance_alert import BalanceAlert, wallet_balance_alert
from .common import Money, Node, PageInfo, money
from .context import Info
from .ids import to_global_id
from .permissions import NeedsCustomerScope, sees_customer_data
from .scalars import Credits
from .spend_types import Reservation


@strawberry.enum
class Scope(Enum):
    BILLING_READ = "billing:read"
    BILLING_WRITE = "billing:write"
    BILLING_SPEND = "billing:spend"
    BILLING_APPROVE = "billing:approve"


Plan = strawberry.enum(models.Plan, name="Plan")
TransactionKind = strawberry.enum(models.EntryKind, name="TransactionKind")


@strawberry.enum(name="TopupStatus")
class TopupStatus(Enum):
    QUEUED = strawberry.enum_value(
        "QUEUED",
        description="An automatic top-up waiting for its turn (the daily cap, or back-off "
        "after a decline): nothing is charged yet; `notBefore` says when it may run.",
    )
    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


TopupTrigger = strawberry.enum(models.TopupTrigger, name="TopupTrigger")


@strawberry.type
class Organization(Node):
    name: str
    plan: Plan  # type: ignore[valid-type]
    display_currency: str
    approval_threshold_credits: Credits | None

    @classmethod
    def from_row(cls, row: models.Organization) -> Organization:
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("Organization", row.id)),
            name=row.name,
            plan=models.Plan(row.plan),
            display_currency=row.display_currency,
            approval_threshold_credits=row.approval_threshold_credits,
        )


@strawberry.type
class Viewer:
    organization: Organization | None
    scopes: list[Scope]


@strawberry.type
class PaymentMethod(Node):
    stripe_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.PaymentMethod) -> PaymentMethod:
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("PaymentMethod", row.id)),
            stripe_id=row.stripe_id,
            brand=row.brand,
            last4=row.last4,
            exp_month=row.exp_month,
            exp_year=row.exp_year,
            is_default=row.is_default,
            created_at=row.created_at,
        )


@strawberry.type
class TopupAttempt(Node):
    status: TopupStatus
    trigger: TopupTrigger  # type: ignore[valid-type]
    aud_cents: int
    credits_granted: Credits
    bonus_credits: Credits
    payment_intent_id: str | None
    client_secret: str | None = strawberry.field(
        description="The PaymentIntent's client secret, only while REQUIRES_ACTION."
    )
    failure_reason: str | None
    not_before: datetime | None = strawberry.field(
        description="For a QUEUED attempt: the earliest time it will be charged."
    )
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: models.TopupAttempt) -> TopupAttempt:
        assert row.id is not None
        status = models.TopupStatus(row.status)
        queued = status == models.TopupStatus.QUEUED
        return cls(
            id=strawberry.ID(to_global_id("TopupAttempt", row.id)),
            status=TopupStatus(status.value),
            trigger=models.TopupTrigger(row.trigger),
            aud_cents=row.aud_cents,
            credits_granted=row.credits_granted,
            bonus_credits=row.bonus_credits,
            payment_intent_id=row.payment_intent_id,
            client_secret=(
                row.client_secret if status == models.TopupStatus.REQUIRES_ACTION else None
            ),
            failure_reason=row.failure_reason,
            # A queued attempt may run from the moment it was queued unless told to wait.
            not_before=(row.not_before or row.created_at) if queued else None,
            created_at=row.created_at,
            completed_at=row.completed_at,
        )


# What a Wallet reads: the hot `wallet` query selects these table columns (Core, so the
# session skips the ORM's compile and loading steps), not an ORM object.
# An ORM wallet, or a row of reads.WALLET_COLUMNS.
WalletRow = models.Wallet | Any


CUSTOMER_ONLY: list[type[BasePermission]] = [NeedsCustomerScope]


@strawberry.type(
    description=(
        "Auto top-up settings. A service token (billing:spend) that reaches a wallet through "
        "a spend result reads them as off and zero, and `disabledReason` / `lastAttempt` as "
        "FORBIDDEN: top-up data belongs to the organization's own tokens."
    )
)
class AutoTopupSettings:
    row: strawberry.Private[WalletRow]
    # False for a service token: the non-null fields then read as "off, all zero".
    visible: strawberry.Private[bool] = True

    @strawberry.field
    def enabled(self) -> bool:
        return self.visible and self.row.auto_topup_enabled

    @strawberry.field
    def threshold_credits(self) -> Credits:
        return (self.row.auto_threshold_credits or 0) if self.visible else 0

    @strawberry.field
    def topup_amount_credits(self) -> Credits:
        return (self.row.auto_topup_amount_credits or 0) if self.visible else 0

    @strawberry.field
    def daily_charge_cap_aud(self) -> int:
        return (self.row.auto_daily_cap_aud or 0) if self.visible else 0

    @strawberry.field
    async def charged_today_aud_cents(self, info: Info) -> int:
        if not self.visible:
            return 0
        now = info.context.billing.clock.now()
        async with info.context.billing.db.read() as session:
            return await charged_today_aud_cents(session, self.row.organization_id, now)

    @strawberry.field(permission_classes=CUSTOMER_ONLY)
    def disabled_reason(self) -> str | None:
        return self.row.auto_disabled_reason

    @strawberry.field(permission_classes=CUSTOMER_ONLY)
    async def last_attempt(self, info: Info) -> TopupAttempt | None:
        query = (
            select(models.TopupAttempt)
            .where(
                col(models.TopupAttempt.organization_id) == self.row.organization_id,
                col(models.TopupAttempt.trigger) == models.TopupTrigger.AUTO.value,
            )
            .order_by(col(models.TopupAttempt.id).desc())
            .limit(1)
        )
        async with info.context.billing.db.read() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        return TopupAttempt.from_row(row) if row else None


@strawberry.type
class Wallet(Node):
    # Plain values, not resolvers: the hot `wallet` query reads them with no resolver call.
    balance_credits: Credits = strawberry.field(
        description="Posted credits (grants, bonuses, refunds, adjustments − charges)."
    )
    reserved_credits: Credits = strawberry.field(description="Credits held by open reservations.")
    available_credits: Credits = strawberry.field(
        description="balanceCredits − reservedCredits: what can be spent now."
    )
    row: strawberry.Private[WalletRow]

    @classmethod
    def from_row(cls, row: WalletRow) -> Wallet:
        """From an ORM wallet or a row of reads.WALLET_COLUMNS."""
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("Wallet", row.id)),
            balance_credits=row.balance_credits,
            reserved_credits=row.reserved_credits,
            available_credits=row.balance_credits - row.reserved_credits,
            row=row,
        )

    @strawberry.field
    def balance(self, info: Info, currency: str | None = None) -> Money:
        return money(info, self.row.balance_credits, currency)

    @strawberry.field
    def available(self, info: Info, currency: str | None = None) -> Money:
        return money(info, self.row.balance_credits - self.row.reserved_credits, currency)

    @strawberry.field
    def auto_topup(self, info: Info) -> AutoTopupSettings:
        return AutoTopupSettings(row=self.row, visible=sees_customer_data(info.context.principal))

    balance_alert: BalanceAlert = strawberry.field(resolver=wallet_balance_alert)

    @strawberry.field(permission_classes=CUSTOMER_ONLY)
    async def default_payment_method(self, info: Info) -> PaymentMethod | None:
        query = select(models.PaymentMethod).where(
            col(models.PaymentMethod.organization_id) == self.row.organization_id,
            col(models.PaymentMethod.is_default),
        )
        async with info.context.billing.db.read() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        return PaymentMethod.from_row(row) if row else None

    @strawberry.field
    def updated_at(self) -> datetime:
        return self.row.updated_at


async def _transaction_reservation(root: Transaction, info: Info) -> Reservation | None:
    if root.reservation_id is None:
        return None
    row = await info.context.loaders.reservation.load(root.reservation_id)
    return Reservation.from_row(row) if row else None


async def _transaction_topup(root: Transaction, info: Info) -> TopupAttempt | None:
    if root.topup_attempt_id is None:
        return None
    row = await info.context.loaders.topup_attempt.load(root.topup_attempt_id)
    return TopupAttempt.from_row(row) if row else None


# What a Transaction is built from: a page selects these table columns, not ORM objects.
@strawberry.type
class Transaction(Node):
    # Plain values, not resolvers: a page of 20 resolves about a hundred of these fields.
    kind: TransactionKind  # type: ignore[valid-type]
    amount_credits: Credits
    balance_delta_credits: Credits
    available_delta_credits: Credits
    balance_after_credits: Credits
    available_after_credits: Credits
    description: str
    reference: str | None
    # Resolvers assigned in place (not decorated methods), so the fields keep their order.
    reservation: Reservation | None = strawberry.field(resolver=_transaction_reservation)
    topup: TopupAttempt | None = strawberry.field(resolver=_transaction_topup)
    created_at: datetime
    reservation_id: strawberry.Private[int | None]
    topup_attempt_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: models.LedgerEntry | Any) -> Transaction:
        """From an ORM entry or a row of reads.TRANSACTION_COLUMNS."""
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("Transaction", row.id)),
            # The stored value, which the enum type maps to its name with one dict look-up
            # (an EntryKind member would be matched against each member in turn).
            kind=row.kind,
            amount_credits=row.amount_credits,
            balance_delta_credits=row.balance_delta_credits,
            available_delta_credits=row.available_delta_credits,
            balance_after_credits=row.balance_after_credits,
            available_after_credits=row.available_after_credits,
            description=row.description,
            reference=row.reference,
            created_at=row.created_at,
            reservation_id=row.reservation_id,
            topup_attempt_id=row.topup_attempt_id,
        )


@strawberry.type
class TransactionEdge:
    cursor: str
    node: Transaction


@strawberry.type
class TransactionConnection:
    edges: list[TransactionEdge]
    page_info: PageInfo


@strawberry.type
class TopupAttemptEdge:
    cursor: str
    node: TopupAttempt


@strawberry.type
class TopupAttemptConnection:
    edges: list[TopupAttemptEdge]
    page_info: PageInfo


@strawberry.input
class TransactionFilter:
    kinds: list[TransactionKind] | None = None  # type: ignore[valid-type]
    created_after: datetime | None = None
    created_before: datetime | None = None
    reference: str | None = None
