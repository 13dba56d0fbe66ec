"""Manual top-ups: charge the default card off-session and grant credits exactly once.

Three phases, never a database transaction across a Stripe call:
1. claim the idempotency key and record (or find) the attempt; commit;
2. ask Stripe (create with the attempt's own Stripe key, or look the intent up);
3. settle in a new transaction (`settle_payment`, also used by webhooks and the worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .. import idempotency, ledger
from ..clock import Clock
from ..customer_webhooks import events
from ..db import Database
from ..errors import (
    AuthenticationRequired,
    BillingNotConfigured,
    CardDeclined,
    InvalidInput,
    InvalidState,
    NotFound,
    PaymentMethodRequired,
    PaymentProviderUnavailable,
)
from ..metrics import Metrics
from ..models import (
    Organization,
    PaymentMethod,
    Plan,
    TopupAttempt,
    TopupStatus,
    TopupTrigger,
    Wallet,
)
from ..money import (
    MAX_CHARGE_AUD_CENTS,
    MAX_CREDITS,
    MIN_TOPUP_AUD_CENTS,
    bonus_description,
    topup_bonus_credits,
)
from ..stripe_gateway import DECLINED, REQUIRES_ACTION, SUCCEEDED, Payment, PaymentGateway

OPERATION = "topup"
# Stripe keeps idempotency keys for 24 hours; past that, find the intent by metadata.
STRIPE_KEY_WINDOW = timedelta(hours=23)
# Statuses an attempt settles into that the top-ups metric counts (QUEUED and PROCESSING
# are the way there; the auto top-up queue depth shows those).
COUNTED_STATUSES = frozenset(
    {TopupStatus.SUCCEEDED, TopupStatus.FAILED, TopupStatus.REQUIRES_ACTION}
)

log = structlog.stdlib.get_logger("gql_billing.topups")


@dataclass(frozen=True)
class TopupRequest:
    aud_cents: int | None
    credits: int | None
    idempotency_key: str | None

    def charge_cents(self) -> int:
        """Validate the top-up amount rules (README) and return the charge in AUD cents."""
        if (self.aud_cents is None) == (self.credits is None):
            raise InvalidInput("aud_cents", "Give exactly one of aud_cents or credits")
        field, value = (
            ("aud_cents", self.aud_cents)
            if self.aud_cents is not None
            else ("credits", self.credits)
        )
        assert value is not None
        if value < MIN_TOPUP_AUD_CENTS:
            raise InvalidInput(
                field,
                f"{field} must be at least {MIN_TOPUP_AUD_CENTS} (A${MIN_TOPUP_AUD_CENTS // 100})",
            )
        if value > MAX_CHARGE_AUD_CENTS:
            raise InvalidInput(field, f"{field} must be at most {MAX_CHARGE_AUD_CENTS}")
        return value

    def fingerprint(self) -> str:
        return idempotency.fingerprint({"audCents": self.aud_cents, "credits": self.credits})


@dataclass(frozen=True)
class TopupOutcome:
    topup_attempt_id: int
    payment_intent_id: str
    credits_granted: int
    bonus_credits: int
    new_balance_credits: int
    organization_id: int


class TopupService:
    def __init__(
        self,
        db: Database,
        gateway: PaymentGateway | None,
        clock: Clock,
        *,
        lease: timedelta = timedelta(seconds=60),
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._gateway = gateway
        self._clock = clock
        self._lease = lease
        self._metrics = metrics if metrics is not None else Metrics()

    def _require_gateway(self) -> PaymentGateway:
        if self._gateway is None:
            raise BillingNotConfigured()
        return self._gateway

    async def topup(self, organization_id: int, request: TopupRequest) -> TopupOutcome:
        charge_cents = request.charge_cents()
        key = idempotency.validate_key(request.idempotency_key)
        gateway = self._require_gateway()
        attempt, lock_id = await self._claim(organization_id, key, request, charge_cents)
        if lock_id is None:
            return _outcome(attempt)
        return await self._drive(gateway, attempt, lock_id)

    async def resume(self, organization_id: int, attempt_id: int) -> TopupOutcome:
        """Settle an attempt that waited for 3-D Secure (no client key needed)."""
        gateway = self._require_gateway()
        async with self._db.read() as session:
            attempt = await session.get(TopupAttempt, attempt_id)
        if attempt is None or attempt.organization_id != organization_id:
            raise NotFound("No such top-up attempt")
        if attempt.status in (TopupStatus.SUCCEEDED, TopupStatus.FAILED):
            return _outcome(attempt)
        if attempt.payment_intent_id is None:
            raise InvalidState("This top-up has not reached Stripe yet; try again shortly")
        payment = await gateway.retrieve_payment(attempt.payment_intent_id)
        return _outcome(await self.settle_payment(payment, attempt_id=attempt.id))

    async def _claim(
        self, organization_id: int, key: str, request: TopupRequest, charge_cents: int
    ) -> tuple[TopupAttempt, int | None]:
        """Phase 1. Returns the attempt and the lock to release, or None to replay."""
        now = self._clock.now()
        async with self._db.write() as session:
            org = await session.get(Organization, organization_id)
            if org is None:
                raise NotFound("No such organization")
            if org.plan == Plan.ENTERPRISE:
                raise InvalidState("Enterprise organizations are invoiced monthly, not prepaid")
            claim = await idempotency.claim(
                session,
                organization_id=organization_id,
                operation=OPERATION,
                key=key,
                request_hash=request.fingerprint(),
                now=now,
                lease=self._lease,
            )
            assert claim.record.id is not None
            if claim.resource_id is not None:
                attempt = await session.get(TopupAttempt, claim.resource_id)
                assert attempt is not None
                if attempt.status in (TopupStatus.SUCCEEDED, TopupStatus.FAILED):
                    claim.record.locked_until = None
                    return attempt, None
                return attempt, claim.record.id
            card = await default_card(session, organization_id)
            if card is None or org.stripe_customer_id is None:
                # Raising rolls the claim back: the key is not consumed.
                raise PaymentMethodRequired()
            await _require_headroom(session, organization_id, request, charge_cents)
            attempt = TopupAttempt(
                organization_id=organization_id,
                trigger=TopupTrigger.MANUAL.value,
                aud_cents=charge_cents,
                payment_method_stripe_id=card.stripe_id,
                created_at=now,
            )
            session.add(attempt)
            await session.flush()
            claim.record.resource_id = attempt.id
            return attempt, claim.record.id

    async def _drive(
        self, gateway: PaymentGateway, attempt: TopupAttempt, lock_id: int
    ) -> TopupOutcome:
        """Phases 2 and 3, releasing the key's lease whatever happens."""
        try:
            payment = await self.charge(gateway, attempt)
            result = await self.settle_payment(payment, attempt_id=attempt.id, lock_id=lock_id)
        except BaseException:
            async with self._db.write() as session:
                await idempotency.unlock(session, lock_id)
            raise
        return _outcome(result)

    async def charge(self, gateway: PaymentGateway, attempt: TopupAttempt) -> Payment:
        """Create the attempt's PaymentIntent, or find the one an earlier try made."""
        if attempt.payment_intent_id is not None:
            return await gateway.retrieve_payment(attempt.payment_intent_id)
        customer_id = await self._customer_id(attempt.organization_id)
        assert attempt.id is not None
        if self._clock.now() - attempt.created_at > STRIPE_KEY_WINDOW:
            found = await gateway.find_payment(customer_id, "topup_attempt_id", str(attempt.id))
            if found is not None:
                return found
        return await gateway.charge_off_session(
            customer_id=customer_id,
            payment_method_id=attempt.payment_method_stripe_id,
            amount_cents=attempt.aud_cents,
            idempotency_key=attempt.stripe_idempotency_key,
            metadata={
                "topup_attempt_id": str(attempt.id),
                "organization_id": str(attempt.organization_id),
                "trigger": attempt.trigger,
            },
        )

    async def _customer_id(self, organization_id: int) -> str:
        async with self._db.read() as session:
            org = await session.get(Organization, organization_id)
        if org is None or org.stripe_customer_id is None:
            raise PaymentMethodRequired()
        return org.stripe_customer_id

    async def settle_payment(
        self, payment: Payment, *, attempt_id: int | None, lock_id: int | None = None
    ) -> TopupAttempt:
        """Phase 3: record what Stripe said; grant once if it succeeded.

        The one code path for the client's request, its retry, a webhook and the worker:
        the attempt row is locked, so whichever comes first grants and the others see
        SUCCEEDED.
        """
        async with self._db.write() as session:
            attempt = await _locked_attempt(session, attempt_id, payment.intent_id)
            if lock_id is not None:
                await idempotency.unlock(session, lock_id)
            if attempt is None:
                raise NotFound("No top-up attempt for this payment")
            if attempt.status in (TopupStatus.SUCCEEDED, TopupStatus.FAILED):
                return attempt
            previous = attempt.status
            if attempt.payment_intent_id is None and payment.intent_id is not None:
                attempt.payment_intent_id = payment.intent_id
            now = self._clock.now()
            if payment.status == SUCCEEDED:
                await _grant(session, attempt, now)
            elif payment.status == REQUIRES_ACTION:
                attempt.status = TopupStatus.REQUIRES_ACTION.value
                attempt.client_secret = payment.client_secret
            elif payment.status == DECLINED:
                attempt.status = TopupStatus.FAILED.value
                attempt.decline_code = payment.decline_code
                attempt.failure_reason = payment.failure_message or "card_declined"
                attempt.client_secret = None
                attempt.completed_at = now
            else:
                attempt.status = TopupStatus.PROCESSING.value
            await events.topup_changed(session, attempt, previous, now)
        if attempt.status != previous:
            self._record_change(attempt)
        return attempt

    def _record_change(self, attempt: TopupAttempt) -> None:
        """After the commit: count the attempt's new status and log it (ids only: no client
        secret, no card)."""
        if attempt.status in COUNTED_STATUSES:
            self._metrics.topup_status(attempt.trigger, attempt.status)
        log.info(
            "topup status",
            topup_attempt_id=attempt.id,
            organization_id=attempt.organization_id,
            trigger=attempt.trigger,
            status=attempt.status,
            aud_cents=attempt.aud_cents,
            credits_granted=attempt.credits_granted,
            bonus_credits=attempt.bonus_credits,
            payment_intent_id=attempt.payment_intent_id,
            decline_code=attempt.decline_code,
        )


