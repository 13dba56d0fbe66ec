"""The organization's endpoints: create (the secret shown once), change, rotate the secret,
delete, send a test; and the reads both APIs share."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ..clock import Clock
from ..db import Database
from ..errors import InvalidInput, NotFound
from ..freetext import check_free_text
from ..models import Organization, OutboxEvent, WebhookDelivery, WebhookEndpoint
from . import urls
from .outbox import EventType, record

MAX_ENDPOINTS_PER_ORGANIZATION = 10
# After a rotation the old secret signs alongside, so receivers can switch without a gap.
OLD_SECRET_GRACE = timedelta(hours=24)
MAX_DESCRIPTION_LENGTH = 500


def new_secret() -> str:
    """`whsec_` and 32 random bytes in base64, as Standard Webhooks libraries expect."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class EndpointChange:
    """A null field keeps its stored value."""

    url: str | None = None
    description: str | None = None
    event_types: list[EventType] | None = None
    enabled: bool | None = None


def _description(text: str | None) -> str:
    text = text or ""
    if len(text) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(
            "description", f"description must be at most {MAX_DESCRIPTION_LENGTH} characters"
        )
    check_free_text("description", text)
    return text


def _types(event_types: list[EventType] | None) -> str:
    return ",".join(sorted({t.value for t in event_types or []}))


class EndpointService:
    def __init__(self, db: Database, clock: Clock, *, production: bool) -> None:
        self._db = db
        self._clock = clock
        self._production = production

    async def create(
        self,
        organization_id: int,
        url: str,
        description: str | None,
        event_types: list[EventType] | None,
    ) -> tuple[WebhookEndpoint, str]:
        """The new endpoint and its secret (never shown again)."""
        text = _description(description)
        await urls.check(url, production=self._production)
        now = self._clock.now()
        async with self._db.write() as session:
            # The organization row orders concurrent creates, so the limit holds.
            await session.get(Organization, organization_id, with_for_update=True)
            count = (
                await session.execute(
                    select(func.count()).where(
                        col(WebhookEndpoint.organization_id) == organization_id
                    )
                )
            ).scalar_one()
            if count >= MAX_ENDPOINTS_PER_ORGANIZATION:
                raise InvalidInput(
                    "url",
                    f"At most {MAX_ENDPOINTS_PER_ORGANIZATION} endpoints per organization: "
                    "delete one first",
                )
            secret = new_secret()
            endpoint = WebhookEndpoint(
                organization_id=organization_id,
                url=url,
                description=text,
                event_types=_types(event_types),
                secret=secret,
                created_at=now,
            )
            session.add(endpoint)
            await session.flush()
        return endpoint, secret

    async def update(
        self, organization_id: int, endpoint_id: int, change: EndpointChange
    ) -> WebhookEndpoint:
        text = _description(change.description) if change.description is not None else None
        if change.url is not None:
            await urls.check(change.url, production=self._production)
        async with self._db.write() as session:
            endpoint = await _owned(session, organization_id, endpoint_id)
            if change.url is not None:
                endpoint.url = change.url
            if text is not None:
                endpoint.description = text
            if change.event_types is not None:
                endpoint.event_types = _types(change.event_types)
            if change.enabled is not None:
                if change.enabled and not endpoint.enabled:
                    # Switched on again: a fresh start after the platform switched it off.
                    endpoint.disabled_reason = None
                    endpoint.failing_since = None
                endpoint.enabled = change.enabled
            await session.flush()
            return endpoint

    async def delete(self, organization_id: int, endpoint_id: int) -> None:
        """The endpoint and its deliveries (pending ones are dropped)."""
        async with self._db.write() as session:
            endpoint = await _owned(session, organization_id, endpoint_id)
            await session.execute(
                delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id)
            )
            await session.delete(endpoint)

    async def rotate(self, organization_id: int, endpoint_id: int) -> tuple[WebhookEndpoint, str]:
        now = self._clock.now()
        async with self._db.write() as session:
            endpoint = await _owned(session, organization_id, endpoint_id)
            endpoint.previous_secret = endpoint.secret
            endpoint.previous_secret_expires_at = now + OLD_SECRET_GRACE
            endpoint.secret = new_secret()
            await session.flush()
            return endpoint, endpoint.secret

    async def send_test(self, organization_id: int, endpoint_id: int) -> WebhookDelivery:
        now = self._clock.now()
        async with self._db.write() as session:
            endpoint = await _owned(session, organization_id, endpoint_id)
            data = {"endpoint_url": endpoint.url, "message": "A test from gql-billing"}
            deliveries = await record(
                session,
                organization_id,
                EventType.WEBHOOK_TEST,
                data,
                now=now,
                endpoint_id=endpoint_id,
            )
            return deliveries[0]

    async def list(self, organization_id: int) -> list[WebhookEndpoint]:
        query = (
            select(WebhookEndpoint)
            .where(col(WebhookEndpoint.organization_id) == organization_id)
            .order_by(col(WebhookEndpoint.id))
        )
        async with self._db.read() as session:
            return list((await session.execute(query)).scalars())

    async def event_body(self, outbox_event_id: int) -> str | None:
        async with self._db.read() as session:
            event = await session.get(OutboxEvent, outbox_event_id)
        return event.body if event else None


async def _owned(session: AsyncSession, organization_id: int, endpoint_id: int) -> WebhookEndpoint:
    """Another organization's endpoint is indistinguishable from a missing one."""
    endpoint = await session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
    if endpoint is None or endpoint.organization_id != organization_id:
        raise NotFound("No such webhook endpoint")
    return endpoint
