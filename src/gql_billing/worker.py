"""The background worker (in `serve`, or alone): auto top-ups, card hold expiry, month-end
invoices."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from .billing import Billing
from .billing.invoices import finalize_past_invoices
from .reconcile import reconcile

log = logging.getLogger("gql_billing.worker")
# Reconciliation asks Stripe about every unsettled attempt: not on every tick.
RECONCILE_EVERY_TICKS = 150


@dataclass(frozen=True)
class TickReport:
    auto_topups_queued: int
    auto_topups_run: int
    card_holds_released: int
    invoices_finalized: int


class Worker:
    def __init__(self, billing: Billing) -> None:
        self._billing = billing
        settings = billing.settings
        self._card_hold_ttl = timedelta(seconds=settings.card_hold_ttl_seconds)
        self._interval_seconds = settings.worker_interval_seconds

    async def tick(self) -> TickReport:
        """One pass over every duty; each is safe to run from several processes at once."""
        queued = await self._billing.auto_topups.sweep()
        run = await self._billing.auto_topups.run_due()
        released = await self._billing.spend.release_expired_card_holds(self._card_hold_ttl)
        async with self._billing.db.write() as session:
            finalized = await finalize_past_invoices(session, self._billing.clock.now())
        return TickReport(
            auto_topups_queued=queued,
            auto_topups_run=run,
            card_holds_released=released,
            invoices_finalized=finalized,
        )

    async def run_forever(self) -> None:
        ticks = 0
        while True:
            try:
                report = await self.tick()
                if any(vars(report).values()):
                    log.info("worker tick: %s", report)
                if ticks % RECONCILE_EVERY_TICKS == 0:
                    repaired = await reconcile(self._billing)
                    if repaired.repaired:
                        log.warning("reconcile granted unpaid top-ups: %s", repaired.repaired)
            except Exception:
                # One failed pass (Stripe down, say) must not stop the next one.
                log.exception("worker tick failed")
            ticks += 1
            await asyncio.sleep(self._interval_seconds)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
