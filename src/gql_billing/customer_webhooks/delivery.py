"""The worker's side of customer webhooks: claim due deliveries, sign them with the
Standard Webhooks scheme, send, and record the outcome with back-off.

Several workers may run at once: a claim takes due rows with `FOR UPDATE SKIP LOCKED` (on
SQLite the write transaction already holds the database) and leases them; until the lease
lapses no other worker sends them, and the lease token makes a late answer from a worker
whose lease lapsed change nothing. A worker killed mid-send leaves its lease to lapse and the
delivery is sent again, with the same `webhook-id`, so receivers de-duplicate on it.

Sends run off the request path, at most `concurrency` at a time, each bounded by the
timeout: a receiver that hangs holds one slot for ten seconds and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from standardwebhooks.webhooks import Webhook

from ..clock import Clock
from ..db import Database
from ..errors import InvalidInput
from ..models import DeliveryStatus, OutboxEvent, WebhookDelivery, WebhookEndpoint
from . import urls

log = structlog.stdlib.get_logger("gql_billing.customer_webhooks")

# After the first attempt fails: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then FAILED.
BACKOFF = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
# An endpoint whose deliveries have only failed for this long is switched off.
DISABLE_AFTER = timedelta(days=3)
USER_AGENT = "gql-billing-webhooks/1"


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    lease_token: str
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    event_id: str
    body: str


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signature_header(secrets: tuple[str, ...], event_id: str, sent_at: datetime, body: str) -> str:
    """`v1,<base64>` per secret, space-separated (both during a rotation's grace)."""
    return " ".join(Webhook(s).sign(event_id, sent_at, body) for s in secrets)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        production: bool,
        timeout_seconds: float = 10.0,
        lease: timedelta = timedelta(seconds=60),
        concurrency: int = 16,
        batch_size: int = 50,
        interval_seconds: float = 1.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._production = production
        self._timeout_seconds = timeout_seconds
        self._lease = lease
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._interval_seconds = interval_seconds

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            timeout=self._timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=self._concurrency),
        ) as client:
            yield client

    async def run_once(self) -> int:
        """Claim what is due now, send it all (bounded), record the outcomes; the count."""
        claimed = await self.claim(self._batch_size)
        if not claimed:
            return 0
        slots = asyncio.Semaphore(self._concurrency)
        async with self._client() as client:

            async def one(item: Claimed) -> None:
                async with slots:
                    await self._deliver(client, item)

            await asyncio.gather(*(one(item) for item in claimed))
        return len(claimed)

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """Keep up to `concurrency` sends in flight until `stopping`; then let them finish."""
        in_flight: set[asyncio.Task[None]] = set()
        stop = asyncio.create_task(stopping.wait())
        async with self._client() as client:
            while not stopping.is_set():
                free = self._concurrency - len(in_flight)
                batch: list[Claimed] = []
                if free > 0:
                    try:
                        batch = await self.claim(min(free, self._batch_size))
                    except Exception:
                        log.exception("webhook claim failed")
                for item in batch:
                    task = asyncio.create_task(self._deliver(client, item))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if len(in_flight) >= self._concurrency:
                    # Every slot busy: wait for one to free up (or the stop).
                    await asyncio.wait({stop, *in_flight}, return_when=asyncio.FIRST_COMPLETED)
                elif len(batch) < min(free, self._batch_size):
                    # Caught up: wait for the next interval (or the stop).
                    await asyncio.wait({stop}, timeout=self._interval_seconds)
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        stop.cancel()

    async def claim(self, limit: int) -> list[Claimed]:
        now = self._clock.now()
        token = uuid4().hex
        async with self._db.write() as session:
            query = (
                select(WebhookDelivery)
                .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))
                .where(
                    col(WebhookDelivery.status) == DeliveryStatus.PENDING.value,
                    col(WebhookDelivery.next_attempt_at) <= now,
                    or_(
                        col(WebhookDelivery.leased_until).is_(None),
                        col(WebhookDelivery.leased_until) < now,
                    ),
                    col(WebhookEndpoint.enabled),
                )
                .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
                .limit(limit)
                .with_for_update(skip_locked=True, of=WebhookDelivery)
            )
            rows = list((await session.execute(query)).scalars())
            if not rows:
                return []
            ids = [r.id for r in rows]
            await session.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id).in_(ids))
                .values(leased_until=now + self._lease, lease_token=token)
            )
            endpoints = {
                e.id: e
                for e in (
                    await session.execute(
                        select(WebhookEndpoint).where(
                            col(WebhookEndpoint.id).in_({r.endpoint_id for r in rows})
                        )
                    )
                ).scalars()
            }
            found = await session.execute(
                select(col(OutboxEvent.id), col(OutboxEvent.body)).where(
                    col(OutboxEvent.id).in_({r.outbox_event_id for r in rows})
                )
            )
            bodies: dict[int | None, str] = {event_pk: body for event_pk, body in found}
        claimed = []
        for row in rows:
            assert row.id is not None
            endpoint = endpoints[row.endpoint_id]
            claimed.append(
                Claimed(
                    delivery_id=row.id,
                    lease_token=token,
                    endpoint_id=row.endpoint_id,
                    url=endpoint.url,
                    secrets=_signing_secrets(endpoint, now),
                    event_id=row.event_id,
                    body=bodies[row.outbox_event_id],
                )
            )
        return claimed

    async def _deliver(self, client: httpx.AsyncClient, item: Claimed) -> None:
        try:
            outcome = await self._send(client, item)
            await self._record(item, outcome)
        except Exception:
            # The lease lapses and another pass tries again.
            log.exception("webhook delivery failed to record", delivery_id=item.delivery_id)

    async def _send(self, client: httpx.AsyncClient, item: Claimed) -> Outcome:
        if self._production:
            try:
                # Checked again at send time: the name may point elsewhere by now.
                await urls.check(item.url, production=True)
            except InvalidInput as exc:
                return Outcome(None, exc.detail)
        # The receiver checks this against its own wall clock (Standard Webhooks allows five
        # minutes), so it is the wall clock's time, not the billing clock's.
        sent_at = datetime.fromtimestamp(int(time.time()), UTC)
        headers = {
            "webhook-id": item.event_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature_header(item.secrets, item.event_id, sent_at, item.body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        try:
            response = await client.post(item.url, content=item.body.encode(), headers=headers)
        except httpx.TimeoutException:
            return Outcome(None, f"No answer within {self._timeout_seconds:g} seconds")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
        if response.is_redirect:
            return Outcome(response.status_code, "Redirects are not followed")
        return Outcome(response.status_code, None if response.is_success else "Not a 2xx answer")

    async def _record(self, item: Claimed, outcome: Outcome) -> None:
        now = self._clock.now()
        async with self._db.write() as session:
            query = (
                select(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id) == item.delivery_id,
                    col(WebhookDelivery.lease_token) == item.lease_token,
                )
                .with_for_update()
            )
            delivery = (await session.execute(query)).scalar_one_or_none()
            if delivery is None:
                return  # lease lapsed and taken over (or the endpoint deleted)
            endpoint = await session.get(WebhookEndpoint, item.endpoint_id, with_for_update=True)
            assert endpoint is not None
            delivery.attempts += 1
            delivery.last_response_status = outcome.status_code
            delivery.last_error = outcome.error
            delivery.leased_until = None
            delivery.lease_token = None
            if outcome.ok:
                delivery.status = DeliveryStatus.DELIVERED.value
                delivery.delivered_at = now
                delivery.next_attempt_at = None
                endpoint.failing_since = None
                return
            if delivery.attempts > len(BACKOFF):
                delivery.status = DeliveryStatus.FAILED.value
                delivery.next_attempt_at = None
            else:
                delivery.next_attempt_at = now + BACKOFF[delivery.attempts - 1]
            if endpoint.failing_since is None:
                endpoint.failing_since = now
            elif now - endpoint.failing_since >= DISABLE_AFTER and endpoint.enabled:
                await _switch_off(session, endpoint, now)


def _signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> tuple[str, ...]:
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        return (endpoint.secret, endpoint.previous_secret)
    return (endpoint.secret,)


async def _switch_off(session: AsyncSession, endpoint: WebhookEndpoint, now: datetime) -> None:
    endpoint.enabled = False
    endpoint.disabled_reason = (
        f"Switched off: every delivery failed for {DISABLE_AFTER.days} days "
        f"(since {endpoint.failing_since.isoformat() if endpoint.failing_since else now})"
    )
    # What was waiting for it gives up now rather than on its own schedule.
    await session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint.id,
            col(WebhookDelivery.status) == DeliveryStatus.PENDING.value,
        )
        .values(
            status=DeliveryStatus.FAILED.value,
            next_attempt_at=None,
            last_error="Endpoint switched off",
        )
    )
    log.warning("webhook endpoint switched off", endpoint_id=endpoint.id)
