"""Live balance: who is watching which organization's wallet, and telling them it moved.

A ledger movement marks its organization on the write transaction; after the commit,
`Database` hands the organizations to `WalletEvents.publish`. On PostgreSQL the movement
also sends `NOTIFY gql_billing_wallet` inside the transaction (delivered at commit), and
every process relays those notifications to its own subscribers, so a subscriber on one
process hears about a movement made by another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable

log = logging.getLogger("gql_billing.live")

CHANNEL = "gql_billing_wallet"
# A slow subscriber only needs to know that the wallet moved, not every step.
QUEUE_SIZE = 1


class WalletEvents:
    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Queue[None]]] = defaultdict(set)

    def publish(self, organization_ids: Iterable[int]) -> None:
        for organization_id in set(organization_ids):
            for queue in self._subscribers.get(organization_id, ()):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscribe(self, organization_id: int) -> AsyncIterator[asyncio.Queue[None]]:
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._subscribers[organization_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[organization_id].discard(queue)
            if not self._subscribers[organization_id]:
                del self._subscribers[organization_id]


async def relay_postgres_notifications(dsn: str, events: WalletEvents) -> None:
    """Listen on PostgreSQL and publish to this process's subscribers until cancelled."""
    import asyncpg

    connection = await asyncpg.connect(dsn)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.isascii() and payload.isdigit():
            events.publish([int(payload)])

    try:
        await connection.add_listener(CHANNEL, on_notify)
        await asyncio.Event().wait()
    finally:
        await connection.close()
