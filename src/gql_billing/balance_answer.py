"""The wallet as the balance operation (`GET /v1/op/billing.credits.balance`) answers it,
built in one place: the REST handler and the `wallet.balance_low` webhook send the same shape."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from . import rest_models as shapes
from .auto_queue import charged_today_aud_cents
from .models import Wallet
from .money import DisplayRates


async def balance_answer(
    session: AsyncSession,
    wallet: Wallet,
    *,
    now: datetime,
    rates: DisplayRates,
    currency: str | None = None,
    locale: str | None = None,
) -> shapes.BalanceAnswer:
    """`wallet` as read (or just updated) in `session`; `balance` in `currency` (AUD when
    none), formatted for `locale`."""
    charged = await charged_today_aud_cents(session, wallet.organization_id, now)
    money = rates.credits_to_money(wallet.balance_credits, currency)
    return shapes.BalanceAnswer(
        balance_credits=wallet.balance_credits,
        reserved_credits=wallet.reserved_credits,
        available_credits=wallet.balance_credits - wallet.reserved_credits,
        balance=shapes.Money(
            amount=money.amount_text,
            currency=money.currency,
            formatted=money.formatted(locale),
            is_estimate=money.is_estimate,
        ),
        auto_topup=shapes.AutoTopupState(
            enabled=wallet.auto_topup_enabled,
            threshold_credits=wallet.auto_threshold_credits or 0,
            topup_amount_credits=wallet.auto_topup_amount_credits or 0,
            daily_charge_cap_aud=wallet.auto_daily_cap_aud or 0,
            charged_today_aud_cents=charged,
            disabled_reason=wallet.auto_disabled_reason,
        ),
    )
