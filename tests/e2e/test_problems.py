"""Problems read the same on both APIs: the seed's titles word for word, and for one case the
REST problem document and the GraphQL union member carry the same title, status and detail.

The seed's examples (a top-up over `POST /v1/op/billing.topup` on a 3-D Secure card, with no
card, on a declined card) are replayed and compared field by field."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Factory, Org
from gql_billing import auth as tokens
from gql_billing.billing.organizations import create_organization
from gql_billing.models import Plan
from gql_billing.settings import Settings
from support import databases
from support.app_server import serve
from support.cards import DECLINED_ON_CHARGE, THREE_D_SECURE, VISA, save_card
from support.emulator import StripeEmulator
from support.stripe_proxy import FaultProxy

PROBLEM_JSON = "application/problem+json"
AUTHENTICATION_DETAIL = "Card requires authentication (3DS) — customer must complete on-session"

# The seed's titles, word for word (union member -> title).
SEED_TITLES = {
    "AuthenticationRequired": "Authentication Required",
    "PaymentMethodRequired": "Payment Method Required",
    "CardDeclined": "Card Declined",
    "InvalidInput": "Invalid Input",
    "IdempotencyConflict": "Idempotency Conflict",
    "InsufficientCredits": "Insufficient Credits",
    "NotFound": "Not Found",
    "InvalidState": "Invalid State",
    "PaymentProviderUnavailable": "Payment Provider Unavailable",
    "BillingNotConfigured": "Billing Not Configured",
}

# One selection asks for TopupSuccess.status and every problem's httpStatus, and for the
# attempt behind a 3-D Secure challenge: the contract's non-clashing fields.
TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename
    ... on TopupSuccess { topupAttemptId paymentIntentId status creditsGranted }
    ... on AuthenticationRequired {
      clientSecret paymentIntentId paymentMethodId requiresAction
      topupAttempt { id status trigger audCents paymentIntentId clientSecret notBefore }
    }
    ... on CardDeclined { declineCode }
    ... on InvalidInput { field }
    ... on Problem { title httpStatus detail }
  }
}
"""