async def _locked_attempt(
    session: AsyncSession, attempt_id: int | None, intent_id: str | None
) -> TopupAttempt | None:
    query = select(TopupAttempt).with_for_update().execution_options(populate_existing=True)
    if attempt_id is not None:
        query = query.where(col(TopupAttempt.id) == attempt_id)
    elif intent_id is not None:
        query = query.where(col(TopupAttempt.payment_intent_id) == intent_id)
    else:
        return None
    return (await session.execute(query)).scalar_one_or_none()


async def _grant(session: AsyncSession, attempt: TopupAttempt, now: datetime) -> None:
    assert attempt.id is not None
    credits_granted = attempt.aud_cents
    bonus_credits = topup_bonus_credits(credits_granted)
    posted = await ledger.post(
        session,
        organization_id=attempt.organization_id,
        movement=ledger.grant(credits_granted),
        description=f"Top-up of A${credits_granted / 100:,.2f}",
        topup_attempt_id=attempt.id,
        payment_intent_id=attempt.payment_intent_id,
        now=now,
    )
    if bonus_credits:
        posted = await ledger.post(
            session,
            organization_id=attempt.organization_id,
            movement=ledger.bonus(bonus_credits),
            description=bonus_description(),
            topup_attempt_id=attempt.id,
            payment_intent_id=attempt.payment_intent_id,
            now=now,
        )
    if attempt.trigger == TopupTrigger.AUTO:
        # However it was paid (the worker, resumeTopup, a webhook, reconcile), a paid auto
        # top-up ends the run of failures that would switch auto top-up off.
        await session.execute(
            update(Wallet)
            .where(col(Wallet.organization_id) == attempt.organization_id)
            .values(auto_consecutive_failures=0, auto_backoff_until=None)
        )
    attempt.status = TopupStatus.SUCCEEDED.value
    attempt.credits_granted = credits_granted
    attempt.bonus_credits = bonus_credits
    attempt.new_balance_credits = posted.balance_credits
    attempt.client_secret = None
    attempt.completed_at = now


