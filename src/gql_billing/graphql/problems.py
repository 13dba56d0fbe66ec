"""Problem types (expected failures as union members), built from domain errors in one place."""

from __future__ import annotations

from typing import Any

import strawberry

from .. import errors
from .ids import to_global_id
from .scalars import Credits


@strawberry.interface(description="An expected failure; status is the REST API's HTTP status.")
class Problem:
    title: str
    status: int
    detail: str


@strawberry.type
class AuthenticationRequired(Problem):
    client_secret: str
    payment_intent_id: str
    payment_method_id: str | None
    requires_action: bool
    topup_attempt_id: strawberry.ID | None


@strawberry.type
class PaymentMethodRequired(Problem):
    pass


@strawberry.type
class CardDeclined(Problem):
    decline_code: str | None


@strawberry.type
class InsufficientCredits(Problem):
    available_credits: Credits
    requested_credits: Credits


@strawberry.type
class InvalidInput(Problem):
    field: str | None


@strawberry.type
class IdempotencyConflict(Problem):
    pass


@strawberry.type
class NotFound(Problem):
    pass


@strawberry.type
class InvalidState(Problem):
    pass


@strawberry.type
class PaymentProviderUnavailable(Problem):
    pass


@strawberry.type
class BillingNotConfigured(Problem):
    pass


def from_exception(exc: errors.BillingProblem) -> Problem:
    base: dict[str, Any] = {"title": exc.title, "status": exc.status, "detail": exc.detail}
    match exc:
        case errors.AuthenticationRequired():
            attempt = exc.topup_attempt_id
            return AuthenticationRequired(
                **base,
                client_secret=exc.client_secret,
                payment_intent_id=exc.payment_intent_id,
                payment_method_id=exc.payment_method_id,
                requires_action=True,
                topup_attempt_id=(
                    strawberry.ID(to_global_id("TopupAttempt", attempt)) if attempt else None
                ),
            )
        case errors.CardDeclined():
            return CardDeclined(**base, decline_code=exc.decline_code)
        case errors.InsufficientCredits():
            return InsufficientCredits(
                **base,
                available_credits=exc.available_credits,
                requested_credits=exc.requested_credits,
            )
        case errors.InvalidInput():
            return InvalidInput(**base, field=exc.field)
        case errors.PaymentMethodRequired():
            return PaymentMethodRequired(**base)
        case errors.IdempotencyConflict():
            return IdempotencyConflict(**base)
        case errors.NotFound():
            return NotFound(**base)
        case errors.InvalidState():
            return InvalidState(**base)
        case errors.PaymentProviderUnavailable():
            return PaymentProviderUnavailable(**base)
        case errors.BillingNotConfigured():
            return BillingNotConfigured(**base)
    raise exc
