"""Problem types (expected failures as union members), built from domain errors in one place."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

import strawberry

from .. import errors
from .common import schema_spelling
from .context import Info
from .ids import to_global_id
from .scalars import Credits
from .types import TopupAttempt


@strawberry.interface(
    description="An expected failure; httpStatus is the REST API's HTTP status for the same "
    "case, and title the same words as the REST problem document."
)
class Problem:
    title: str
    status: int = strawberry.field(
        deprecation_reason="Use httpStatus. `status` clashes with TopupSuccess.status (a String) "
        "when one selection asks for both."
    )
    http_status: int
    detail: str


async def _topup_attempt(root: AuthenticationRequired, info: Info) -> TopupAttempt | None:
    if root.topup_attempt_pk is None:
        return None
    row = await info.context.loaders.topup_attempt.load(root.topup_attempt_pk)
    return TopupAttempt.from_row(row) if row else None


@strawberry.type
class AuthenticationRequired(Problem):
    client_secret: str
    payment_intent_id: str
    payment_method_id: str | None
    requires_action: bool
    topup_attempt_id: strawberry.ID | None = strawberry.field(
        description="The top-up attempt to resume, when this came from a top-up.",
        deprecation_reason="Use topupAttempt { id }. This field clashes with "
        "TopupSuccess.topupAttemptId (ID!) when one selection asks for both.",
    )
    # Resolver assigned in place (not a decorated method), so the fields keep their order.
    topup_attempt: TopupAttempt | None = strawberry.field(
        resolver=_topup_attempt,
        description="The top-up attempt to resume, when this came from a top-up.",
    )
    topup_attempt_pk: strawberry.Private[int | None]


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
    base: dict[str, Any] = {
        "title": exc.title,
        "status": exc.status,
        "http_status": exc.status,
        "detail": exc.detail,
    }
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
                topup_attempt_pk=attempt,
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
            base["detail"] = schema_spelling(exc.detail)
            return InvalidInput(**base, field=exc.field and schema_spelling(exc.field))
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


P = ParamSpec("P")
R = TypeVar("R")


def problems_as_members(resolver: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A mutation resolver returns its success; a BillingProblem it raises becomes the union
    member of the same name, caught here once instead of in every resolver."""

    @functools.wraps(resolver)
    async def resolve(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await resolver(*args, **kwargs)
        except errors.BillingProblem as exc:
            # Each result union lists the problems its service raises; strawberry refuses
            # (as a masked fault) a member the union lacks.
            return cast(R, from_exception(exc))

    return resolve
