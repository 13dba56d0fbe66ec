"""`balanceHistory`: the closing balance per UTC day, for balance-over-time charts."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Annotated

import strawberry
from graphql import GraphQLError

from ..auth import Scope
from ..statements import DayBalance, InvalidDays, balance_history, check_days
from .context import Info
from .permissions import needs
from .scalars import Credits


@strawberry.type
class BalancePoint:
    date: dt.date
    closing_balance_credits: Credits = strawberry.field(
        description="balanceCredits at the end of the day."
    )
    credited_credits: Credits = strawberry.field(
        description=(
            "Sum of the day's positive balance deltas (grants, bonuses, refunds, credit "
            "adjustments)."
        )
    )
    debited_credits: Credits = strawberry.field(
        description=(
            "Sum of the day's negative balance deltas, as a positive number (charges, debits)."
        )
    )

    @classmethod
    def from_day(cls, day: DayBalance) -> BalancePoint:
        return cls(
            date=day.day,
            closing_balance_credits=day.closing_balance_credits,
            credited_credits=day.credited_credits,
            debited_credits=day.debited_credits,
        )


@strawberry.type
class StatementsQuery:
    @strawberry.field(
        permission_classes=[needs(Scope.BILLING_READ)],
        description=(
            "billing:read. Per UTC day from `from` to `to` inclusive (at most 366 days), oldest "
            "first: the closing balance and what moved it, for balance-over-time charts. Days "
            "without entries carry the previous closing balance."
        ),
    )
    async def balance_history(
        self,
        info: Info,
        from_: Annotated[dt.date, strawberry.argument(name="from")],
        to: dt.date,
    ) -> list[BalancePoint] | None:
        try:
            check_days(from_, to)
        except InvalidDays as bad:
            raise GraphQLError(
                str(bad), extensions={"code": "BAD_USER_INPUT", "field": bad.argument}
            ) from None
        read = partial(
            balance_history,
            organization_id=info.context.organization_id,
            first_day=from_,
            last_day=to,
        )
        return [BalancePoint.from_day(day) for day in await info.context.loaders.read(read)]