async def _require_headroom(
    session: AsyncSession, organization_id: int, request: TopupRequest, charge_cents: int
) -> None:
    """Refuse, before anything is charged, a top-up whose grant the balance could not hold."""
    wallet = await ledger.wallet_for(session, organization_id)
    granted = charge_cents + topup_bonus_credits(charge_cents)
    if wallet.balance_credits + granted > MAX_CREDITS:
        field = "aud_cents" if request.aud_cents is not None else "credits"
        raise InvalidInput(
            field, f"This top-up would take the balance past {MAX_CREDITS} credits (2^53 - 1)"
        )


async def default_card(session: AsyncSession, organization_id: int) -> PaymentMethod | None:
    query = select(PaymentMethod).where(
        col(PaymentMethod.organization_id) == organization_id, col(PaymentMethod.is_default)
    )
    return (await session.execute(query)).scalar_one_or_none()


def _outcome(attempt: TopupAttempt) -> TopupOutcome:
    """The attempt's state as the client's answer (a problem is raised)."""
    assert attempt.id is not None
    status = TopupStatus(attempt.status)
    if status == TopupStatus.SUCCEEDED:
        assert attempt.payment_intent_id is not None and attempt.new_balance_credits is not None
        return TopupOutcome(
            topup_attempt_id=attempt.id,
            payment_intent_id=attempt.payment_intent_id,
            credits_granted=attempt.credits_granted,
            bonus_credits=attempt.bonus_credits,
            new_balance_credits=attempt.new_balance_credits,
            organization_id=attempt.organization_id,
        )
    if status == TopupStatus.FAILED:
        raise CardDeclined(attempt.decline_code, attempt.failure_reason or "The card was declined")
    if (
        status == TopupStatus.REQUIRES_ACTION
        and attempt.client_secret
        and attempt.payment_intent_id
    ):
        raise AuthenticationRequired(
            client_secret=attempt.client_secret,
            payment_intent_id=attempt.payment_intent_id,
            payment_method_id=attempt.payment_method_stripe_id,
            topup_attempt_id=attempt.id,
        )
    raise PaymentProviderUnavailable(
        "The payment is still processing at Stripe; retry with the same idempotency key"
    )
