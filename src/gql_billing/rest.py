"""The seed's REST operation API: `/v1/op/<operation>` over the same billing services.

Reads are GET, everything else POST with a JSON body; fields are the seed's snake_case;
problems are RFC 9457 `application/problem+json` with the HTTP status
of the same case's GraphQL `Problem.status`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import errors, models, reads, statements
from . import rest_models as shapes
from .admission import Admission, Refusal
from .auth import Principal, Scope
from .auto_queue import charged_today_aud_cents
from .balance_answer import balance_answer
from .billing import Billing
from .billing.auto_topup import AutoTopupSettings
from .billing.topups import TopupRequest, default_card
from .graphql.ids import from_cursor, to_cursor, to_global_id

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PROBLEM = "application/problem+json"


class HttpProblem(Exception):
    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def problem_response(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def from_refusal(refusal: Refusal) -> Response:
    """An admission refusal (401, 403, 413, 415, 429) as a problem document."""
    extra: dict[str, Any] = {}
    if refusal.retry_after_seconds is not None:
        extra["retry_after"] = refusal.retry_after_seconds
    response = problem_response(refusal.status, refusal.title, refusal.detail, **extra)
    response.headers.update(refusal.headers)
    return response


def from_billing_problem(exc: errors.BillingProblem) -> Response:
    extra: dict[str, Any] = {}
    match exc:
        case errors.InvalidInput():
            extra["field"] = exc.field
        case errors.CardDeclined():
            extra["decline_code"] = exc.decline_code
        case errors.InsufficientCredits():
            extra |= {
                "available_credits": exc.available_credits,
                "requested_credits": exc.requested_credits,
            }
        case errors.AuthenticationRequired():
            extra |= {
                "requires_action": True,
                "client_secret": exc.client_secret,
                "payment_intent_id": exc.payment_intent_id,
                "payment_method_id": exc.payment_method_id,
                "topup_attempt_id": exc.topup_attempt_id
                and to_global_id("TopupAttempt", exc.topup_attempt_id),
            }
    return problem_response(exc.status, exc.title, exc.detail, **extra)


@dataclass(frozen=True)
class Operation:
    method: str
    scope: Scope
    # A dict is answered as JSON; a handler may answer otherwise itself (the CSV export).
    handler: Callable[[Billing, int, Request, dict[str, Any]], Awaitable[dict[str, Any] | Response]]


async def balance(
    billing: Billing, org_id: int, request: Request, _: dict[str, Any]
) -> dict[str, Any]:
    query = shapes.parse(shapes.BalanceQuery, request.query_params)
    wallet = await billing.db.driver.run(lambda reader: reads.wallet(reader, org_id))
    if wallet is None:
        raise errors.NotFound("No wallet for this organization")
    async with billing.db.read() as session:
        charged = await charged_today_aud_cents(session, org_id, billing.clock.now())
    answer = balance_answer(
        wallet,
        charged_today_aud_cents=charged,
        rates=billing.rates,
        currency=query.currency,
        locale=query.locale,
    )
    return answer.model_dump(mode="json")


async def transactions(
    billing: Billing, org_id: int, request: Request, _: dict[str, Any]
) -> dict[str, Any] | Response:
    if statements.wants_csv(request.query_params.get("format"), request.headers.get("accept")):
        return await statements.csv_response(billing.db, org_id, request.query_params)
    params = shapes.parse(shapes.TransactionsQuery, request.query_params)
    limit = params.limit or billing.settings.default_page_size
    if not 1 <= limit <= billing.settings.max_page_size:
        raise errors.InvalidInput(
            "limit", f"limit must be between 1 and {billing.settings.max_page_size}"
        )
    after = None
    if params.cursor:
        after = from_cursor(params.cursor)
        if after is None:
            raise errors.InvalidInput("cursor", "Not a cursor of this list")
    kinds = None
    if params.kind:
        kinds = [k.strip().upper() for k in params.kind.split(",")]
        if not set(kinds) <= set(models.EntryKind):
            raise errors.InvalidInput("kind", "Unknown transaction kind")
    # The same read as GraphQL's `transactions`: one keyset slice through the read layer.
    keys = reads.Keyset(size=limit, after_id=after)
    ledger_filter = reads.LedgerFilter(kinds=kinds)
    page = await billing.db.driver.run(
        lambda reader: reads.ledger(reader, org_id, keys, ledger_filter)
    )
    last = page.rows[-1] if page.rows else None
    return shapes.TransactionsAnswer(
        transactions=[_entry(row) for row in page.rows],
        next_cursor=to_cursor(last.id) if page.has_more and last is not None else None,
    ).model_dump(mode="json")


def _entry(row: Any) -> shapes.TransactionEntry:
    """A row of the read layer's TRANSACTION_COLUMNS in the REST shape."""
    return shapes.TransactionEntry(
        id=to_global_id("Transaction", row.id),
        kind=models.EntryKind(row.kind),
        amount_credits=row.amount_credits,
        balance_delta_credits=row.balance_delta_credits,
        available_delta_credits=row.available_delta_credits,
        balance_after_credits=row.balance_after_credits,
        available_after_credits=row.available_after_credits,
        description=row.description,
        reference=row.reference,
        created_at=row.created_at.isoformat(),
    )


async def create_setup_intent(
    billing: Billing, org_id: int, _: Request, __: dict[str, Any]
) -> dict[str, Any]:
    intent = await billing.cards.create_setup_intent(org_id)
    return shapes.SetupIntentAnswer(
        client_secret=intent.client_secret, setup_intent_id=intent.id
    ).model_dump(mode="json")


