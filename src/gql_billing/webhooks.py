"""POST /webhooks/stripe: verify the signature on the raw body, dedupe on the event id,
re-fetch the object from Stripe, then act through the same services as the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import JSONResponse

from .billing import Billing
from .errors import BillingProblem
from .models import Organization, Reservation, TopupAttempt, WebhookEvent
from .stripe_gateway import (
    CANCELED,
    InvalidWebhook,
    Payment,
    PaymentProviderRefused,
    verify_webhook,
)

log = structlog.stdlib.get_logger("gql_billing.webhooks")

MAX_BODY_BYTES = 256 * 1024
PAYMENT_EVENTS = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
}


@dataclass(frozen=True)
class Delivery:
    """How one delivery ended: the HTTP answer, and its event type and result category (the
    bounded labels of the webhook metric; `detail` carries ids)."""

    status: int
    detail: str
    event_type: str = "unknown"
    event_id: str | None = None
    category: str | None = None

    @property
    def result(self) -> str:
        if self.category is not None:
            return self.category
        # "top-up 12 succeeded" -> "topup_succeeded": the statuses are a closed set.
        words = self.detail.replace("-", "").split()
        return "_".join(word for word in words if not word.isdigit())


class StripeWebhooks:
    def __init__(self, billing: Billing) -> None:
        self._billing = billing

    async def handle(self, request: Request) -> JSONResponse:
        delivery = await self._receive(request)
        self._billing.metrics.webhook_event(delivery.event_type, delivery.result)
        log.info(
            "webhook",
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            result=delivery.detail,
            status=delivery.status,
        )
        return _answer(delivery.status, delivery.detail)

    async def _receive(self, request: Request) -> Delivery:
        secret = self._billing.settings.stripe_webhook_secret
        gateway = self._billing.gateway
        if not secret or gateway is None:
            return Delivery(503, "webhooks are not configured")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return Delivery(413, "body too large")
        try:
            event = verify_webhook(body, request.headers.get("stripe-signature", ""), secret)
        except InvalidWebhook:
            # A forged, tampered or stale (replayed) event: nothing happens.
            return Delivery(400, "invalid signature or payload")
        event_id, event_type = str(event["id"]), str(event["type"])
        if not await self._first_delivery(event_id, event_type):
            return Delivery(200, "duplicate", event_type, event_id)
        if event_type not in PAYMENT_EVENTS:
            return Delivery(200, "ignored", event_type, event_id)
        intent_id = str(event["data"]["object"]["id"])
        try:
            result = await self._act(event_type, await gateway.retrieve_payment(intent_id))
        except PaymentProviderRefused:
            # Stripe does not know the intent (another account's, or a forged id that was
            # still signed with our secret): nothing of ours to act on.
            await self._record(event_id, "unknown payment intent")
            return Delivery(200, "unknown payment intent", event_type, event_id)
        except BillingProblem as problem:
            # Stripe retries a failed delivery; forget this one so the retry acts.
            await self._forget(event_id)
            return Delivery(502, problem.detail, event_type, event_id, type(problem).__name__)
        except Exception:
            # Whatever went wrong, a redelivery must be able to act.
            await self._forget(event_id)
            raise
        await self._record(event_id, result)
        return Delivery(200, result, event_type, event_id)

    async def _act(self, event_type: str, payment: Payment) -> str:
        if event_type == "payment_intent.canceled" or payment.status == CANCELED:
            return await self._release_card_hold(payment)
        attempt_id = await self._attempt_for(payment)
        if attempt_id is None:
            return "no matching top-up"
        # The same settle path as the client's retry: whichever comes first grants.
        attempt = await self._billing.topups.settle_payment(payment, attempt_id=attempt_id)
        return f"top-up {attempt.id} {attempt.status.lower()}"

    async def _attempt_for(self, payment: Payment) -> int | None:
        async with self._billing.db.read() as session:
            query = select(col(TopupAttempt.id)).where(
                col(TopupAttempt.payment_intent_id) == payment.intent_id
            )
            found = (await session.execute(query)).scalar_one_or_none()
            if found is not None:
                return found
            # Our request timed out before we learned the intent's id: match by metadata,
            # and only within the organization the intent's customer belongs to.
            raw_id = (payment.metadata or {}).get("topup_attempt_id", "")
            if not (raw_id.isascii() and raw_id.isdigit()):
                return None
            attempt = await session.get(TopupAttempt, int(raw_id))
            if attempt is None or attempt.payment_intent_id not in (None, payment.intent_id):
                return None
            org = await session.get(Organization, attempt.organization_id)
            if org is None or org.stripe_customer_id != payment.customer_id:
                return None
            return attempt.id

    async def _release_card_hold(self, payment: Payment) -> str:
        async with self._billing.db.read() as session:
            query = select(col(Reservation.id)).where(
                col(Reservation.payment_intent_id) == payment.intent_id
            )
            reservation_id = (await session.execute(query)).scalar_one_or_none()
        if reservation_id is None:
            return "no matching card hold"
        spend = await self._billing.spend.mark_card_settled(reservation_id, "release")
        return f"card hold {reservation_id} {spend.reservation.status.lower()}"

    async def _first_delivery(self, event_id: str, event_type: str) -> bool:
        try:
            async with self._billing.db.write() as session:
                session.add(WebhookEvent(event_id=event_id, type=event_type, result="received"))
        except IntegrityError:
            return False
        return True

    async def _record(self, event_id: str, result: str) -> None:
        async with self._billing.db.write() as session:
            row = await _event(session, event_id)
            if row is not None:
                row.result = result[:200]

    async def _forget(self, event_id: str) -> None:
        async with self._billing.db.write() as session:
            row = await _event(session, event_id)
            if row is not None:
                await session.delete(row)


async def _event(session: Any, event_id: str) -> WebhookEvent | None:
    query = select(WebhookEvent).where(col(WebhookEvent.event_id) == event_id)
    row: WebhookEvent | None = (await session.execute(query)).scalar_one_or_none()
    return row


def _answer(status: int, result: str) -> JSONResponse:
    return JSONResponse({"result": result}, status_code=status)
