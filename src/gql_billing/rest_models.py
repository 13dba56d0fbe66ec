"""The REST operations' shapes: query parameters, request bodies and answers.

The handlers in rest.py read their input and write their answers through these models, and
openapi.py builds the published reference (/v1/openapi.json) from the same models' JSON
schemas, so the reference cannot drift from what the API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import errors
from .models import EntryKind


class _Input(BaseModel):
    # Strict: `"500"` is not an integer and `1` is not a boolean; unknown fields are ignored
    # (older and newer clients keep working).
    model_config = ConfigDict(strict=True, extra="ignore")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=_Input)


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """The validated input, or InvalidInput naming the first offending field (HTTP 422)."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        raise errors.InvalidInput(name, f"{name}: {first['msg']}") from None


# -- query parameters -------------------------------------------------------------------


class BalanceQuery(_Input):
    model_config = ConfigDict(strict=False, extra="ignore")

    currency: str | None = Field(
        None, description="Display currency of `balance` (ISO 4217, e.g. USD); default AUD"
    )
    locale: str | None = Field(
        None, description="Locale of `balance.formatted` (e.g. en-US, de-DE); default en-AU"
    )


class TransactionsQuery(_Input):
    # Query strings are text: numbers are parsed from it (the handler checks the range).
    model_config = ConfigDict(strict=False, extra="ignore")

    limit: int | None = Field(
        None, description="Entries per page, 1 to 100 (default 20)", ge=1, le=100
    )
    cursor: str | None = Field(
        None, description="`next_cursor` of the previous page: the entries after it"
    )
    kind: str | None = Field(
        None,
        description="Comma-separated entry kinds to keep: "
        + ", ".join(kind.value for kind in EntryKind),
        examples=["GRANT,BONUS"],
    )
    format: Literal["json", "csv"] | None = Field(
        None,
        description="`csv` downloads the whole ledger (or the range below) as CSV, streamed; "
        "`Accept: text/csv` does the same. Default json, a page at a time",
    )
    created_after: str | None = Field(
        None,
        description="CSV only: entries created after this instant (ISO 8601; a bare date is "
        "its UTC midnight)",
        examples=["2026-11-01"],
    )
    created_before: str | None = Field(
        None,
        description="CSV only: entries created before this instant (ISO 8601)",
        examples=["2026-12-01T00:00:00Z"],
    )


# -- request bodies ---------------------------------------------------------------------


class NoBody(_Input):
    pass


class AttachBody(_Input):
    payment_method_id: str = Field(description="A confirmed card's pm_... (Stripe.js)")
    set_as_default: bool = Field(False, description="Make it the card top-ups charge")


class SetDefaultBody(_Input):
    payment_method_id: str = Field(description="A saved card's pm_...")


class TopupBody(_Input):
    aud_cents: int | None = Field(
        None, description="Amount to charge in AUD cents (exactly one of aud_cents / credits)"
    )
    credits: int | None = Field(
        None, description="Credits to buy, 100 per A$1 (exactly one of aud_cents / credits)"
    )
    idempotency_key: str | None = Field(
        None,
        description="Makes a retry safe: the same key never charges twice "
        "(or send the Idempotency-Key header)",
    )


class SetAutoTopupBody(_Input):
    enabled: bool = Field(description="Turn automatic top-ups on or off")
    threshold_credits: int | None = Field(
        None, description="Top up when available credits fall below this"
    )
    topup_amount_credits: int | None = Field(None, description="Credits bought per top-up")
    daily_charge_cap_aud: int | None = Field(
        None, description="At most this many whole AUD charged automatically per day"
    )


# -- answers ----------------------------------------------------------------------------


class Money(_Answer):
    amount: str = Field(description="Decimal amount, e.g. 235.00")
    currency: str
    formatted: str = Field(description="For display, in the requested locale")
    is_estimate: bool = Field(description="True for a display conversion from AUD")


class AutoTopupState(_Answer):
    enabled: bool
    threshold_credits: int
    topup_amount_credits: int
    daily_charge_cap_aud: int
    charged_today_aud_cents: int
    disabled_reason: str | None


class BalanceAnswer(_Answer):
    balance_credits: int
    reserved_credits: int
    available_credits: int = Field(description="balance_credits - reserved_credits")
    balance: Money
    auto_topup: AutoTopupState


