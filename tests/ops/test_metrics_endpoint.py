"""GET /metrics: what an operator's Prometheus sees after real traffic through the real app."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import TEST_WEBHOOK_SECRET, Factory, Org
from gql_billing.settings import Settings
from gql_billing.worker import Worker
from support.app_server import serve
from support.cards import DECLINED_ON_CHARGE, save_card
from support.emulator import StripeEmulator
from support.scrape import scrape
from support.webhook_events import deliver, event_body

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename
    ... on TopupSuccess { paymentIntentId newBalance }
    ... on CardDeclined { declineCode }
  }
}
"""

SET_AUTO_TOPUP = """
mutation Auto($input: SetAutoTopupInput!) {
  setAutoTopup(input: $input) { __typename }
}
"""

WALLET = "{ wallet { balanceCredits } }"

REQUESTS = "gql_billing_graphql_requests_total"


async def topup(org: Org, key: str, aud_cents: int = 10_000) -> dict[str, Any]:
    data = await org.api(TOPUP, {"input": {"audCents": aud_cents, "idempotencyKey": key}})
    return data["topup"]  # type: ignore[no-any-return]


async def test_a_topup_and_a_decline_move_the_counters(
    make: Factory, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    paying = await make.org(name="Paying")
    await save_card(paying.api, emulator)
    declined = await make.org(name="Declined")
    await save_card(declined.api, emulator, DECLINED_ON_CHARGE)

    assert (await topup(paying, "ok"))["__typename"] == "TopupSuccess"
    assert (await topup(declined, "no"))["__typename"] == "CardDeclined"
    metrics = await scrape(http, make.app.base_url)

    mutation_topup = {"operation_type": "mutation", "operation": "topup"}
    assert metrics.total(REQUESTS, **mutation_topup, outcome="TopupSuccess") == 1
    assert metrics.total(REQUESTS, **mutation_topup, outcome="CardDeclined") == 1
    assert (
        metrics.total("gql_billing_graphql_request_duration_seconds_count", **mutation_topup) == 2
    )
    assert metrics.total("gql_billing_topups_total", trigger="MANUAL", status="SUCCEEDED") == 1
    assert metrics.total("gql_billing_topups_total", trigger="MANUAL", status="FAILED") == 1
    create = {"call": "payment_intents.create"}
    assert metrics.total("gql_billing_stripe_request_duration_seconds_count", **create) == 2
    assert metrics.total("gql_billing_stripe_errors_total", **create) == 1
    assert metrics.total("gql_billing_stripe_errors_total", call="payment_methods.attach") == 0
    assert (
        metrics.total(
            "gql_billing_http_request_duration_seconds_count",
            route="/graphql",
            method="POST",
            status="200",
        )
        >= 2
    )


async def test_queries_rejected_documents_and_missing_scopes_have_their_outcome(
    make: Factory, http: httpx.AsyncClient
) -> None:
    reader = await make.org(scopes="billing:read")

    await reader.api(WALLET)
    rejected = await reader.api.post("{ wallet { balanceCredits ")
    forbidden = await reader.api.post(TOPUP, {"input": {"audCents": 10_000}})
    metrics = await scrape(http, make.app.base_url)

    assert rejected.json()["errors"]
    assert forbidden.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert metrics.total(REQUESTS, operation_type="query", operation="wallet", outcome="ok") == 1
    assert metrics.total(REQUESTS, operation="unknown", outcome="invalid") == 1
    assert metrics.total(REQUESTS, operation="topup", outcome="forbidden") == 1


async def test_auto_topup_queue_depth_is_counted_at_scrape_time(
    make: Factory, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    settings = {"thresholdCredits": 5_000, "topupAmountCredits": 50_000, "dailyChargeCapAud": 500}

    updated = await org.api(SET_AUTO_TOPUP, {"input": {"enabled": True, **settings}})
    queued = await scrape(http, make.app.base_url)
    await Worker(make.app.billing).tick()
    drained = await scrape(http, make.app.base_url)

    assert updated["setAutoTopup"]["__typename"] == "AutoTopupUpdated"
    depth = "gql_billing_auto_topup_queue_depth"
    assert queued.total(depth, status="QUEUED") == 1
    assert queued.total(depth, status="PROCESSING") == 0
    assert drained.total(depth) == 0
    assert drained.total("gql_billing_topups_total", trigger="AUTO", status="SUCCEEDED") == 1
    assert (await org.api(WALLET))["wallet"]["balanceCredits"] == 51_000


async def test_webhook_events_are_counted_by_type_and_result(
    make: Factory, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    org = await make.org()
    await save_card(org.api, emulator)
    intent_id = (await topup(org, "hooked"))["paymentIntentId"]
    base_url = make.app.base_url
    succeeded = event_body("payment_intent.succeeded", intent_id, "evt_ops_1")

    first = await deliver(http, base_url, succeeded, TEST_WEBHOOK_SECRET)
    again = await deliver(http, base_url, succeeded, TEST_WEBHOOK_SECRET)
    other = await deliver(
        http, base_url, event_body("customer.created", "cus_x"), TEST_WEBHOOK_SECRET
    )
    forged = await deliver(http, base_url, succeeded, "whsec_forged")
    metrics = await scrape(http, base_url)

    assert [r.status_code for r in (first, again, other, forged)] == [200, 200, 200, 400]
    events = "gql_billing_webhook_events_total"
    paid = {"type": "payment_intent.succeeded"}
    assert metrics.total(events, **paid, result="topup_succeeded") == 1
    assert metrics.total(events, **paid, result="duplicate") == 1
    assert metrics.total(events, type="customer.created", result="ignored") == 1
    assert metrics.total(events, type="unknown", result="invalid_signature_or_payload") == 1


async def test_each_app_counts_into_its_own_registry(
    make: Factory, settings: Settings, http: httpx.AsyncClient
) -> None:
    org = await make.org()

    async with serve(settings) as other:
        await http.post(other.graphql_url, json={"query": WALLET}, headers=org.api.headers())
        in_other = await scrape(http, other.base_url)
    in_first = await scrape(http, make.app.base_url)

    assert in_other.total(REQUESTS, operation="wallet") == 1
    assert in_first.total(REQUESTS, operation="wallet") == 0
