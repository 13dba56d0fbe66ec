"""The live balance subscription (graphql-transport-ws)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from ..auth import Scope
from ..ledger import wallet_for
from .context import Info
from .permissions import needs
from .types import Wallet


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[needs(Scope.BILLING_READ)],
        description="billing:read. The caller's wallet after every ledger movement.",
    )
    async def wallet_updated(self, info: Info) -> AsyncGenerator[Wallet, None]:
        organization_id = info.context.organization_id
        billing = info.context.billing
        async with billing.wallet_events.subscribe(organization_id) as moved:
            while True:
                await moved.get()
                async with billing.db.read() as session:
                    row = await wallet_for(session, organization_id)
                yield Wallet.from_row(row)
