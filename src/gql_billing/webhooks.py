"""POST /webhooks/stripe: verify the signature on the raw body, dedupe on the event id,
re-fetch the object from Stripe, then act through the same services as the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import JSONResponse

from .admission import Refusal, read_limited
from .billing import Billing
from .billing.spend import SettlementAction
from .errors import BillingProblem
from .models import Organization, Reservation, TopupAttempt, WebhookEvent
from .stripe_gateway import (
    CANCELED,
    WEBHOOK_TOLERANCE_SECONDS,
    InvalidWebhook,
    Payment,
    PaymentProviderRefused,
    verify_webhook,
)

log = structlog.stdlib.get_logger("gql_billing.webhooks")

# A claimed event's result until it is processed; then what processing did.
RECEIVED = "received"
CLAIMED, DUPLICATE, IN_PROGRESS = "claimed", "duplicate", "in progress"
# The columns' sizes: a longer id or type is no event of Stripe's.
MAX_EVENT_ID_LENGTH, MAX_EVENT_TYPE_LENGTH = 255, 100
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
    hang_up: bool = False

    @property
    def result(self) -> str:
        if self.category is not None:
            return self.category
        # "top-up 12 succeeded" -> "topup_succeeded": the statuses are a closed set.
        words = self.detail.replace("-", "").split()
        return "_".join(word for word in words if not word.isdigit())


class StripeWebhooks:
    def __init__(self, billing: Billing, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._billing = billing
        # Signature timestamps are checked against the wall clock, as Stripe's SDK checks them.
        self._wall_clock = wall_clock

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
        answer = _answer(delivery.status, delivery.detail)
        if delivery.hang_up:
            # An upload that went on past the limit: the server hangs up rather than read on.
            answer.headers["Connection"] = "close"
        return answer

    async def _receive(self, request: Request) -> Delivery:
        secret = self._billing.settings.stripe_webhook_secret
        gateway = self._billing.gateway
        if not secret or gateway is None:
            return Delivery(503, "webhooks are not configured")
        # Read as it streams in, cut off at the limit: nothing checked the sender yet.
        settings = self._billing.settings
        body = await read_limited(
            request,
            settings.webhook_max_body_bytes,
            linger_seconds=settings.oversized_body_linger_seconds,
        )
        if isinstance(body, Refusal):
            return Delivery(413, "body too large", hang_up="Connection" in body.headers)
        try:
            event = verify_webhook(body, request.headers.get("stripe-signature", ""), secret)
        except InvalidWebhook:
            # A forged, tampered or stale (replayed) event: nothing happens.
            return Delivery(400, "invalid signature or payload")
        if _signed_in_the_future(request.headers.get("stripe-signature", ""), self._wall_clock()):
            # construct_event only refuses old timestamps; one from the future would stay
            # replayable for as long as it is ahead of us.
            return Delivery(400, "invalid signature or payload")
        return await self._process(event)

    async def _process(self, event: Any) -> Delivery:
        """Dedupe, then act. The event counts as processed only once acting succeeded: a
        failure forgets the claim, so Stripe's redelivery acts again."""
        parsed = _parse(event)
        if parsed is None:
            # Signed (so from Stripe, or someone holding our secret), but not an event we can
            # read: refused every time it comes, never recorded as handled.
            return Delivery(400, "malformed event", category="malformed")
        event_id, event_type, intent_id = parsed
        claim = await self._claim(event_id, event_type)
        if claim == DUPLICATE:
            return Delivery(200, "duplicate", event_type, event_id)
        if claim == IN_PROGRESS:
            # Another delivery of it is being acted on; Stripe retries this one later.
            return Delivery(409, "in progress", event_type, event_id, "in_progress")
        try:
            if event_type not in PAYMENT_EVENTS or intent_id is None:
                result = "ignored"
            else:
                result = await self._act(
                    event_type, await self._gateway().retrieve_payment(intent_id)
                )
        except PaymentProviderRefused:
            # Stripe does not know the intent (another account's, or a forged id that was
            # still signed with our secret): nothing of ours to act on.
            result = "unknown payment intent"
        except BillingProblem as problem:
            # Stripe retries a failed delivery; forget this one so the retry acts.
            await self._forget(event_id)
            return Delivery(502, problem.detail, event_type, event_id, type(problem).__name__)
        except BaseException:
            # Whatever went wrong (or a cancelled request), a redelivery must be able to act.
            await self._forget(event_id)
            raise
        await self._record(event_id, result)
        return Delivery(200, result, event_type, event_id)

    def _gateway(self) -> Any:
        gateway = self._billing.gateway
        assert gateway is not None  # _receive answered 503 without one
        return gateway

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
        spend = await self._billing.spend.mark_card_settled(
            reservation_id, SettlementAction.RELEASE
        )
        return f"card hold {reservation_id} {spend.reservation.status.lower()}"

    async def _claim(self, event_id: str, event_type: str) -> str:
        """CLAIMED for the first delivery (or one taking over a claim whose delivery died
        mid-way: older than the lease and still unfinished), DUPLICATE once processed,
        IN_PROGRESS while another delivery works on it."""
        now = self._billing.clock.now()
        try:
            async with self._billing.db.write() as session:
                session.add(
                    WebhookEvent(
                        event_id=event_id, type=event_type, result=RECEIVED, received_at=now
                    )
                )
        except IntegrityError:
            pass
        else:
            return CLAIMED
        lease = timedelta(seconds=self._billing.settings.idempotency_lease_seconds)
        async with self._billing.db.write() as session:
            taken = await session.execute(
                update(WebhookEvent)
                .where(
                    col(WebhookEvent.event_id) == event_id,
                    col(WebhookEvent.result) == RECEIVED,
                    col(WebhookEvent.received_at) < now - lease,
                )
                .values(received_at=now)
            )
            if _rowcount(taken) == 1:
                return CLAIMED
            row = await _event(session, event_id)
        if row is None:
            # Forgotten by a failed delivery between our insert and this read: Stripe
            # redelivers, and that delivery claims it.
            return IN_PROGRESS
        return IN_PROGRESS if row.result == RECEIVED else DUPLICATE

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


def _parse(event: Any) -> tuple[str, str, str | None] | None:
    """The event's id, type and, for the payment events we act on, the intent's id; None when
    the event lacks any of them."""
    try:
        event_id, event_type = event["id"], event["type"]
        intent_id = event["data"]["object"]["id"] if event_type in PAYMENT_EVENTS else None
    except (KeyError, TypeError):
        return None
    if not (isinstance(event_id, str) and 0 < len(event_id) <= MAX_EVENT_ID_LENGTH):
        return None
    if not (isinstance(event_type, str) and len(event_type) <= MAX_EVENT_TYPE_LENGTH):
        return None
    if event_type in PAYMENT_EVENTS and not (isinstance(intent_id, str) and intent_id):
        return None
    return event_id, event_type, intent_id


def _signed_in_the_future(header: str, now: float) -> bool:
    """Whether the signature's timestamp (the first `t=`, as Stripe's SDK reads it) is further
    ahead of `now` than the tolerance allows behind it."""
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key == "t":
            return not value.isdigit() or int(value) > now + WEBHOOK_TOLERANCE_SECONDS
    return True


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def _event(session: Any, event_id: str) -> WebhookEvent | None:
    query = select(WebhookEvent).where(col(WebhookEvent.event_id) == event_id)
    row: WebhookEvent | None = (await session.execute(query)).scalar_one_or_none()
    return row


def _answer(status: int, result: str) -> JSONResponse:
    return JSONResponse({"result": result}, status_code=status)
