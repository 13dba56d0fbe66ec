"""Auto top-up: settings, and the worker's side of the queue.

The queue is the `topup_attempts` table itself: a QUEUED AUTO attempt is claimed by the
worker (the daily cap checked in the same transaction), charged with the Stripe key stored
on the attempt, and settled by the same code as a manual top-up. An attempt left
PROCESSING by a worker that died is picked up again after the lease, with the same key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from .. import ledger
from ..auto_queue import charged_today_aud_cents, day_start, queue_if_below
from ..clock import Clock
from ..customer_webhooks import events
from ..db import Database
from ..errors import (
    BillingNotConfigured,
    InvalidInput,
    InvalidState,
    NotFound,
    PaymentMethodRequired,
)
from ..models import (
    Organization,
    Plan,
    TopupAttempt,
    TopupStatus,
    TopupTrigger,
    Wallet,
)
from ..money import MAX_CHARGE_AUD_CENTS, MAX_CREDITS, MAX_DAILY_CAP_AUD, MIN_TOPUP_AUD_CENTS
from ..stripe_gateway import PaymentGateway
from .topups import TopupService, default_card

MAX_CONSECUTIVE_FAILURES = 3
# Attempts one worker tick claims and charges at most; the rest wait for the next tick.
RUN_DUE_PER_TICK = 20
DECLINE_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class AutoTopupSettings:
    enabled: bool
    threshold_credits: int | None
    topup_amount_credits: int | None
    daily_charge_cap_aud: int | None


def _validate(
    settings: AutoTopupSettings, wallet: Wallet
) -> tuple[int | None, int | None, int | None]:
    threshold = _keep(settings.threshold_credits, wallet.auto_threshold_credits)
    amount = _keep(settings.topup_amount_credits, wallet.auto_topup_amount_credits)
    cap = _keep(settings.daily_charge_cap_aud, wallet.auto_daily_cap_aud)
    if threshold is not None and not 0 <= threshold <= MAX_CREDITS:
        raise InvalidInput(
            "threshold_credits", f"threshold_credits must be between 0 and {MAX_CREDITS}"
        )
    if amount is not None and not MIN_TOPUP_AUD_CENTS <= amount <= MAX_CHARGE_AUD_CENTS:
        raise InvalidInput(
            "topup_amount_credits",
            f"topup_amount_credits must be between {MIN_TOPUP_AUD_CENTS} and "
            f"{MAX_CHARGE_AUD_CENTS}",
        )
    if cap is not None and not 0 <= cap <= MAX_DAILY_CAP_AUD:
        raise InvalidInput(
            "daily_charge_cap_aud",
            f"daily_charge_cap_aud must be between 0 and {MAX_DAILY_CAP_AUD}",
        )
    if cap is not None and amount is not None and cap * 100 < amount:
        raise InvalidInput(
            "daily_charge_cap_aud",
            "daily_charge_cap_aud * 100 must be at least topup_amount_credits, "
            "or it could never fire",
        )
    if settings.enabled:
        for field, value in (
            ("threshold_credits", threshold),
            ("topup_amount_credits", amount),
            ("daily_charge_cap_aud", cap),
        ):
            if value is None:
                raise InvalidInput(field, f"Set {field} to enable auto top-up")
    return threshold, amount, cap


def _keep(new: int | None, stored: int | None) -> int | None:
    return stored if new is None else new


class AutoTopupService:
    def __init__(
        self,
        db: Database,
        gateway: PaymentGateway | None,
        clock: Clock,
        topups: TopupService,
        *,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self._db = db
        self._gateway = gateway
        self._clock = clock
        self._topups = topups
        self._lease = lease

    async def configure(self, organization_id: int, settings: AutoTopupSettings) -> Wallet:
        now = self._clock.now()
        async with self._db.write() as session:
            org = await session.get(Organization, organization_id)
            if org is None:
                raise NotFound("No such organization")
            wallet = await ledger.wallet_for(session, organization_id)
            threshold, amount, cap = _validate(settings, wallet)
            if settings.enabled:
                if org.plan == Plan.ENTERPRISE:
                    raise InvalidState("Enterprise organizations are invoiced, not prepaid")
                if self._gateway is None:
                    raise BillingNotConfigured()
                if await default_card(session, organization_id) is None:
                    raise PaymentMethodRequired("Auto top-up charges the default card: set one")
            if settings.enabled and not wallet.auto_topup_enabled:
                # Switching on again starts afresh after the platform switched it off.
                wallet.auto_disabled_reason = None
                wallet.auto_consecutive_failures = 0
                wallet.auto_backoff_until = None
            wallet.auto_topup_enabled = settings.enabled
            wallet.auto_threshold_credits = threshold
            wallet.auto_topup_amount_credits = amount
            wallet.auto_daily_cap_aud = cap
            wallet.updated_at = now
            await session.flush()
            await queue_if_below(session, wallet, now)
            return wallet

    # -- the worker's side ------------------------------------------------------------------

    async def sweep(self) -> int:
        """Queue for every wallet left below its threshold (after a back-off, say)."""
        now = self._clock.now()
        async with self._db.read() as session:
            query = select(col(Wallet.organization_id)).where(
                col(Wallet.auto_topup_enabled),
                col(Wallet.balance_credits) - col(Wallet.reserved_credits)
                < col(Wallet.auto_threshold_credits),
            )
            candidates = list((await session.execute(query)).scalars())
        queued = 0
        for organization_id in candidates:
            async with self._db.write() as session:
                wallet = await ledger.wallet_for(session, organization_id)
                queued += await queue_if_below(session, wallet, now)
        return queued

    async def run_due(self, limit: int = RUN_DUE_PER_TICK) -> int:
        """Claim and charge due attempts (queued, or processing past the lease); the count run."""
        if self._gateway is None:
            return 0
        done = 0
        for _ in range(limit):
            found, attempt = await self._claim_next()
            if not found:
                break
            if attempt is not None:
                await self._charge(attempt)
                done += 1
        return done

    async def _claim_next(self) -> tuple[bool, TopupAttempt | None]:
        """(whether a due attempt was found, the attempt to charge now if any)."""
        now = self._clock.now()
        async with self._db.write() as session:
            stale = now - self._lease
            query = (
                select(TopupAttempt)
                .where(
                    col(TopupAttempt.trigger) == TopupTrigger.AUTO.value,
                    (
                        (col(TopupAttempt.status) == TopupStatus.QUEUED.value)
                        & (
                            col(TopupAttempt.not_before).is_(None)
                            | (col(TopupAttempt.not_before) <= now)
                        )
                    )
                    | (
                        (col(TopupAttempt.status) == TopupStatus.PROCESSING.value)
                        & (col(TopupAttempt.claimed_at) < stale)
                    ),
                )
                .order_by(col(TopupAttempt.id))
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            attempt = (await session.execute(query)).scalar_one_or_none()
            if attempt is None:
                return False, None
            if attempt.status == TopupStatus.PROCESSING:
                attempt.claimed_at = now  # resumed with the same Stripe key
                return True, attempt
            wallet = await ledger.wallet_for(session, attempt.organization_id, lock=True)
            if (
                not wallet.auto_topup_enabled
                or wallet.balance_credits - wallet.reserved_credits
                >= (wallet.auto_threshold_credits or 0)
            ):
                # Switched off, or topped up meanwhile: the queued charge is not needed.
                await session.delete(attempt)
                return True, None
            # The charge is the amount configured now, on the card that is the default now
            # (it may have waited hours), and the cap is checked against it.
            attempt.aud_cents = wallet.auto_topup_amount_credits or attempt.aud_cents
            card = await default_card(session, attempt.organization_id)
            if card is not None:
                attempt.payment_method_stripe_id = card.stripe_id
            cap_cents = (wallet.auto_daily_cap_aud or 0) * 100
            if (
                await charged_today_aud_cents(session, attempt.organization_id, now)
                + attempt.aud_cents
                > cap_cents
            ):
                attempt.not_before = day_start(now) + timedelta(days=1)
                return True, None
            attempt.status = TopupStatus.PROCESSING.value
            attempt.claimed_at = now
            return True, attempt

    async def _charge(self, attempt: TopupAttempt) -> None:
        assert self._gateway is not None and attempt.id is not None
        try:
            payment = await self._topups.charge(self._gateway, attempt)
        except PaymentMethodRequired:
            await self._record_failure(attempt.id, "No default card")
            return
        except Exception:
            # An outage: the attempt stays PROCESSING and is resumed after the lease.
            return
        settled = await self._topups.settle_payment(payment, attempt_id=attempt.id)
        if settled.status == TopupStatus.FAILED:
            await self._record_failure(attempt.id, settled.failure_reason or "declined")

    async def _record_failure(self, attempt_id: int, reason: str) -> None:
        now = self._clock.now()
        async with self._db.write() as session:
            attempt = await session.get(TopupAttempt, attempt_id)
            assert attempt is not None
            if attempt.status != TopupStatus.FAILED:
                previous = attempt.status
                attempt.status = TopupStatus.FAILED.value
                attempt.failure_reason = reason
                attempt.completed_at = now
                await events.topup_changed(session, attempt, previous, now)
            wallet = await ledger.wallet_for(session, attempt.organization_id)
            wallet.auto_consecutive_failures += 1
            wallet.auto_backoff_until = now + DECLINE_BACKOFF
            if wallet.auto_consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                wallet.auto_topup_enabled = False
                wallet.auto_disabled_reason = (
                    f"Switched off after {wallet.auto_consecutive_failures} failed charges "
                    f"in a row (last: {reason})"
                )
                await events.auto_topup_disabled(session, wallet, now)
