"""Stripe events on POST /webhooks/stripe: an event counts as processed only once acting on it
succeeded (a failed or unreadable delivery is never answered `duplicate` later), a valid event
acts once however often it comes, and a signature dated in the future is refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest

from conftest import TEST_WEBHOOK_SECRET, Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.models import WebhookEvent
from support.app_server import ServedApp
from support.cards import THREE_D_SECURE, save_card
from support.emulator import StripeEmulator
from support.stripe_proxy import FaultProxy

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename
    ... on AuthenticationRequired { clientSecret paymentIntentId }
    ... on Problem { title detail }
  }
}
"""

LEDGER = """
{ wallet { balanceCredits }
  transactions(first: 20, filter: {kinds: [GRANT]}) { edges { node { amountCredits } } } }
"""

SUCCEEDED = "payment_intent.succeeded"


def signature(body: str, *, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(TEST_WEBHOOK_SECRET.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def event(event_id: str, data_object: Any, event_type: str = SUCCEEDED) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "created": int(time.time()),
            "type": event_type,
            "data": {"object": data_object},
        }
    )


def succeeded(event_id: str, intent_id: str) -> str:
    return event(event_id, {"id": intent_id, "object": "payment_intent"})


async def deliver(
    http: httpx.AsyncClient, app: ServedApp, body: str, *, at: int | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature(body, at=at)}
    return await http.post(f"{app.base_url}/webhooks/stripe", content=body, headers=headers)


async def paid_at_stripe(org: Org, emulator: StripeEmulator) -> str:
    """A 3-D Secure top-up of 50,000 the customer authenticated at Stripe and never retried:
    only the payment_intent.succeeded event grants it. Returns the PaymentIntent's id."""
    await save_card(org.api, emulator, THREE_D_SECURE)
    data = await org.api(TOPUP, {"input": {"audCents": 50_000, "idempotencyKey": "3ds"}})
    challenge = data["topup"]
    assert challenge["__typename"] == "AuthenticationRequired", challenge
    await asyncio.to_thread(
        emulator.authenticate_payment_intent,
        challenge["paymentIntentId"],
        challenge["clientSecret"],
    )
    return str(challenge["paymentIntentId"])


async def grants(org: Org) -> tuple[int, list[int]]:
    data = await org.api(LEDGER)
    amounts = [e["node"]["amountCredits"] for e in data["transactions"]["edges"]]
    return data["wallet"]["balanceCredits"], amounts


@pytest.fixture
async def org(make: Factory) -> Org:
    return await make.org(credits=23_500)


# -- an event that fails is not swallowed ---------------------------------------------------------


@pytest.mark.parametrize(
    "data_object",
    [{"object": "payment_intent"}, {"id": 42}, ["pi_in_a_list"], "pi_as_a_string"],
    ids=["no-id", "numeric-id", "list", "string"],
)
async def test_a_signed_event_that_cannot_be_read_is_refused_on_every_delivery(
    app: ServedApp,
    org: Org,
    emulator: StripeEmulator,
    http: httpx.AsyncClient,
    data_object: Any,
) -> None:
    # given a top-up paid at Stripe, and a signed event about it whose object has no usable id
    intent_id = await paid_at_stripe(org, emulator)
    malformed = event("evt_malformed_1", data_object)

    # when Stripe delivers it, then delivers it again
    first = await deliver(http, app, malformed)
    again = await deliver(http, app, malformed)

    # then both deliveries are refused the same way: never "duplicate", nothing granted
    assert (first.status_code, first.json()) == (400, {"result": "malformed event"})
    assert (again.status_code, again.json()) == (400, {"result": "malformed event"})
    assert await grants(org) == (23_500, [])

    # and the event id was not consumed: a readable event under that id still acts
    readable = await deliver(http, app, succeeded("evt_malformed_1", intent_id))
    assert readable.status_code == 200, readable.text
    assert readable.json()["result"].endswith("succeeded")
    assert await grants(org) == (73_500, [50_000])


