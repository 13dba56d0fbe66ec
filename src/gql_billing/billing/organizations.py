"""Operator actions: organizations and goodwill credits (the `gql-billing` CLI uses these)."""

from __future__ import annotations

from .. import ledger
from ..db import Database
from ..errors import InvalidInput, NotFound
from ..freetext import check_free_text
from ..models import Organization, Plan
from ..money import check_credits


async def create_organization(
    db: Database,
    *,
    name: str,
    plan: Plan = Plan.STANDARD,
    display_currency: str = "AUD",
    approval_threshold_credits: int | None = None,
) -> Organization:
    if not name.strip():
        raise InvalidInput("name", "An organization needs a name")
    check_free_text("name", name)
    currency = display_currency.strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidInput("display_currency", "Expected an ISO 4217 code such as AUD")
    if approval_threshold_credits is not None and approval_threshold_credits < 0:
        raise InvalidInput("approval_threshold_credits", "Must be zero or more")
    if approval_threshold_credits is not None:
        check_credits(approval_threshold_credits, "approval_threshold_credits")
    async with db.write() as session:
        org = Organization(
            name=name.strip(),
            plan=plan.value,
            display_currency=currency,
            approval_threshold_credits=approval_threshold_credits,
        )
        session.add(org)
        await session.flush()
        assert org.id is not None
        await ledger.open_wallet(session, org.id)
        return org


async def grant_credits(
    db: Database, *, organization_id: int, amount_credits: int, reason: str
) -> ledger.Posted:
    """An operator's goodwill credit or correction: an ADJUSTMENT, never below zero."""
    if amount_credits == 0:
        raise InvalidInput("credits", "Give a non-zero number of credits")
    check_credits(amount_credits, "credits")
    if not reason.strip():
        raise InvalidInput("reason", "Say why (it is shown on the ledger)")
    check_free_text("reason", reason)
    async with db.write() as session:
        if await session.get(Organization, organization_id) is None:
            raise NotFound("No such organization")
        return await ledger.post(
            session,
            organization_id=organization_id,
            movement=ledger.adjustment(amount_credits),
            description=reason.strip(),
            amount_field="credits",
        )
