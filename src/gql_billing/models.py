"""SQLModel tables. Integer minor units everywhere: one credit is one AUD cent."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import uuid4

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, PostgreSQL keeps it too."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _ts(nullable: bool = False, **kw: Any) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True, **kw))
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, **kw))


def _credits(default: int | None = 0, nullable: bool = False) -> Any:
    return Field(default=default, sa_column=Column(BigInteger(), nullable=nullable))


class Plan(StrEnum):
    FREE = "FREE"
    STANDARD = "STANDARD"
    ENTERPRISE = "ENTERPRISE"


class EntryKind(StrEnum):
    GRANT = "GRANT"
    BONUS = "BONUS"
    RESERVATION = "RESERVATION"
    RELEASE = "RELEASE"
    CHARGE = "CHARGE"
    REFUND = "REFUND"
    ADJUSTMENT = "ADJUSTMENT"


class TopupStatus(StrEnum):
    # An auto top-up waiting for the worker, the daily cap or the back-off: nothing charged.
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class TopupTrigger(StrEnum):
    MANUAL = "MANUAL"
    AUTO = "AUTO"


class ReservationStatus(StrEnum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    HELD = "HELD"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    REFUNDED = "REFUNDED"
    REJECTED = "REJECTED"
    # Internal: a card hold being authorised at Stripe (never shown to clients), or whose
    # authorisation failed for good (a decline).
    AUTHORIZING = "AUTHORIZING"
    FAILED = "FAILED"


VISIBLE_RESERVATION_STATUSES = (
    ReservationStatus.PENDING_APPROVAL,
    ReservationStatus.HELD,
    ReservationStatus.CAPTURED,
    ReservationStatus.RELEASED,
    ReservationStatus.REFUNDED,
    ReservationStatus.REJECTED,
)


class BillingMode(StrEnum):
    CREDITS = "CREDITS"
    CARD_HOLD = "CARD_HOLD"
    ENTERPRISE = "ENTERPRISE"


class ApprovalStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class InvoiceStatus(StrEnum):
    OPEN = "OPEN"
    FINALIZED = "FINALIZED"


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    plan: str = Field(default=Plan.STANDARD.value, max_length=20)
    display_currency: str = Field(default="AUD", max_length=3)
    approval_threshold_credits: int | None = _credits(default=None, nullable=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts()


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    # Null for a service token: it acts for any organization it names.
    organization_id: int | None = Field(default=None, foreign_key="organizations.id", index=True)
    name: str = Field(default="", max_length=200)
    prefix: str = Field(max_length=32, unique=True)
    token_hash: str = Field(max_length=64, unique=True)
    scopes: str = Field(max_length=200)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)
    last_used_at: datetime | None = _ts(nullable=True)


class Wallet(SQLModel, table=True):
    __tablename__ = "wallets"
    __table_args__ = (
        CheckConstraint("reserved_credits >= 0", name="ck_wallets_reserved_nonnegative"),
        CheckConstraint(
            "balance_credits - reserved_credits >= 0", name="ck_wallets_available_nonnegative"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id", unique=True)
    balance_credits: int = _credits()
    reserved_credits: int = _credits()
    # Auto top-up settings; None means "never set" (enabling then is InvalidInput).
    auto_topup_enabled: bool = Field(default=False)
    auto_threshold_credits: int | None = _credits(default=None, nullable=True)
    auto_topup_amount_credits: int | None = _credits(default=None, nullable=True)
    auto_daily_cap_aud: int | None = Field(default=None)
    auto_disabled_reason: str | None = Field(default=None, max_length=500)
    auto_consecutive_failures: int = Field(default=0)
    auto_backoff_until: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()


class LedgerEntry(SQLModel, table=True):
    """Append-only. Signed deltas and the running totals after the entry."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        # A PaymentIntent grants (and bonuses) at most once, whoever settles it.
        UniqueConstraint("payment_intent_id", "kind", name="uq_ledger_payment_intent_kind"),
        Index("ix_ledger_org_id", "organization_id", "id"),
        # Balance history and dated exports: one organization's entries between two instants.
        Index("ix_ledger_org_created", "organization_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    wallet_id: int = Field(foreign_key="wallets.id")
    kind: str = Field(max_length=20)
    amount_credits: int = _credits()
    balance_delta_credits: int = _credits()
    available_delta_credits: int = _credits()
    balance_after_credits: int = _credits()
    available_after_credits: int = _credits()
    description: str = Field(default="", max_length=500)
    reference: str | None = Field(default=None, max_length=255)
    topup_attempt_id: int | None = Field(default=None, foreign_key="topup_attempts.id")
    reservation_id: int | None = Field(default=None, foreign_key="reservations.id", index=True)
    payment_intent_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts()


class PaymentMethod(SQLModel, table=True):
    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("organization_id", "stripe_id", name="uq_pm_org_stripe"),)

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id", index=True)
    stripe_id: str = Field(max_length=255)
    brand: str = Field(max_length=40)
    last4: str = Field(max_length=4)
    exp_month: int
    exp_year: int
    is_default: bool = Field(default=False)
    created_at: datetime = _ts()


