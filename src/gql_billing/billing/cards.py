"""Saved cards: SetupIntent, attach, default, detach."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ..db import Database
from ..errors import BillingNotConfigured, InvalidInput, InvalidState, NotFound
from ..models import Organization, PaymentMethod, Wallet
from ..stripe_gateway import Card, PaymentGateway, SetupIntent


@dataclass(frozen=True)
class Detached:
    payment_method_row_id: int
    stripe_id: str


def validate_payment_method_id(value: str) -> str:
    if not value.startswith("pm_") or len(value) > 255 or not value.isprintable():
        raise InvalidInput("payment_method_id", "Expected a Stripe PaymentMethod id (pm_...)")
    return value


class CardService:
    def __init__(self, db: Database, gateway: PaymentGateway | None) -> None:
        self._db = db
        self._gateway = gateway

    def _require_gateway(self) -> PaymentGateway:
        if self._gateway is None:
            raise BillingNotConfigured()
        return self._gateway

    async def customer_id(self, organization_id: int) -> str:
        """The organization's Stripe Customer, created on first use."""
        gateway = self._require_gateway()
        async with self._db.read() as session:
            org = await session.get(Organization, organization_id)
        if org is None:
            raise NotFound("No such organization")
        if org.stripe_customer_id:
            return org.stripe_customer_id
        # Two first-time callers racing may each create a customer; the first stored wins
        # and the other stays an empty customer at Stripe, which costs nothing.
        customer_id = await gateway.create_customer(name=org.name, organization_id=organization_id)
        async with self._db.write() as session:
            fresh = await session.get(Organization, organization_id, with_for_update=True)
            assert fresh is not None
            if fresh.stripe_customer_id is None:
                fresh.stripe_customer_id = customer_id
            return fresh.stripe_customer_id

    async def create_setup_intent(self, organization_id: int) -> SetupIntent:
        gateway = self._require_gateway()
        customer_id = await self.customer_id(organization_id)
        return await gateway.create_setup_intent(customer_id)

    async def attach(
        self, organization_id: int, payment_method_id: str, *, set_as_default: bool
    ) -> PaymentMethod:
        validate_payment_method_id(payment_method_id)
        gateway = self._require_gateway()
        customer_id = await self.customer_id(organization_id)
        card = await gateway.retrieve_card(payment_method_id)
        if card.customer_id is not None and card.customer_id != customer_id:
            # Another customer's card is indistinguishable from a missing one.
            raise NotFound(f"No payment method {payment_method_id!r}")
        if card.customer_id is None:
            card = await gateway.attach_card(payment_method_id, customer_id)
        if set_as_default:
            await gateway.set_default_card(customer_id, card.id)
        async with self._db.write() as session:
            row = await _store(session, organization_id, card)
            if set_as_default:
                await _make_default(session, organization_id, row)
            return row

    async def set_default(self, organization_id: int, payment_method_id: str) -> PaymentMethod:
        gateway = self._require_gateway()
        row = await self._find(organization_id, payment_method_id)
        customer_id = await self.customer_id(organization_id)
        await gateway.set_default_card(customer_id, row.stripe_id)
        async with self._db.write() as session:
            fresh = await session.get(PaymentMethod, row.id)
            if fresh is None:
                raise NotFound(f"No payment method {payment_method_id!r}")
            await _make_default(session, organization_id, fresh)
            return fresh

    async def detach(self, organization_id: int, payment_method_id: str) -> Detached:
        gateway = self._require_gateway()
        row = await self._find(organization_id, payment_method_id)
        if row.is_default and await self._auto_topup_on(organization_id):
            raise InvalidState("Turn auto top-up off (or set another default card) first")
        await gateway.detach_card(row.stripe_id)
        async with self._db.write() as session:
            fresh = await session.get(PaymentMethod, row.id)
            if fresh is not None:
                await session.delete(fresh)
        assert row.id is not None
        return Detached(payment_method_row_id=row.id, stripe_id=row.stripe_id)

    async def _find(self, organization_id: int, payment_method_id: str) -> PaymentMethod:
        async with self._db.read() as session:
            query = select(PaymentMethod).where(
                col(PaymentMethod.organization_id) == organization_id,
                col(PaymentMethod.stripe_id) == payment_method_id,
            )
            row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"No payment method {payment_method_id!r}")
        return row

    async def _auto_topup_on(self, organization_id: int) -> bool:
        async with self._db.read() as session:
            query = select(col(Wallet.auto_topup_enabled)).where(
                col(Wallet.organization_id) == organization_id
            )
            return bool((await session.execute(query)).scalar_one_or_none())


async def _store(session: AsyncSession, organization_id: int, card: Card) -> PaymentMethod:
    query = select(PaymentMethod).where(
        col(PaymentMethod.organization_id) == organization_id,
        col(PaymentMethod.stripe_id) == card.id,
    )
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        row = PaymentMethod(
            organization_id=organization_id,
            stripe_id=card.id,
            brand="",
            last4="",
            exp_month=0,
            exp_year=0,
        )
        session.add(row)
    row.brand = card.brand
    row.last4 = card.last4
    row.exp_month = card.exp_month
    row.exp_year = card.exp_year
    await session.flush()
    return row


async def _make_default(session: AsyncSession, organization_id: int, row: PaymentMethod) -> None:
    await session.execute(
        update(PaymentMethod)
        .where(
            col(PaymentMethod.organization_id) == organization_id, col(PaymentMethod.id) != row.id
        )
        .values(is_default=False)
    )
    row.is_default = True
    await session.flush()