SET_DEFAULT = """
mutation SetDefault($pm: String!) {
  setDefaultPaymentMethod(input: {paymentMethodId: $pm}) {
    __typename ... on Problem { title httpStatus detail }
  }
}
"""

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on InsufficientCredits { availableCredits requestedCredits }
    ... on Problem { title httpStatus detail }
  }
}
"""

CREATE_SETUP_INTENT = """
mutation { createSetupIntent { __typename ... on Problem { title httpStatus detail } } }
"""

TOPUPS = "{ topups(first: 5) { edges { node { id status paymentIntentId clientSecret } } } }"


async def rest_topup(make: Factory, org: Org, key: str, **body: Any) -> httpx.Response:
    return await make.http.post(
        f"{make.app.base_url}/v1/op/billing.topup",
        headers={"Authorization": f"Bearer {org.token}", "Idempotency-Key": key},
        json=body,
    )


async def graphql_topup(org: Org, **input: Any) -> dict[str, Any]:
    return (await org.api(TOPUP, {"input": input}))["topup"]  # type: ignore[no-any-return]


def problem_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


async def topups_of(org: Org) -> list[dict[str, Any]]:
    return [edge["node"] for edge in (await org.api(TOPUPS))["topups"]["edges"]]


# -- the seed's examples, field by field ----------------------------------------------------------


async def test_seed_3ds_topup_over_rest_answers_the_seed_problem(
    make: Factory, emulator: StripeEmulator
) -> None:
    # given an organization whose default card asks for 3-D Secure
    org = await make.org(credits=23_500)
    pm = await save_card(org.api, emulator, THREE_D_SECURE)

    # when it tops up A$500 over REST
    response = await rest_topup(make, org, "order-2026-11-27-1", aud_cents=50_000)

    # then the seed's 402 problem, with what Stripe.js needs and the attempt to resume
    [intent] = await asyncio.to_thread(emulator.list_payment_intents)
    [attempt] = await topups_of(org)
    assert response.status_code == 402
    assert problem_of(response) == {
        "type": "about:blank",
        "title": "Authentication Required",
        "status": 402,
        "detail": AUTHENTICATION_DETAIL,
        "requires_action": True,
        "client_secret": intent["client_secret"],
        "payment_intent_id": intent["id"],
        "payment_method_id": pm,
        "topup_attempt_id": attempt["id"],
    }
    assert (intent["amount"], attempt["paymentIntentId"]) == (50_000, intent["id"])


async def test_seed_3ds_topup_over_graphql_answers_the_same_problem(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    pm = await save_card(org.api, emulator, THREE_D_SECURE)

    result = await graphql_topup(org, audCents=50_000, idempotencyKey="order-2026-11-27-1")

    [intent] = await asyncio.to_thread(emulator.list_payment_intents)
    [attempt] = await topups_of(org)
    assert result == {
        "__typename": "AuthenticationRequired",
        "title": "Authentication Required",
        "httpStatus": 402,
        "detail": AUTHENTICATION_DETAIL,
        "clientSecret": intent["client_secret"],
        "paymentIntentId": intent["id"],
        "paymentMethodId": pm,
        "requiresAction": True,
        "topupAttempt": {
            "id": attempt["id"],
            "status": "REQUIRES_ACTION",
            "trigger": "MANUAL",
            "audCents": 50_000,
            "paymentIntentId": intent["id"],
            "clientSecret": intent["client_secret"],
            "notBefore": None,
        },
    }


async def test_seed_topup_without_a_card_is_payment_method_required_on_both_apis(
    make: Factory,
) -> None:
    org = await make.org(credits=23_500)

    rest = await rest_topup(make, org, "no-card", aud_cents=50_000)
    graphql = await graphql_topup(org, audCents=50_000, idempotencyKey="no-card-gql")

    detail = "No default card: attach one first"
    assert rest.status_code == 402
    assert problem_of(rest) == {
        "type": "about:blank",
        "title": "Payment Method Required",
        "status": 402,
        "detail": detail,
    }
    assert graphql == {
        "__typename": "PaymentMethodRequired",
        "title": "Payment Method Required",
        "httpStatus": 402,
        "detail": detail,
    }


async def test_seed_topup_on_a_declined_card_is_card_declined_on_both_apis(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)

    rest = await rest_topup(make, org, "declined", aud_cents=50_000)
    graphql = await graphql_topup(org, audCents=50_000, idempotencyKey="declined-gql")

    assert rest.status_code == 402
    body = problem_of(rest)
    assert body == {
        "type": "about:blank",
        "title": "Card Declined",
        "status": 402,
        "detail": body["detail"],
        "decline_code": "card_declined",
    }
    assert body["detail"]
    assert graphql == {
        "__typename": "CardDeclined",
        "title": "Card Declined",
        "httpStatus": 402,
        "detail": body["detail"],
        "declineCode": "card_declined",
    }


# -- every problem: the seed's title, the same on REST and GraphQL --------------------------------


Case = Callable[[Factory, StripeEmulator, FaultProxy], Awaitable[tuple[httpx.Response, Any]]]


async def _idempotency_conflict(make: Factory, emulator: StripeEmulator, _: FaultProxy) -> Any:
    org = await make.org()
    await save_card(org.api, emulator, VISA)
    assert (await rest_topup(make, org, "k", aud_cents=10_000)).status_code == 200
    rest = await rest_topup(make, org, "k", aud_cents=20_000)
    return rest, await graphql_topup(org, audCents=20_000, idempotencyKey="k")


async def _not_found(make: Factory, emulator: StripeEmulator, _: FaultProxy) -> Any:
    org = await make.org()
    await save_card(org.api, emulator, VISA)
    rest = await make.http.post(
        f"{make.app.base_url}/v1/op/payment_methods.set_default",
        headers={"Authorization": f"Bearer {org.token}"},
        json={"payment_method_id": "pm_not_ours"},
    )
    graphql = await org.api(SET_DEFAULT, {"pm": "pm_not_ours"})
    return rest, graphql["setDefaultPaymentMethod"]


async def _invalid_state(make: Factory, _: StripeEmulator, __: FaultProxy) -> Any:
    org = await make.org(plan=Plan.ENTERPRISE)
    rest = await rest_topup(make, org, "invoiced", aud_cents=10_000)
    return rest, await graphql_topup(org, audCents=10_000, idempotencyKey="invoiced")


async def _provider_unavailable(make: Factory, emulator: StripeEmulator, proxy: FaultProxy) -> Any:
    org = await make.org()
    await save_card(org.api, emulator, VISA)
    proxy.inject("http_500", path_contains="/v1/payment_intents", count=2)
    rest = await rest_topup(make, org, "outage", aud_cents=10_000)
    return rest, await graphql_topup(org, audCents=10_000, idempotencyKey="outage-gql")


@pytest.mark.parametrize(
    ("case", "typename"),
    [
        (_idempotency_conflict, "IdempotencyConflict"),
        (_not_found, "NotFound"),
        (_invalid_state, "InvalidState"),
        (_provider_unavailable, "PaymentProviderUnavailable"),
    ],
)
async def test_one_case_reads_the_same_on_rest_and_graphql(
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    case: Case,
    typename: str,
) -> None:
    rest, graphql = await case(make, emulator, stripe_proxy)

    body = problem_of(rest)
    assert graphql["__typename"] == typename, graphql
    assert (body["title"], body["status"], body["detail"]) == (
        SEED_TITLES[typename],
        graphql["httpStatus"],
        graphql["detail"],
    )
    assert graphql["title"] == SEED_TITLES[typename]


async def test_invalid_input_names_the_field_in_each_apis_spelling(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org()
    await save_card(org.api, emulator, VISA)

    rest = await rest_topup(make, org, "small", aud_cents=50)
    graphql = await graphql_topup(org, audCents=50, idempotencyKey="small")

    assert rest.status_code == 422
    assert problem_of(rest) == {
        "type": "about:blank",
        "title": "Invalid Input",
        "status": 422,
        "detail": "aud_cents must be at least 10000 (A$100)",
        "field": "aud_cents",
    }
    assert graphql == {
        "__typename": "InvalidInput",
        "title": "Invalid Input",
        "httpStatus": 422,
        "detail": "audCents must be at least 10000 (A$100)",
        "field": "audCents",
    }


async def test_insufficient_credits_carries_the_seed_title(make: Factory) -> None:
    # a spend exists on GraphQL only (service tokens)
    org = await make.org(credits=500)
    service = make.client(await make.token(None, "billing:spend"))
    spend = {"organizationId": org.id, "amountCredits": 800, "reference": "order-1"}

    result = (await service(RESERVE, {"input": {**spend, "idempotencyKey": "r1"}}))[
        "reserveCredits"
    ]

    # (a service token is not told the organization's balance: availableCredits reads 0)
    assert result == {
        "__typename": "InsufficientCredits",
        "title": "Insufficient Credits",
        "httpStatus": 402,
        "detail": "800 credits requested: more than is available",
        "availableCredits": 0,
        "requestedCredits": 800,
    }


async def test_billing_not_configured_carries_the_seed_title_on_both_apis(
    tmp_path: Path, template_db: Path, http: httpx.AsyncClient
) -> None:
    # given a gateway started without a Stripe key
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=databases.sqlite_copy(template_db, tmp_path),
        run_worker=False,
    )
    async with serve(settings) as app:
        org = await create_organization(app.billing.db, name="Unbilled")
        assert org.id is not None
        issued = await tokens.issue_token(
            app.billing.db, organization_id=org.id, scopes=tokens.ORGANIZATION_SCOPES
        )
        headers = {"Authorization": f"Bearer {issued.token}"}

        # when a card is to be saved over each API
        rest = await http.post(
            f"{app.base_url}/v1/op/payment_methods.create_setup_intent", headers=headers
        )
        graphql = await http.post(
            app.graphql_url, json={"query": CREATE_SETUP_INTENT}, headers=headers
        )

    # then both answer the seed's 503 problem in the same words
    member = graphql.json()["data"]["createSetupIntent"]
    assert rest.status_code == 503
    assert problem_of(rest) == {
        "type": "about:blank",
        "title": "Billing Not Configured",
        "status": 503,
        "detail": member["detail"],
    }
    assert member == {
        "__typename": "BillingNotConfigured",
        "title": "Billing Not Configured",
        "httpStatus": 503,
        "detail": "No payment backend is configured on this gateway",
    }