async def test_an_event_whose_processing_fails_is_processed_again_on_redelivery(
    app: ServedApp,
    org: Org,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    http: httpx.AsyncClient,
) -> None:
    # given a top-up paid at Stripe, and Stripe failing the next look-up of its intent
    intent_id = await paid_at_stripe(org, emulator)
    body = succeeded("evt_fails_once", intent_id)
    stripe_proxy.inject("http_500", path_contains=f"/v1/payment_intents/{intent_id}", method="GET")

    # when the event is delivered: acting on it fails, so the delivery fails
    failed = await deliver(http, app, body)
    assert failed.status_code == 502, failed.text
    assert await grants(org) == (23_500, [])

    # then Stripe's redelivery acts on it (not "duplicate"), and a third changes nothing
    redelivered = await deliver(http, app, body)
    third = await deliver(http, app, body)

    assert redelivered.status_code == 200, redelivered.text
    assert redelivered.json()["result"].endswith("succeeded")
    assert (third.status_code, third.json()) == (200, {"result": "duplicate"})
    assert await grants(org) == (73_500, [50_000])


async def test_a_valid_event_delivered_twice_at_once_is_processed_once(
    app: ServedApp, org: Org, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    # given a top-up paid at Stripe and its event
    intent_id = await paid_at_stripe(org, emulator)
    body = succeeded("evt_twice", intent_id)

    # when two deliveries of it arrive together, and one more later
    together = await asyncio.gather(*(deliver(http, app, body) for _ in range(2)))
    later = await deliver(http, app, body)

    # then one acted; the other was a duplicate, or told to come back (Stripe retries a 409)
    results = [(r.status_code, r.json()["result"]) for r in together]
    acted = [r for r in results if r[1].endswith("succeeded")]
    [other] = [r for r in results if r not in acted]
    assert len(acted) == 1 and acted[0][0] == 200, results
    assert other in [(200, "duplicate"), (409, "in progress")], results
    assert (later.status_code, later.json()) == (200, {"result": "duplicate"})
    assert await grants(org) == (73_500, [50_000])


async def test_a_delivery_that_died_mid_way_is_taken_over_after_the_lease(
    app: ServedApp, org: Org, emulator: StripeEmulator, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    # given a delivery that claimed the event and then died (the process was killed)
    intent_id = await paid_at_stripe(org, emulator)
    body = succeeded("evt_orphaned", intent_id)
    async with app.billing.db.write() as session:
        session.add(
            WebhookEvent(
                event_id="evt_orphaned", type=SUCCEEDED, result="received", received_at=clock.now()
            )
        )

    # when Stripe redelivers within the claim's lease: come back later
    early = await deliver(http, app, body)
    assert (early.status_code, early.json()) == (409, {"result": "in progress"})
    assert await grants(org) == (23_500, [])

    # and once the lease has run out, the redelivery takes the claim over and acts
    clock.advance(timedelta(seconds=app.billing.settings.idempotency_lease_seconds + 1))
    late = await deliver(http, app, body)
    assert late.status_code == 200, late.text
    assert late.json()["result"].endswith("succeeded")
    assert await grants(org) == (73_500, [50_000])


# -- timestamps -----------------------------------------------------------------------------------


async def test_a_signature_dated_beyond_the_tolerance_in_the_future_is_refused(
    app: ServedApp, org: Org, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    # given a genuine event for a top-up paid at Stripe
    intent_id = await paid_at_stripe(org, emulator)
    body = succeeded("evt_future", intent_id)

    # when it comes signed an hour ahead (and just past the five-minute tolerance)
    hour_ahead = await deliver(http, app, body, at=int(time.time()) + 3600)
    just_past = await deliver(http, app, body, at=int(time.time()) + 330)

    # then it is refused, changes nothing, and does not use up the event id
    assert [hour_ahead.status_code, just_past.status_code] == [400, 400]
    assert await grants(org) == (23_500, [])

    # while a clock a minute ahead of ours (within the tolerance) is accepted
    skewed = await deliver(http, app, body, at=int(time.time()) + 60)
    assert skewed.status_code == 200, skewed.text
    assert await grants(org) == (73_500, [50_000])