AUTO_IN_FLIGHT_SQL = "trigger = 'AUTO' AND status IN ('QUEUED', 'PROCESSING', 'REQUIRES_ACTION')"


class TopupAttempt(SQLModel, table=True):
    __tablename__ = "topup_attempts"
    __table_args__ = (
        Index("ix_topup_org_id", "organization_id", "id"),
        # Never more than one auto top-up in flight per organization, whoever queues it.
        Index(
            "uq_topup_auto_in_flight",
            "organization_id",
            unique=True,
            sqlite_where=text(AUTO_IN_FLIGHT_SQL),
            postgresql_where=text(AUTO_IN_FLIGHT_SQL),
        ),
        Index("ix_topup_status", "status", "trigger"),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    trigger: str = Field(default=TopupTrigger.MANUAL.value, max_length=10)
    status: str = Field(default=TopupStatus.PROCESSING.value, max_length=20)
    aud_cents: int = _credits()
    credits_granted: int = _credits()
    bonus_credits: int = _credits()
    payment_method_stripe_id: str = Field(max_length=255)
    # Stored with the attempt, so every retry (a request, the worker after a restart) sends
    # Stripe the same key: one charge at most. Random, so two databases sharing a Stripe
    # account (staging and a restored backup, say) can never replay each other's charges.
    stripe_idempotency_key: str = Field(
        default_factory=lambda: f"topup:{uuid4().hex}", max_length=64, unique=True
    )
    payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    client_secret: str | None = Field(default=None, max_length=500)
    failure_reason: str | None = Field(default=None, max_length=500)
    decline_code: str | None = Field(default=None, max_length=100)
    # balanceCredits right after this attempt's grant: what a replayed success reports.
    new_balance_credits: int | None = _credits(default=None, nullable=True)
    created_at: datetime = _ts()
    completed_at: datetime | None = _ts(nullable=True)
    # Auto top-ups: when the worker took it (its day counts against the daily cap), and
    # the earliest time it may run (when queued, the end of a back-off after a decline, the
    # next UTC day once the cap is reached).
    claimed_at: datetime | None = _ts(nullable=True)
    not_before: datetime | None = _ts(nullable=True)


class IdempotencyKey(SQLModel, table=True):
    """A client's key, claimed by insert: the unique constraint decides who runs."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("organization_id", "operation", "key", name="uq_idempotency_scope"),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    operation: str = Field(max_length=64)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    resource_id: int | None = Field(default=None)
    # Set while a request runs with this key; a crashed request's claim lapses after it.
    locked_until: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class Reservation(SQLModel, table=True):
    """An external spend: reserved at placement, settled once on the outcome."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservation_org_id", "organization_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    status: str = Field(max_length=20)
    billing_mode: str = Field(max_length=20)
    amount_credits: int = _credits()
    captured_credits: int = _credits()
    reference: str = Field(max_length=255)
    description: str = Field(default="", max_length=500)
    # Card holds: the PaymentIntent, and the keys every retry sends Stripe.
    payment_method_stripe_id: str | None = Field(default=None, max_length=255)
    payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_key: str = Field(default_factory=lambda: uuid4().hex, max_length=64)
    client_secret: str | None = Field(default=None, max_length=500)
    decline_code: str | None = Field(default=None, max_length=100)
    # A card hold's settlement in flight at Stripe ("capture", "release", "refund"), so a
    # concurrent different settlement is refused and a retry of the same one resumes it.
    pending_settlement: str | None = Field(default=None, max_length=20)
    # While set and in the future, one request is carrying that settlement out at Stripe;
    # others wait for it. A claim that lapses (its request died) is taken over by a retry
    # or the worker, which repeat the call with the same Stripe key.
    settlement_claimed_until: datetime | None = _ts(nullable=True)
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts()
    settled_at: datetime | None = _ts(nullable=True)
    refunded_at: datetime | None = _ts(nullable=True)


class Approval(SQLModel, table=True):
    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approval_org_id", "organization_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    reservation_id: int = Field(foreign_key="reservations.id", unique=True)
    status: str = Field(default=ApprovalStatus.PENDING.value, max_length=20)
    amount_credits: int = _credits()
    reference: str = Field(max_length=255)
    description: str = Field(default="", max_length=500)
    requested_at: datetime = _ts()
    decided_at: datetime | None = _ts(nullable=True)
    reason: str | None = Field(default=None, max_length=500)
    decided_by_token_id: int | None = Field(default=None)


class Invoice(SQLModel, table=True):
    """An enterprise organization's month: captures accrue as lines, refunds as negative ones."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("organization_id", "period", name="uq_invoice_org_period"),
        Index("ix_invoice_org_id", "organization_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    period: str = Field(max_length=7)
    status: str = Field(default=InvoiceStatus.OPEN.value, max_length=20)
    total_credits: int = _credits()
    created_at: datetime = _ts()
    finalized_at: datetime | None = _ts(nullable=True)


class InvoiceLine(SQLModel, table=True):
    __tablename__ = "invoice_lines"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoices.id", index=True)
    reservation_id: int = Field(foreign_key="reservations.id")
    reference: str = Field(max_length=255)
    description: str = Field(default="", max_length=500)
    amount_credits: int = _credits()
    created_at: datetime = _ts()


class WebhookEvent(SQLModel, table=True):
    """Stripe events seen, so a redelivered event acts once."""

    __tablename__ = "webhook_events"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True)
    type: str = Field(max_length=100)
    result: str = Field(default="", max_length=200)
    received_at: datetime = _ts()


# -- customer webhooks and balance alerts ---------------------------------------------------


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class WebhookEndpoint(SQLModel, table=True):
    """An organization's own receiver of signed billing events."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoint_org_id", "organization_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=500)
    # Wire names, comma-separated; empty means every event.
    event_types: str = Field(default="", max_length=500)
    enabled: bool = Field(default=True)
    disabled_reason: str | None = Field(default=None, max_length=500)
    secret: str = Field(max_length=100)
    # After a rotation the old secret signs alongside until it lapses.
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_expires_at: datetime | None = _ts(nullable=True)
    # The first failed attempt since the last success: three days of that switches it off.
    failing_since: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class OutboxEvent(SQLModel, table=True):
    """An event, written in the transaction of the change it reports."""

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_event_org_id", "organization_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    # The `webhook-id` every delivery of it carries, retries included.
    event_id: str = Field(max_length=64, unique=True)
    organization_id: int = Field(foreign_key="organizations.id")
    type: str = Field(max_length=64)
    # The exact body sent (and signed) on every attempt.
    body: str = Field(sa_column=Column(Text(), nullable=False))
    created_at: datetime = _ts()


class WebhookDelivery(SQLModel, table=True):
    """One event to one endpoint: attempted until delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint_id", "endpoint_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    organization_id: int = Field(foreign_key="organizations.id")
    endpoint_id: int = Field(foreign_key="webhook_endpoints.id")
    outbox_event_id: int = Field(foreign_key="outbox_events.id", index=True)
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=64)
    status: str = Field(default=DeliveryStatus.PENDING.value, max_length=20)
    attempts: int = Field(default=0)
    last_response_status: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=500)
    next_attempt_at: datetime | None = _ts(nullable=True)
    # A worker's claim: until it lapses no other worker sends this delivery; the token
    # makes a late answer from a worker whose claim lapsed change nothing.
    leased_until: datetime | None = _ts(nullable=True)
    lease_token: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    delivered_at: datetime | None = _ts(nullable=True)


class BalanceAlert(SQLModel, table=True):
    """An organization's low-balance floor. `armed` is cleared by the crossing that raises
    the alert and set again once available credits are back at or above the floor."""

    __tablename__ = "balance_alerts"

    organization_id: int = Field(foreign_key="organizations.id", primary_key=True)
    enabled: bool = Field(default=False)
    threshold_credits: int = _credits()
    armed: bool = Field(default=True)
    updated_at: datetime = _ts()