class TransactionEntry(_Answer):
    id: str
    kind: EntryKind
    amount_credits: int
    balance_delta_credits: int
    available_delta_credits: int
    balance_after_credits: int
    available_after_credits: int
    description: str
    reference: str | None
    created_at: str = Field(description="ISO 8601 timestamp")


class TransactionsAnswer(_Answer):
    transactions: list[TransactionEntry] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class SetupIntentAnswer(_Answer):
    client_secret: str = Field(description="For stripe.confirmCardSetup in the browser")
    setup_intent_id: str


class Card(_Answer):
    id: str = Field(description="The card's pm_...")
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool


class CardAnswer(_Answer):
    payment_method: Card


class TopupAnswer(_Answer):
    topup_attempt_id: str
    payment_intent_id: str | None
    status: Literal["succeeded"]
    credits_granted: int
    bonus_credits: int = Field(description="5% extra on charges above A$20,000")
    new_balance: int


class AutoTopupAnswer(_Answer):
    enabled: bool
    threshold_credits: int | None
    topup_amount_credits: int | None
    daily_charge_cap_aud: int | None
    payment_method_id: str | None = Field(description="The default card it charges")


class Problem(BaseModel):
    """RFC 9457 problem details; some problems add fields (listed here)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="InvalidInput: the offending field")
    decline_code: str | None = Field(None, description="CardDeclined: Stripe's decline code")
    available_credits: int | None = None
    requested_credits: int | None = None
    requires_action: bool | None = Field(
        None, description="AuthenticationRequired: finish 3-D Secure, then retry the same key"
    )
    client_secret: str | None = None
    payment_intent_id: str | None = None
    payment_method_id: str | None = None
    topup_attempt_id: str | None = None
    allow: str | None = Field(None, description="405: the method(s) the path answers")
    operations: list[str] | None = Field(None, description="404: the valid operation names")


@dataclass(frozen=True)
class OperationShape:
    summary: str
    answer: type[_Answer]
    query: type[_Input] | None = None
    body: type[_Input] | None = None
    # Problems this operation answers besides the ones every operation may (401, 403, 405,
    # 429), with what they mean here.
    problems: Mapping[int, str] = field(default_factory=dict)


SHAPES: dict[str, OperationShape] = {
    "billing.credits.balance": OperationShape(
        "The wallet: balance, reserved and available credits, auto top-up state",
        BalanceAnswer,
        query=BalanceQuery,
        problems={422: "Unknown currency or locale"},
    ),
    "billing.credits.transactions": OperationShape(
        "The ledger, newest first, a page at a time",
        TransactionsAnswer,
        query=TransactionsQuery,
        problems={
            400: "CSV: a malformed or backwards created_after/created_before, unknown format",
            422: "limit out of range, a cursor of another list, an unknown kind",
        },
    ),
    "payment_methods.create_setup_intent": OperationShape(
        "Start saving a card: a SetupIntent for Stripe.js",
        SetupIntentAnswer,
        body=NoBody,
        problems={503: "Stripe unavailable or not configured"},
    ),
    "payment_methods.attach": OperationShape(
        "Save a confirmed card",
        CardAnswer,
        body=AttachBody,
        problems={
            402: "The card was declined",
            404: "No such payment method",
            422: "A missing or mistyped field",
            503: "Stripe unavailable or not configured",
        },
    ),
    "payment_methods.set_default": OperationShape(
        "Choose the card top-ups charge",
        CardAnswer,
        body=SetDefaultBody,
        problems={404: "No such saved card", 422: "A missing or mistyped field"},
    ),
    "billing.topup": OperationShape(
        "Charge the default card and grant credits (idempotent per key)",
        TopupAnswer,
        body=TopupBody,
        problems={
            402: "3-D Secure needed (requires_action), card declined, or no saved card",
            409: "The key was used with other parameters, or is still in progress",
            422: "Amount rules (exactly one of aud_cents / credits, at least A$100), no key",
            503: "Stripe unavailable (safe to retry with the same key) or not configured",
        },
    ),
    "billing.set_auto_topup": OperationShape(
        "Configure automatic top-ups",
        AutoTopupAnswer,
        body=SetAutoTopupBody,
        problems={402: "No saved card to charge", 422: "A missing or out-of-range field"},
    ),
}
