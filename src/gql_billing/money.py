"""Credits and AUD (one credit is one AUD cent), display conversion, CLDR formatting."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from babel.core import Locale, UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision, get_currency_symbol

from .errors import InvalidInput

SETTLEMENT_CURRENCY = "AUD"
DEFAULT_LOCALE = "en_AU"

# Units of the display currency per A$1. Display only: nothing is ever settled at these.
DEFAULT_RATES_PER_AUD: dict[str, Decimal] = {
    "USD": Decimal("0.65322"),
    "EUR": Decimal("0.60150"),
    "GBP": Decimal("0.51820"),
    "NZD": Decimal("1.10340"),
    "JPY": Decimal("98.4100"),
    "CAD": Decimal("0.91230"),
    "SGD": Decimal("0.87640"),
}
DEFAULT_RATES_AS_OF = datetime(2026, 11, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Money:
    """An amount in major units (`amount` is exact) of one currency."""

    amount: Decimal
    currency: str
    is_estimate: bool
    rate_as_of: datetime | None

    def formatted(self, locale: str | None = None) -> str:
        parsed = _parse_locale(locale or DEFAULT_LOCALE)
        text = format_currency(self.amount, self.currency, locale=parsed)
        return _currency_spacing(text, get_currency_symbol(self.currency, locale=parsed))

    @property
    def amount_text(self) -> str:
        return f"{self.amount:.{_precision(self.currency)}f}"


@dataclass(frozen=True)
class DisplayRates:
    rates_per_aud: dict[str, Decimal]
    as_of: datetime

    @classmethod
    def parse(cls, text: str, as_of: str) -> DisplayRates:
        """Read "USD=0.65322,EUR=0.6015"; an empty text gives the built-in table."""
        if not text.strip():
            rates = dict(DEFAULT_RATES_PER_AUD)
        else:
            rates = {}
            for pair in text.split(","):
                code, _, value = pair.partition("=")
                rates[code.strip().upper()] = Decimal(value.strip())
        stamp = datetime.fromisoformat(as_of) if as_of else DEFAULT_RATES_AS_OF
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return cls(rates_per_aud=rates, as_of=stamp)

    def credits_to_money(self, amount_credits: int, currency: str | None) -> Money:
        code = (currency or SETTLEMENT_CURRENCY).strip().upper()
        aud = Decimal(amount_credits) / 100
        if code == SETTLEMENT_CURRENCY:
            return Money(aud.quantize(Decimal("0.01")), code, False, None)
        rate = self.rates_per_aud.get(code)
        if rate is None:
            raise InvalidInput("currency", f"No display rate for currency {code!r}")
        quantum = Decimal(1).scaleb(-_precision(code))
        converted = (aud * rate).quantize(quantum, rounding=ROUND_HALF_EVEN)
        return Money(converted, code, True, self.as_of)


# For answers that only ever show the settlement currency (which needs no rate).
SETTLEMENT_ONLY = DisplayRates(rates_per_aud={}, as_of=DEFAULT_RATES_AS_OF)


def _currency_spacing(text: str, symbol: str) -> str:
    """CLDR's currencySpacing rule, which Babel does not apply: a currency symbol that ends
    (or starts) with a non-symbol character, such as the code "USD", is kept apart from the
    digits by a no-break space ("USD 480.12"), while "$480.12" stays as it is."""
    at = text.find(symbol)
    if not symbol or at < 0:
        return text
    end = at + len(symbol)
    if end < len(text) and text[end].isdigit() and not _is_symbol_or_space(symbol[-1]):
        return f"{text[:end]}\u00a0{text[end:]}"
    if at > 0 and text[at - 1].isdigit() and not _is_symbol_or_space(symbol[0]):
        return f"{text[:at]}\u00a0{text[at:]}"
    return text


def _is_symbol_or_space(char: str) -> bool:
    return unicodedata.category(char)[0] in "SZ"


def _precision(code: str) -> int:
    return int(get_currency_precision(code))


def _parse_locale(identifier: str) -> Locale:
    try:
        return Locale.parse(identifier.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as exc:
        raise InvalidInput("locale", f"Unknown locale {identifier!r}") from exc


# Volume bonus: BONUS_PERCENT of the credits when a charge is strictly above the floor.
BONUS_FLOOR_AUD_CENTS = 2_000_000
BONUS_PERCENT = 5


def topup_bonus_credits(credits_granted: int) -> int:
    """5% bonus strictly above A$20,000 (2,000,000 cents)."""
    if credits_granted > BONUS_FLOOR_AUD_CENTS:
        return credits_granted * BONUS_PERCENT // 100
    return 0


def bonus_description() -> str:
    return f"Volume bonus ({BONUS_PERCENT}% above A${BONUS_FLOOR_AUD_CENTS // 100:,})"


MIN_TOPUP_AUD_CENTS = 10_000
MAX_CHARGE_AUD_CENTS = 99_999_999

# The largest amount of credits stored anywhere (a balance, an entry, a running total, an
# invoice total, an auto top-up setting): 2^53 - 1, the largest integer a JSON client holds
# exactly, and what the `Credits` scalar accepts. Checked before writing, so no sum can reach
# the 64-bit limit of the columns (nor SQLite's silent switch to floating point there).
MAX_CREDITS = 2**53 - 1
# The auto top-up daily cap is whole dollars in a GraphQL `Int` (32-bit), so it is bounded
# there; its cents (cap * 100) are then far inside MAX_CREDITS.
MAX_DAILY_CAP_AUD = 2**31 - 1


def check_credits(value: int, field: str) -> int:
    """`value` when |value| <= MAX_CREDITS; otherwise InvalidInput naming `field`."""
    if not -MAX_CREDITS <= value <= MAX_CREDITS:
        raise InvalidInput(field, f"{field} must be within ±{MAX_CREDITS} (2^53 - 1)")
    return value
