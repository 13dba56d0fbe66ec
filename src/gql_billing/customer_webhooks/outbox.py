"""The transactional outbox: an event row (and one delivery per endpoint that wants it) is
written in the caller's transaction, so a committed change always produces its event and a
rolled-back one never does. The worker delivers them later (delivery.py)."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import uuid4

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ..models import DeliveryStatus, OutboxEvent, WebhookDelivery, WebhookEndpoint


class EventType(StrEnum):
    """Wire names, as in the payload's `type`."""

    WALLET_BALANCE_LOW = "wallet.balance_low"
    TOPUP_SUCCEEDED = "topup.succeeded"
    TOPUP_FAILED = "topup.failed"
    TOPUP_REQUIRES_ACTION = "topup.requires_action"
    AUTO_TOPUP_DISABLED = "auto_topup.disabled"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_DECIDED = "approval.decided"
    INVOICE_FINALIZED = "invoice.finalized"
    WEBHOOK_TEST = "webhook.test"


def new_event_id() -> str:
    return f"msg_{uuid4().hex}"


def wants(endpoint: WebhookEndpoint, event_type: EventType) -> bool:
    types = parse_types(endpoint.event_types)
    return not types or event_type in types


def parse_types(stored: str) -> set[EventType]:
    return {EventType(name) for name in stored.split(",") if name}


async def record(
    session: AsyncSession,
    organization_id: int,
    event_type: EventType,
    data: dict[str, Any],
    *,
    now: datetime,
    endpoint_id: int | None = None,
) -> list[WebhookDelivery]:
    """Record one event for the organization's enabled endpoints that take its type (or for
    the one endpoint named). Returns the deliveries queued; none when nobody listens."""
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.organization_id) == organization_id)
    if endpoint_id is not None:
        # A test goes to the endpoint asked for, whatever types it takes (a switched-off
        # one gets it once switched on again).
        query = query.where(col(WebhookEndpoint.id) == endpoint_id)
        endpoints = list((await session.execute(query)).scalars())
    else:
        query = query.where(col(WebhookEndpoint.enabled))
        endpoints = [e for e in (await session.execute(query)).scalars() if wants(e, event_type)]
    if not endpoints:
        # Nobody listens: no row, so an organization without endpoints pays nothing.
        return []
    event_id = new_event_id()
    body = {"type": event_type.value, "timestamp": now.isoformat(), "data": data}
    event = OutboxEvent(
        event_id=event_id,
        organization_id=organization_id,
        type=event_type.value,
        body=json.dumps(body, separators=(",", ":"), sort_keys=True),
        created_at=now,
    )
    session.add(event)
    await session.flush()
    assert event.id is not None
    deliveries = []
    for endpoint in endpoints:
        assert endpoint.id is not None
        delivery = WebhookDelivery(
            organization_id=organization_id,
            endpoint_id=endpoint.id,
            outbox_event_id=event.id,
            event_id=event_id,
            event_type=event_type.value,
            status=DeliveryStatus.PENDING.value,
            next_attempt_at=now,
            created_at=now,
        )
        session.add(delivery)
        deliveries.append(delivery)
    await session.flush()
    return deliveries
