"""The background worker: card hold expiry and month-end invoices (in `serve`, or alone)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from .billing import Billing
from .billing.invoices import finalize_past_invoices

log = logging.getLogger("gql_billing.worker")


@dataclass(frozen=True)
class TickReport:
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
        released = await self._billing.spend.release_expired_card_holds(self._card_hold_ttl)
        async with self._billing.db.write() as session:
            finalized = await finalize_past_invoices(session, self._billing.clock.now())
        return TickReport(card_holds_released=released, invoices_finalized=finalized)

    async def run_forever(self) -> None:
        while True:
            try:
                report = await self.tick()
                if report.card_holds_released or report.invoices_finalized:
                    log.info("worker tick: %s", report)
            except Exception:
                # One failed pass (Stripe down, say) must not stop the next one.
                log.exception("worker tick failed")
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
