"""The background worker (in `serve`, or alone): auto top-ups, card hold expiry, card hold
settlements left half done, month-end invoices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import timedelta

import structlog

from .billing import Billing
from .billing.invoices import finalize_past_invoices
from .reconcile import reconcile

log = structlog.stdlib.get_logger("gql_billing.worker")
# Reconciliation asks Stripe about every unsettled attempt: not on every tick.
RECONCILE_EVERY_TICKS = 150
# On shutdown the tick in progress may be in the middle of charging cards (each Stripe call
# up to its timeout); past this, it is cancelled. Cancelling is safe, only slower to heal:
# the attempt stays PROCESSING and the next worker resumes it with the same Stripe key.
SHUTDOWN_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class TickReport:
    auto_topups_queued: int
    auto_topups_run: int
    card_holds_released: int
    invoices_finalized: int
    card_settlements_finished: int = 0


class Worker:
    def __init__(self, billing: Billing, *, log_idle_passes: bool = False) -> None:
        self._billing = billing
        # `gql-billing worker` logs every pass (its only output); inside `serve` a pass that
        # did nothing stays at DEBUG, or it would be a line every two seconds per process.
        self._log_idle_passes = log_idle_passes
        settings = billing.settings
        self._card_hold_ttl = timedelta(seconds=settings.card_hold_ttl_seconds)
        self._interval_seconds = settings.worker_interval_seconds
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask `run_forever` to return once the tick in progress (if any) is done."""
        self._stopping.set()

    async def tick(self) -> TickReport:
        """One pass over every duty; each is safe to run from several processes at once."""
        queued = await self._billing.auto_topups.sweep()
        run = await self._billing.auto_topups.run_due()
        released = await self._billing.spend.release_expired_card_holds(self._card_hold_ttl)
        finished = await self._billing.spend.finish_lapsed_card_settlements()
        async with self._billing.db.write() as session:
            finalized = await finalize_past_invoices(session, self._billing.clock.now())
        return TickReport(
            auto_topups_queued=queued,
            auto_topups_run=run,
            card_holds_released=released,
            invoices_finalized=finalized,
            card_settlements_finished=finished,
        )

    async def run_forever(self) -> None:
        """Tick every interval until `stop()`; a stop never interrupts a tick, only the wait."""
        # Customer webhooks go out on their own loop: a receiver that hangs never delays
        # an auto top-up's tick.
        deliveries = asyncio.create_task(self._billing.webhook_delivery.run_forever(self._stopping))
        ticks = 0
        log.info("worker started", interval_seconds=self._interval_seconds)
        while not self._stopping.is_set():
            await self._pass(reconcile_too=ticks % RECONCILE_EVERY_TICKS == 0)
            ticks += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_seconds)
        await deliveries
        log.info("worker stopped", passes=ticks)

    async def _pass(self, *, reconcile_too: bool) -> None:
        metrics = self._billing.metrics
        try:
            report = await self.tick()
            counts = asdict(report)
            if reconcile_too:
                reconciled = await reconcile(self._billing)
                counts["topups_reconciled"] = reconciled.checked
                if reconciled.repaired:
                    log.warning("reconcile granted unpaid top-ups", attempts=reconciled.repaired)
            if self._log_idle_passes or any(counts.values()):
                log.info("worker tick", **counts)
            else:
                log.debug("worker tick", **counts)
        except Exception:
            # One failed pass (Stripe down, say) must not stop the next one.
            log.exception("worker tick failed")
            metrics.worker_tick(failed=True)
        else:
            metrics.worker_tick(failed=False)


@contextlib.asynccontextmanager
async def running(
    worker: Worker, *, grace_seconds: float = SHUTDOWN_GRACE_SECONDS
) -> AsyncIterator[None]:
    """Run the worker for the duration of the block; on exit let its tick finish (bounded)."""
    task = asyncio.create_task(worker.run_forever())
    try:
        yield
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(task, grace_seconds)
        except TimeoutError:
            log.warning("worker tick cancelled at shutdown", grace_seconds=grace_seconds)
