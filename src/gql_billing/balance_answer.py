"""The wallet as the balance operation (`GET /v1/op/billing.credits.balance`) answers it,
built in one place: the REST handler and the `wallet.balance_low` webhook send the same shape."""

from __future__ import annotations

from typing import Protocol

from . import rest_models as shapes
from .money import DisplayRates


class WalletFigures(Protocol):
    """What the answer reads of a wallet: an ORM wallet, or a row of its columns."""

    @property
    def balance_credits(self) -> int: ...
    @property
    def reserved_credits(self) -> int: ...
    @property
    def auto_topup_enabled(self) -> bool: ...
    @property
    def auto_threshold_credits(self) -> int | None: ...
    @property
    def auto_topup_amount_credits(self) -> int | None: ...
    @property
    def auto_daily_cap_aud(self) -> int | None: ...
    @property
    def auto_disabled_reason(self) -> str | None: ...


def balance_answer(
    wallet: WalletFigures,
    *,
    charged_today_aud_cents: int,
    rates: DisplayRates,
    currency: str | None = None,
    locale: str | None = None,
) -> shapes.BalanceAnswer:
    """`balance` in `currency` (AUD when none), formatted for `locale`."""
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
            charged_today_aud_cents=charged_today_aud_cents,
            disabled_reason=wallet.auto_disabled_reason,
        ),
    )
