"""Enterprise invoices: one open invoice per organization and UTC month."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ..customer_webhooks import events
from ..errors import InvalidInput, InvalidState
from ..models import Invoice, InvoiceLine, InvoiceStatus, Reservation
from ..money import MAX_CREDITS


def period_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


async def open_invoice(session: AsyncSession, organization_id: int, now: datetime) -> Invoice:
    """This month's invoice, opened on first use (the unique period settles a race)."""
    query = select(Invoice).where(
        col(Invoice.organization_id) == organization_id, col(Invoice.period) == period_of(now)
    )
    invoice = (await session.execute(query.with_for_update())).scalar_one_or_none()
    if invoice is not None:
        return invoice
    invoice = Invoice(organization_id=organization_id, period=period_of(now), created_at=now)
    try:
        async with session.begin_nested():
            session.add(invoice)
            await session.flush()
    except IntegrityError:
        invoice = (await session.execute(query.with_for_update())).scalar_one()
    return invoice


async def add_line(
    session: AsyncSession, reservation: Reservation, amount_credits: int, now: datetime
) -> InvoiceLine:
    """A capture (positive) or refund (negative) on the open invoice of the month.

    The invoice row is locked, so the bound on its total is checked before anything is
    written: a capture past it is InvalidInput, a refund past it (refunds of earlier months'
    captures) InvalidState."""
    assert reservation.id is not None
    invoice = await open_invoice(session, reservation.organization_id, now)
    assert invoice.id is not None
    new_total = invoice.total_credits + amount_credits
    if new_total > MAX_CREDITS:
        raise InvalidInput(
            "amount_credits",
            f"This capture would take the {invoice.period} invoice total past "
            f"{MAX_CREDITS} credits (2^53 - 1)",
        )
    if new_total < -MAX_CREDITS:
        raise InvalidState(
            f"This refund would take the {invoice.period} invoice total past "
            f"-{MAX_CREDITS} credits (2^53 - 1)"
        )
    line = InvoiceLine(
        invoice_id=invoice.id,
        reservation_id=reservation.id,
        reference=reservation.reference,
        description=reservation.description
        if amount_credits >= 0
        else f"Refund: {reservation.description}".strip(),
        amount_credits=amount_credits,
        created_at=now,
    )
    session.add(line)
    invoice.total_credits = new_total
    await session.flush()
    return line


async def finalize_past_invoices(session: AsyncSession, now: datetime) -> int:
    """At the UTC month boundary: every open invoice of an earlier month is FINALIZED."""
    result = await session.execute(
        update(Invoice)
        .where(
            col(Invoice.status) == InvoiceStatus.OPEN.value,
            col(Invoice.period) < period_of(now),
        )
        .values(status=InvoiceStatus.FINALIZED.value, finalized_at=now)
        .returning(Invoice)
    )
    finalized = list(result.scalars())
    for invoice in finalized:
        await events.invoice_finalized(session, invoice, now)
    return len(finalized)
