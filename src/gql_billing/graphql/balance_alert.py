"""Wallet.balanceAlert: the low-balance floor and whether this crossing has been raised."""

from __future__ import annotations

from typing import Any

import strawberry

from .. import models
from ..customer_webhooks.alerts import triggered
from .context import Info
from .scalars import Credits


@strawberry.type
class BalanceAlert:
    enabled: bool
    threshold_credits: Credits = strawberry.field(
        description="Alert when availableCredits falls below this."
    )
    triggered: bool = strawberry.field(
        description="True while below the floor: the alert for this crossing has been raised."
    )

    @classmethod
    def from_row(cls, row: models.BalanceAlert | None) -> BalanceAlert:
        if row is None:
            return cls(enabled=False, threshold_credits=0, triggered=False)
        return cls(
            enabled=row.enabled, threshold_credits=row.threshold_credits, triggered=triggered(row)
        )


async def wallet_balance_alert(root: Any, info: Info) -> BalanceAlert:
    async with info.context.billing.db.read() as session:
        row = await session.get(models.BalanceAlert, root.row.organization_id)
    return BalanceAlert.from_row(row)