async def attach(billing: Billing, org_id: int, _: Request, body: dict[str, Any]) -> dict[str, Any]:
    attach = shapes.parse(shapes.AttachBody, body)
    row = await billing.cards.attach(
        org_id, attach.payment_method_id, set_as_default=attach.set_as_default
    )
    return _card(row)


async def set_default(
    billing: Billing, org_id: int, _: Request, body: dict[str, Any]
) -> dict[str, Any]:
    chosen = shapes.parse(shapes.SetDefaultBody, body)
    row = await billing.cards.set_default(org_id, chosen.payment_method_id)
    return _card(row)


def _card(row: models.PaymentMethod) -> dict[str, Any]:
    card = shapes.Card(
        id=row.stripe_id,
        brand=row.brand,
        last4=row.last4,
        exp_month=row.exp_month,
        exp_year=row.exp_year,
        is_default=row.is_default,
    )
    return shapes.CardAnswer(payment_method=card).model_dump(mode="json")


async def topup(
    billing: Billing, org_id: int, request: Request, body: dict[str, Any]
) -> dict[str, Any]:
    asked = shapes.parse(shapes.TopupBody, body)
    key = asked.idempotency_key if "idempotency_key" in body else None
    if key is None:
        key = request.headers.get("idempotency-key")
    outcome = await billing.topups.topup(
        org_id,
        TopupRequest(aud_cents=asked.aud_cents, credits=asked.credits, idempotency_key=key),
    )
    return shapes.TopupAnswer(
        topup_attempt_id=to_global_id("TopupAttempt", outcome.topup_attempt_id),
        payment_intent_id=outcome.payment_intent_id,
        status="succeeded",
        credits_granted=outcome.credits_granted,
        bonus_credits=outcome.bonus_credits,
        new_balance=outcome.new_balance_credits,
    ).model_dump(mode="json")


async def set_auto_topup(
    billing: Billing, org_id: int, _: Request, body: dict[str, Any]
) -> dict[str, Any]:
    asked = shapes.parse(shapes.SetAutoTopupBody, body)
    wallet = await billing.auto_topups.configure(
        org_id,
        AutoTopupSettings(
            enabled=asked.enabled,
            threshold_credits=asked.threshold_credits,
            topup_amount_credits=asked.topup_amount_credits,
            daily_charge_cap_aud=asked.daily_charge_cap_aud,
        ),
    )
    async with billing.db.read() as session:
        card = await default_card(session, org_id)
    return shapes.AutoTopupAnswer(
        enabled=wallet.auto_topup_enabled,
        threshold_credits=wallet.auto_threshold_credits,
        topup_amount_credits=wallet.auto_topup_amount_credits,
        daily_charge_cap_aud=wallet.auto_daily_cap_aud,
        payment_method_id=card.stripe_id if card else None,
    ).model_dump(mode="json")


OPERATIONS: dict[str, Operation] = {
    "billing.credits.balance": Operation("GET", Scope.BILLING_READ, balance),
    "billing.credits.transactions": Operation("GET", Scope.BILLING_READ, transactions),
    "payment_methods.create_setup_intent": Operation(
        "POST", Scope.BILLING_WRITE, create_setup_intent
    ),
    "payment_methods.attach": Operation("POST", Scope.BILLING_WRITE, attach),
    "payment_methods.set_default": Operation("POST", Scope.BILLING_WRITE, set_default),
    "billing.topup": Operation("POST", Scope.BILLING_WRITE, topup),
    "billing.set_auto_topup": Operation("POST", Scope.BILLING_WRITE, set_auto_topup),
}


class RestApi:
    def __init__(self, billing: Billing, admission: Admission) -> None:
        self._billing = billing
        self._admission = admission

    async def handle(self, request: Request) -> Response:
        operation = OPERATIONS.get(request.path_params["operation"])
        if operation is None:
            names = sorted(OPERATIONS)
            return problem_response(
                404,
                errors.NotFound.title,
                f"No such operation; the operations are {', '.join(names)} "
                "(reference: /v1/openapi.json)",
                operations=names,
            )
        if request.method != operation.method:
            return problem_response(
                405,
                "Method Not Allowed",
                f"Use {operation.method}",
                headers={"Allow": operation.method},
                allow=operation.method,
            )
        posted = operation.method == "POST"
        admitted = await self._admission.admit(
            request, needs=operation.scope, json_only=posted, with_body=posted
        )
        if isinstance(admitted, Refusal):
            return from_refusal(admitted)
        response = await self._run(operation, request, admitted.principal, admitted.body)
        # After the answer went out, as on /graphql.
        response.background = BackgroundTask(self._admission.record_use, admitted.principal)
        return response

    async def _run(
        self, operation: Operation, request: Request, principal: Principal, raw: bytes
    ) -> Response:
        try:
            body = _json_body(raw) if operation.method == "POST" else {}
            result = await operation.handler(self._billing, _org(principal), request, body)
        except HttpProblem as exc:
            return problem_response(exc.status, exc.title, exc.detail, **exc.extra)
        except errors.BillingProblem as exc:
            return from_billing_problem(exc)
        return result if isinstance(result, Response) else JSONResponse(result)


def _org(principal: Principal) -> int:
    # Every operation needs an organization scope, which service tokens never hold.
    if principal.organization_id is None:
        raise HttpProblem(403, "Forbidden", "This operation needs an organization token")
    return principal.organization_id


def _json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpProblem(400, "Bad Request", "The body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise HttpProblem(400, "Bad Request", "The body must be a JSON object")
    return body


def rest_routes(billing: Billing, admission: Admission) -> list[Route]:
    # Every method reaches the handler, which answers 405 with the operation's own method.
    return [Route("/v1/op/{operation}", RestApi(billing, admission).handle, methods=ALL_METHODS)]
