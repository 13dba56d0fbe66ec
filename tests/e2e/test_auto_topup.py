"""Auto top-up, Stripe webhooks and reconciliation over HTTP against the real app, the Stripe
SDK, the emulator and the fault proxy, with the worker driven tick by tick on a fake clock
(3-D Secure, auto top-up, the ledger invariants, Stripe webhooks)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from conftest import TEST_SECRET_KEY, TEST_WEBHOOK_SECRET, Factory, Org
from gql_billing.billing.organizations import grant_credits
from gql_billing.clock import FakeClock
from gql_billing.graphql.ids import pk_of
from gql_billing.models import Plan, WebhookEvent
from gql_billing.reconcile import reconcile
from gql_billing.worker import TickReport, Worker
from support.api import GraphQLClient
from support.app_server import ServedApp
from support.cards import DECLINED_ON_CHARGE, THREE_D_SECURE, VISA, save_card
from support.emulator import StripeEmulator
from support.invariants import assert_invariants
from support.stripe_proxy import FaultProxy

# A card that asks for 3-D Secure and is declined once the customer has authenticated.
THREE_D_SECURE_THEN_DECLINED = "4000008260003178"
CLI = str(Path(sys.executable).with_name("gql-billing"))

AUTO_FIELDS = """
fragment A on AutoTopupSettings {
  enabled thresholdCredits topupAmountCredits dailyChargeCapAud chargedTodayAudCents
  disabledReason
  lastAttempt {
    id status trigger audCents creditsGranted paymentIntentId clientSecret failureReason
    notBefore createdAt
  }
}
"""

SET_AUTO_TOPUP = (
    """
mutation SetAutoTopup($input: SetAutoTopupInput!) {
  setAutoTopup(input: $input) {
    __typename
    ... on AutoTopupUpdated { autoTopup { ...A } wallet { balanceCredits availableCredits } }
    ... on InvalidInput { field }
    ... on Problem { title httpStatus: status detail }
  }
}
"""
    + AUTO_FIELDS
)

WALLET = (
    "{ wallet { balanceCredits reservedCredits availableCredits autoTopup { ...A } } }"
    + AUTO_FIELDS
)

GRANTS = """
{ transactions(first: 100, filter: {kinds: [GRANT]}) { edges { node {
    kind amountCredits balanceDeltaCredits topup { id trigger status paymentIntentId } } } } }
"""

LEDGER_KINDS = "{ transactions(first: 100) { edges { node { kind amountCredits } } } }"

TOPUPS = """
{ topups(first: 20) { edges { node {
  id status trigger audCents creditsGranted paymentIntentId clientSecret failureReason
  notBefore completedAt } } } }
"""

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename
    ... on TopupSuccess {
      topupAttemptId paymentIntentId status creditsGranted bonusCredits newBalance
    }
    ... on AuthenticationRequired {
      clientSecret paymentIntentId paymentMethodId requiresAction challengeAttemptId: topupAttemptId
    }
    ... on CardDeclined { declineCode }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

RESUME = """
mutation Resume($id: ID!) {
  resumeTopup(input: {topupAttemptId: $id}) {
    __typename
    ... on TopupSuccess {
      topupAttemptId paymentIntentId status creditsGranted bonusCredits newBalance
    }
    ... on AuthenticationRequired {
      clientSecret paymentIntentId paymentMethodId requiresAction challengeAttemptId: topupAttemptId
    }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id status amountCredits } }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

CAPTURE = """
mutation Capture($id: ID!) {
  captureReservation(input: {reservationId: $id}) {
    __typename
    ... on ReservationCaptured { reservation { status capturedCredits } }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

# The seed's example: one auto top-up of A$500 a day whenever fewer than 5,000 credits remain.
SEED = {"thresholdCredits": 5_000, "topupAmountCredits": 50_000, "dailyChargeCapAud": 500}


# -- helpers --------------------------------------------------------------------------------------


async def set_auto_topup(org: Org, **input: Any) -> dict[str, Any]:
    data = await org.api(SET_AUTO_TOPUP, {"input": input})
    return data["setAutoTopup"]  # type: ignore[no-any-return]


async def enable(org: Org, **settings: int) -> dict[str, Any]:
    result = await set_auto_topup(org, enabled=True, **(settings or SEED))
    assert result["__typename"] == "AutoTopupUpdated", result
    return result


async def wallet_of(org: Org) -> dict[str, Any]:
    return (await org.api(WALLET))["wallet"]  # type: ignore[no-any-return]


async def auto_of(org: Org) -> dict[str, Any]:
    return (await wallet_of(org))["autoTopup"]  # type: ignore[no-any-return]


async def grants_of(org: Org) -> list[dict[str, Any]]:
    return [edge["node"] for edge in (await org.api(GRANTS))["transactions"]["edges"]]


async def ledger_kinds(org: Org) -> list[str]:
    return [edge["node"]["kind"] for edge in (await org.api(LEDGER_KINDS))["transactions"]["edges"]]


async def topups_of(org: Org) -> list[dict[str, Any]]:
    return [edge["node"] for edge in (await org.api(TOPUPS))["topups"]["edges"]]


async def topup(org: Org, **input: Any) -> dict[str, Any]:
    return (await org.api(TOPUP, {"input": input}))["topup"]  # type: ignore[no-any-return]


async def resume(org: Org, attempt_id: str) -> dict[str, Any]:
    return (await org.api(RESUME, {"id": attempt_id}))["resumeTopup"]  # type: ignore[no-any-return]


async def intents(emulator: StripeEmulator) -> list[dict[str, Any]]:
    return await asyncio.to_thread(emulator.list_payment_intents)


async def authenticate(emulator: StripeEmulator, challenge: dict[str, Any]) -> None:
    await asyncio.to_thread(
        emulator.authenticate_payment_intent,
        challenge["paymentIntentId"],
        challenge["clientSecret"],
    )


async def eventually(condition: Callable[[], Awaitable[bool]], seconds: float = 5) -> None:
    """Poll until `condition()` holds; fail after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {seconds} s: {condition.__name__}")


async def tick(app: ServedApp, times: int = 1) -> list[TickReport]:
    worker = Worker(app.billing)
    return [await worker.tick() for _ in range(times)]


async def service_client(make: Factory) -> GraphQLClient:
    return make.client(await make.token(None, "billing:spend"))


async def reserve(service: GraphQLClient, org: Org, amount: int, key: str) -> dict[str, Any]:
    spend = {"organizationId": org.id, "amountCredits": amount, "reference": key}
    data = await service(RESERVE, {"input": {**spend, "idempotencyKey": key}})
    return data["reserveCredits"]  # type: ignore[no-any-return]


def signature(body: str, *, secret: str = TEST_WEBHOOK_SECRET, at: int | None = None) -> str:
    """A `Stripe-Signature` header as Stripe computes it over the exact raw body."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def event_body(event_id: str, event_type: str, object_id: str, kind: str = "payment_intent") -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2017-08-15",
            "created": int(time.time()),
            "type": event_type,
            "data": {"object": {"id": object_id, "object": kind}},
        }
    )


async def deliver(
    http: httpx.AsyncClient, app: ServedApp, body: str, header: str | None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return await http.post(f"{app.base_url}/webhooks/stripe", content=body, headers=headers)


async def webhook_result(app: ServedApp, event_id: str) -> str | None:
    async with app.billing.db.read() as session:
        query = select(col(WebhookEvent.result)).where(col(WebhookEvent.event_id) == event_id)
        return (await session.execute(query)).scalar_one_or_none()


async def run_cli(app: ServedApp, proxy: FaultProxy, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "GQL_BILLING_DATABASE_URL": app.settings.database_url,
        "STRIPE_SECRET_KEY": TEST_SECRET_KEY,
        "STRIPE_API_BASE": proxy.base_url,
    }
    done = await asyncio.to_thread(
        subprocess.run, [CLI, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# -- 1. setAutoTopup: validation, stored values, the settings on the wallet -----------------------


@pytest.mark.parametrize(
    ("input", "field"),
    [
        ({"enabled": False, "thresholdCredits": -1}, "thresholdCredits"),
        ({"enabled": True, **SEED, "thresholdCredits": -1}, "thresholdCredits"),
        ({"enabled": False, "topupAmountCredits": 9_999}, "topupAmountCredits"),
        ({"enabled": True, **SEED, "topupAmountCredits": 9_999}, "topupAmountCredits"),
        # A$499 a day could never pay for one A$500 top-up.
        ({"enabled": True, **SEED, "dailyChargeCapAud": 499}, "dailyChargeCapAud"),
        (
            {"enabled": True, "topupAmountCredits": 50_000, "dailyChargeCapAud": 500},
            "thresholdCredits",
        ),
        (
            {"enabled": True, "thresholdCredits": 5_000, "dailyChargeCapAud": 500},
            "topupAmountCredits",
        ),
        (
            {"enabled": True, "thresholdCredits": 5_000, "topupAmountCredits": 50_000},
            "dailyChargeCapAud",
        ),
    ],
)
async def test_invalid_settings_name_the_field_and_store_nothing(
    make: Factory, emulator: StripeEmulator, input: dict[str, Any], field: str
) -> None:
    # given an organization with a default card and auto top-up never configured
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    # when it asks for settings that break a rule
    result = await set_auto_topup(org, **input)

    # then InvalidInput names the field and nothing is stored
    assert result["__typename"] == "InvalidInput", result
    assert (result["field"], result["httpStatus"]) == (field, 422)
    assert await auto_of(org) == {
        "enabled": False,
        "thresholdCredits": 0,
        "topupAmountCredits": 0,
        "dailyChargeCapAud": 0,
        "chargedTodayAudCents": 0,
        "disabledReason": None,
        "lastAttempt": None,
    }


async def test_the_smallest_valid_settings_are_accepted(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    # a zero floor, the minimum top-up, and a cap of exactly one top-up a day
    result = await set_auto_topup(
        org, enabled=True, thresholdCredits=0, topupAmountCredits=10_000, dailyChargeCapAud=100
    )

    assert result["__typename"] == "AutoTopupUpdated", result
    settings = result["autoTopup"]
    assert (settings["thresholdCredits"], settings["topupAmountCredits"]) == (0, 10_000)
    assert settings["dailyChargeCapAud"] == 100


async def test_seed_example_is_stored_and_absent_or_null_fields_keep_their_values(
    make: Factory, emulator: StripeEmulator
) -> None:
    # given an organization above the floor with a default card
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)
    before = await auto_of(org)
    assert (before["enabled"], before["thresholdCredits"], before["lastAttempt"]) == (
        False,
        0,
        None,
    )

    # when it switches on the seed's example
    result = await set_auto_topup(org, enabled=True, **SEED)

    # then the settings come back, and the wallet shows them (no top-up needed at 23,500)
    expected = {
        "enabled": True,
        "thresholdCredits": 5_000,
        "topupAmountCredits": 50_000,
        "dailyChargeCapAud": 500,
        "chargedTodayAudCents": 0,
        "disabledReason": None,
        "lastAttempt": None,
    }
    assert result["__typename"] == "AutoTopupUpdated", result
    assert result["autoTopup"] == expected
    assert result["wallet"] == {"balanceCredits": 23_500, "availableCredits": 23_500}
    assert await auto_of(org) == expected

    # when it switches off giving no values: they are kept
    off = await set_auto_topup(org, enabled=False)
    assert off["autoTopup"] == {**expected, "enabled": False}

    # when it switches on again with explicit nulls and one new value: only that one changes
    on = await set_auto_topup(
        org,
        enabled=True,
        thresholdCredits=None,
        topupAmountCredits=40_000,
        dailyChargeCapAud=None,
    )
    assert on["autoTopup"] == {**expected, "topupAmountCredits": 40_000}

    # a new amount is checked against the stored cap (A$500 a day < A$600): refused, unchanged
    too_big = await set_auto_topup(org, enabled=True, topupAmountCredits=60_000)
    assert (too_big["__typename"], too_big["field"]) == ("InvalidInput", "dailyChargeCapAud")
    assert await auto_of(org) == {**expected, "topupAmountCredits": 40_000}
    assert await intents(emulator) == []


async def test_enabling_needs_a_default_card_but_values_can_be_stored_before(
    make: Factory, emulator: StripeEmulator
) -> None:
    # given an organization without a card
    org = await make.org(credits=23_500)

    # when it enables auto top-up, then stores the values switched off
    refused = await set_auto_topup(org, enabled=True, **SEED)
    stored = await set_auto_topup(org, enabled=False, **SEED)

    # then enabling needs a payment method; storing does not
    assert (refused["__typename"], refused["httpStatus"]) == ("PaymentMethodRequired", 402)
    assert stored["__typename"] == "AutoTopupUpdated"
    assert stored["autoTopup"]["enabled"] is False

    # and once a card is saved, `enabled: true` alone uses the stored values
    await save_card(org.api, emulator)
    enabled = await set_auto_topup(org, enabled=True)
    assert enabled["__typename"] == "AutoTopupUpdated", enabled
    assert enabled["autoTopup"]["enabled"] is True
    assert enabled["autoTopup"]["topupAmountCredits"] == 50_000


async def test_enterprise_organizations_cannot_enable_auto_topup(make: Factory) -> None:
    org = await make.org(plan=Plan.ENTERPRISE)

    result = await set_auto_topup(org, enabled=True, **SEED)

    assert (result["__typename"], result["httpStatus"]) == ("InvalidState", 409)
    assert (await auto_of(org))["enabled"] is False


async def test_set_auto_topup_needs_billing_write(make: Factory, emulator: StripeEmulator) -> None:
    writer = await make.org(credits=23_500)
    await save_card(writer.api, emulator)
    reader = make.client(await make.token(writer.pk, "billing:read"))

    response = await reader.post(SET_AUTO_TOPUP, {"input": {"enabled": True, **SEED}})

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert body["errors"][0]["path"] == ["setAutoTopup"]
    assert (await auto_of(writer))["enabled"] is False


# -- 2. enabling below the threshold --------------------------------------------------------------


async def test_enabling_below_the_threshold_tops_up_on_the_next_tick(
    app: ServedApp, make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    # given an organization with 1,000 credits and a card
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)

    # when it enables the seed's example: a top-up is queued to run now, nothing is charged yet
    enabled = await enable(org)
    queued = enabled["autoTopup"]["lastAttempt"]
    assert (queued["trigger"], queued["status"], queued["audCents"]) == (
        "AUTO",
        "QUEUED",
        50_000,
    )
    assert (queued["paymentIntentId"], queued["notBefore"]) == (None, queued["createdAt"])
    assert await intents(emulator) == []

    # and the worker ticks
    [report] = await tick(app)

    # then one auto top-up charged A$500 and granted 50,000 credits
    assert report.auto_topups_run == 1
    wallet = await wallet_of(org)
    assert (wallet["balanceCredits"], wallet["availableCredits"]) == (51_000, 51_000)
    settings = wallet["autoTopup"]
    assert settings["chargedTodayAudCents"] == 50_000
    last = settings["lastAttempt"]
    assert (last["id"], last["status"], last["trigger"]) == (queued["id"], "SUCCEEDED", "AUTO")
    assert last["notBefore"] is None
    assert (last["audCents"], last["creditsGranted"], last["clientSecret"]) == (
        50_000,
        50_000,
        None,
    )
    [intent] = await intents(emulator)
    assert intent["id"] == last["paymentIntentId"]
    assert (intent["amount"], intent["currency"], intent["status"]) == (50_000, "aud", "succeeded")
    assert intent["metadata"]["topup_attempt_id"] == str(pk_of(last["id"], "TopupAttempt"))
    [grant] = await grants_of(org)
    assert (grant["amountCredits"], grant["balanceDeltaCredits"]) == (50_000, 50_000)
    assert grant["topup"] == {
        "id": last["id"],
        "trigger": "AUTO",
        "status": "SUCCEEDED",
        "paymentIntentId": intent["id"],
    }
    assert await ledger_kinds(org) == ["GRANT", "ADJUSTMENT"]

    # and later ticks above the floor charge nothing more
    assert [r.auto_topups_run for r in await tick(app, 3)] == [0, 0, 0]
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    await assert_invariants(app.billing.db)


# -- 3. many spends cross the threshold: one charge -----------------------------------------------


async def test_two_hundred_concurrent_spends_queue_exactly_one_auto_topup(
    app: ServedApp, make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    # given 250,000 credits, a card, and auto top-up of 50,000 below 100,000 (A$5,000 a day)
    org = await make.org(credits=250_000)
    await save_card(org.api, emulator)
    await enable(org, thresholdCredits=100_000, topupAmountCredits=50_000, dailyChargeCapAud=5_000)
    service = await service_client(make)

    # when an internal service reserves 1,000 credits 200 times at once
    results = await asyncio.gather(*(reserve(service, org, 1_000, f"job-{i}") for i in range(200)))

    # then every spend is held and exactly one auto top-up waits in the queue
    assert {r["__typename"] for r in results} == {"ReservationCreated"}
    waiting = await topups_of(org)
    assert [(t["trigger"], t["status"]) for t in waiting] == [("AUTO", "QUEUED")]
    assert await intents(emulator) == []

    # when the worker ticks a few times
    reports = await tick(app, 4)

    # then one charge, one intent, one grant of 50,000
    assert sum(r.auto_topups_run for r in reports) == 1
    [attempt] = await topups_of(org)
    assert (attempt["trigger"], attempt["status"], attempt["audCents"]) == (
        "AUTO",
        "SUCCEEDED",
        50_000,
    )
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    [intent] = await intents(emulator)
    assert (intent["id"], intent["amount"]) == (attempt["paymentIntentId"], 50_000)
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    wallet = await wallet_of(org)
    assert (wallet["balanceCredits"], wallet["reservedCredits"], wallet["availableCredits"]) == (
        300_000,
        200_000,
        100_000,
    )
    assert wallet["autoTopup"]["chargedTodayAudCents"] == 50_000
    await assert_invariants(app.billing.db)


# -- 4. the daily cap -----------------------------------------------------------------------------


async def test_daily_cap_defers_the_second_top_up_to_the_next_utc_day(
    app: ServedApp, make: Factory, emulator: StripeEmulator, clock: FakeClock
) -> None:
    # given the seed's example (A$500 a day) and a first auto top-up on 20 November
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    await enable(org)
    await tick(app)
    assert (await wallet_of(org))["balanceCredits"] == 51_000
    assert len(await intents(emulator)) == 1

    # when an order spends 47,000 credits the same day, leaving 4,000 (below 5,000)
    service = await service_client(make)
    held = await reserve(service, org, 47_000, "order-47k")
    assert held["__typename"] == "ReservationCreated", held
    captured = (await service(CAPTURE, {"id": held["reservation"]["id"]}))["captureReservation"]
    assert captured["__typename"] == "ReservationCaptured", captured

    # then ticks during the rest of the day charge nothing: A$500 already charged today
    await tick(app, 3)
    clock.advance(timedelta(hours=14, minutes=29))  # 23:59 UTC
    await tick(app)
    assert len(await intents(emulator)) == 1
    wallet = await wallet_of(org)
    assert wallet["balanceCredits"] == 4_000
    assert wallet["autoTopup"]["chargedTodayAudCents"] == 50_000
    # and the waiting top-up says so: queued until the next UTC day, not charging
    waiting = wallet["autoTopup"]["lastAttempt"]
    assert (waiting["status"], waiting["paymentIntentId"]) == ("QUEUED", None)
    assert datetime.fromisoformat(waiting["notBefore"]) == datetime(2026, 11, 21, tzinfo=UTC)

    # when the UTC day turns
    clock.advance(timedelta(minutes=2))  # 00:01 UTC, 21 November
    assert (await auto_of(org))["chargedTodayAudCents"] == 0
    [report] = await tick(app)

    # then the waiting top-up is charged: a second intent and a second grant
    assert report.auto_topups_run == 1
    assert len(await intents(emulator)) == 2
    wallet = await wallet_of(org)
    assert wallet["balanceCredits"] == 54_000
    assert wallet["autoTopup"]["chargedTodayAudCents"] == 50_000
    assert wallet["autoTopup"]["lastAttempt"]["id"] == waiting["id"]
    assert wallet["autoTopup"]["lastAttempt"]["status"] == "SUCCEEDED"
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000, 50_000]
    await assert_invariants(app.billing.db)


async def test_daily_cap_also_holds_after_a_debit_adjustment(
    app: ServedApp, make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    await enable(org)
    await tick(app)

    # an operator's correction takes the wallet below the floor again
    await grant_credits(
        app.billing.db, organization_id=org.pk, amount_credits=-50_000, reason="fix"
    )
    await tick(app, 2)

    assert len(await intents(emulator)) == 1
    wallet = await wallet_of(org)
    assert wallet["balanceCredits"] == 1_000
    assert wallet["autoTopup"]["chargedTodayAudCents"] == 50_000
    await assert_invariants(app.billing.db)


# -- 5. a card that always declines ---------------------------------------------------------------


async def test_declines_back_off_an_hour_and_three_switch_auto_topup_off(
    app: ServedApp,
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    # given auto top-up on a card that is declined whenever it is charged
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    await enable(org, thresholdCredits=5_000, topupAmountCredits=10_000, dailyChargeCapAud=500)

    # when the worker ticks every 10 minutes for 48 hours
    worker = Worker(app.billing)
    charged_at: list[int] = []
    for minute in range(10, 48 * 60 + 1, 10):
        clock.advance(timedelta(minutes=10))
        if (await worker.tick()).auto_topups_run:
            charged_at.append(minute)

    # then it tried three times, an hour apart, and then switched itself off
    assert len(charged_at) == 3, charged_at
    assert all(b - a >= 60 for a, b in itertools.pairwise(charged_at)), charged_at
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 3
    settings = await auto_of(org)
    assert settings["enabled"] is False
    assert settings["disabledReason"]
    assert settings["chargedTodayAudCents"] == 0
    assert (settings["lastAttempt"]["status"], settings["lastAttempt"]["trigger"]) == (
        "FAILED",
        "AUTO",
    )
    attempts = await topups_of(org)
    assert [(t["trigger"], t["status"]) for t in attempts] == [("AUTO", "FAILED")] * 3
    assert all(t["failureReason"] and t["completedAt"] for t in attempts)
    assert await ledger_kinds(org) == ["ADJUSTMENT"]
    assert (await wallet_of(org))["balanceCredits"] == 1_000
    await assert_invariants(app.billing.db)


async def test_after_a_decline_the_next_auto_topup_waits_queued_for_the_back_off(
    app: ServedApp,
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    # given an auto top-up declined at 09:30 UTC
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    await enable(org, thresholdCredits=5_000, topupAmountCredits=10_000, dailyChargeCapAud=500)
    await tick(app)
    declined_at = clock.now()

    # when the worker ticks during the hour after it
    clock.advance(timedelta(minutes=10))
    await tick(app)
    clock.advance(timedelta(minutes=40))
    await tick(app)

    # then the next attempt waits, queued until the back-off ends, and nothing is charged
    waiting, failed = await topups_of(org)
    assert (failed["status"], waiting["status"], waiting["paymentIntentId"]) == (
        "FAILED",
        "QUEUED",
        None,
    )
    assert datetime.fromisoformat(waiting["notBefore"]) == declined_at + timedelta(hours=1)
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1

    # when the customer switches to a good card and the back-off ends
    await save_card(org.api, emulator, VISA)
    clock.advance(timedelta(minutes=10))
    [report] = await tick(app)

    # then that attempt is charged, on the card that is the default now
    assert report.auto_topups_run == 1
    paid, _ = await topups_of(org)
    assert (paid["id"], paid["status"], paid["notBefore"]) == (waiting["id"], "SUCCEEDED", None)
    assert [g["amountCredits"] for g in await grants_of(org)] == [10_000]
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 2
    await assert_invariants(app.billing.db)


# -- 6. 3-D Secure on an auto top-up --------------------------------------------------------------


async def test_auto_topup_needing_3ds_waits_for_the_customer_then_resumes_once(
    app: ServedApp,
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    # given auto top-up on a card that needs 3-D Secure
    org = await make.org(credits=1_000)
    pm = await save_card(org.api, emulator, THREE_D_SECURE)
    await enable(org)

    # when the worker charges it
    await tick(app)

    # then the attempt waits for the customer, with the client secret exposed
    settings = await auto_of(org)
    pending = settings["lastAttempt"]
    assert (pending["status"], pending["trigger"]) == ("REQUIRES_ACTION", "AUTO")
    assert pending["clientSecret"].startswith(pending["paymentIntentId"])
    assert settings["chargedTodayAudCents"] == 50_000  # in flight counts against the cap
    [listed] = await topups_of(org)
    assert listed["clientSecret"] == pending["clientSecret"]

    # and later ticks, hours later, do not retry it
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        await tick(app)
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    assert len(await intents(emulator)) == 1

    # when the customer resumes before authenticating: asked again, same intent
    asked = await resume(org, pending["id"])
    assert (asked["__typename"], asked["httpStatus"], asked["requiresAction"]) == (
        "AuthenticationRequired",
        402,
        True,
    )
    assert (asked["paymentIntentId"], asked["paymentMethodId"]) == (pending["paymentIntentId"], pm)
    assert asked["clientSecret"] == pending["clientSecret"]
    assert asked["challengeAttemptId"] == pending["id"]

    # when the customer completes the challenge and resumes
    await authenticate(emulator, asked)
    done = await resume(org, pending["id"])
    again = await resume(org, pending["id"])

    # then the credits are granted once and the success replays
    assert done["__typename"] == "TopupSuccess", done
    assert (done["status"], done["creditsGranted"], done["newBalance"]) == (
        "succeeded",
        50_000,
        51_000,
    )
    assert done["paymentIntentId"] == pending["paymentIntentId"]
    assert again == done
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    finished = (await auto_of(org))["lastAttempt"]
    assert (finished["status"], finished["clientSecret"]) == ("SUCCEEDED", None)
    await tick(app, 2)
    assert len(await intents(emulator)) == 1
    await assert_invariants(app.billing.db)


# -- 7. a worker that dies between charging and granting ------------------------------------------


async def test_worker_timing_out_after_the_charge_grants_once_after_the_lease(
    app: ServedApp,
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    # given a queued auto top-up
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    await enable(org)

    # when Stripe charges but the worker never hears back
    stripe_proxy.inject("timeout_after_forward", path_contains="/v1/payment_intents")
    [report] = await tick(app)

    # then the charge exists at Stripe, the attempt stays PROCESSING, nothing is granted
    assert report.auto_topups_run == 1
    [intent] = await intents(emulator)
    assert intent["status"] == "succeeded"
    stuck = (await auto_of(org))["lastAttempt"]
    assert (stuck["status"], stuck["paymentIntentId"]) == ("PROCESSING", None)
    assert await grants_of(org) == []

    # and inside the lease no other worker touches it
    await tick(app)
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1

    # when a new worker runs after the lease
    clock.advance(timedelta(seconds=app.billing.settings.idempotency_lease_seconds + 1))
    [report] = await tick(app)

    # then it finds the same charge (same Stripe key) and grants exactly once
    assert report.auto_topups_run == 1
    keys = {r.idempotency_key for r in stripe_proxy.requests if r.path == "/v1/payment_intents"}
    assert len(keys) == 1 and None not in keys, keys
    assert len(await intents(emulator)) == 1
    done = (await auto_of(org))["lastAttempt"]
    assert (done["id"], done["status"], done["paymentIntentId"]) == (
        stuck["id"],
        "SUCCEEDED",
        intent["id"],
    )
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    assert (await wallet_of(org))["balanceCredits"] == 51_000
    await tick(app, 2)
    assert len(await grants_of(org)) == 1
    await assert_invariants(app.billing.db)


async def test_worker_cancelled_mid_charge_grants_once_after_the_lease(
    app: ServedApp,
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    await enable(org)

    # the worker process dies while its charge request is on the wire (Stripe still acts)
    stripe_proxy.inject("slow", path_contains="/v1/payment_intents")
    task = asyncio.create_task(Worker(app.billing).tick())

    async def charge_on_the_wire() -> bool:
        return stripe_proxy.count("POST", "/v1/payment_intents") == 1

    async def charged_at_stripe() -> bool:
        return len(await intents(emulator)) == 1

    await eventually(charge_on_the_wire)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await eventually(charged_at_stripe)
    await asyncio.sleep(0.2)  # the proxy stores Stripe's answer for the key
    assert await grants_of(org) == []

    clock.advance(timedelta(seconds=app.billing.settings.idempotency_lease_seconds + 1))
    await tick(app, 2)

    assert len(await intents(emulator)) == 1
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    [attempt] = await topups_of(org)
    assert (attempt["trigger"], attempt["status"]) == ("AUTO", "SUCCEEDED")
    await assert_invariants(app.billing.db)


# -- 8. webhooks and the client's retry grant through one path ------------------------------------


async def test_3ds_webhook_grants_before_the_retry_and_duplicates_change_nothing(
    app: ServedApp, make: Factory, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    # given the emulator delivers its events to this app
    url = f"{app.base_url}/webhooks/stripe"
    await asyncio.to_thread(emulator.register_webhook, "test", url, TEST_WEBHOOK_SECRET)
    try:
        org = await make.org(credits=23_500)
        await save_card(org.api, emulator, THREE_D_SECURE)
        challenge = await topup(org, audCents=50_000, idempotencyKey="3ds-hook")
        assert challenge["__typename"] == "AuthenticationRequired", challenge

        # when the customer authenticates, and never retries at first
        await authenticate(emulator, challenge)

        # then the payment_intent.succeeded webhook (about a second later) grants
        async def granted() -> bool:
            return bool((await wallet_of(org))["balanceCredits"] > 23_500)

        await eventually(granted)
    finally:
        # stop deliveries to this app (registrations outlive the test's emulator reset)
        await asyncio.to_thread(emulator.register_webhook, "test", url, TEST_WEBHOOK_SECRET, [])
    assert (await wallet_of(org))["balanceCredits"] == 73_500
    [attempt] = await topups_of(org)
    assert (attempt["id"], attempt["status"]) == (challenge["challengeAttemptId"], "SUCCEEDED")
    events = await asyncio.to_thread(
        emulator._call, "GET", "/v1/events", params={"type": "payment_intent.succeeded"}
    )
    [event] = [
        e for e in events["data"] if e["data"]["object"]["id"] == challenge["paymentIntentId"]
    ]
    assert (
        await webhook_result(app, event["id"])
    ) == f"top-up {pk_of(attempt['id'], 'TopupAttempt')} succeeded"

    # when the same event is delivered again
    body = json.dumps(event)
    redelivered = await deliver(http, app, body, signature(body))

    # then it is acknowledged and changes nothing
    assert redelivered.status_code == 200
    assert redelivered.json() == {"result": "duplicate"}
    assert (await wallet_of(org))["balanceCredits"] == 73_500

    # when the client finally retries with its key: the webhook's success is replayed
    retried = await topup(org, audCents=50_000, idempotencyKey="3ds-hook")
    assert retried["__typename"] == "TopupSuccess", retried
    assert (retried["paymentIntentId"], retried["creditsGranted"], retried["newBalance"]) == (
        challenge["paymentIntentId"],
        50_000,
        73_500,
    )
    assert retried["topupAttemptId"] == challenge["challengeAttemptId"]
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    assert len(await intents(emulator)) == 1
    await assert_invariants(app.billing.db)


# -- 9. webhook security and the events that change nothing ---------------------------------------


async def test_webhooks_refuse_forged_and_stale_events_and_ignore_foreign_ones(
    app: ServedApp, make: Factory, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    # given a 3-D Secure top-up the customer has authenticated at Stripe but not retried
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator, THREE_D_SECURE)
    challenge = await topup(org, audCents=50_000, idempotencyKey="3ds-sec")
    await authenticate(emulator, challenge)
    pi = challenge["paymentIntentId"]
    body = event_body("evt_sec_1", "payment_intent.succeeded", pi)

    async def unchanged() -> None:
        assert (await wallet_of(org))["balanceCredits"] == 23_500
        assert [t["status"] for t in await topups_of(org)] == ["REQUIRES_ACTION"]

    # a forged signature, a tampered body, no signature: 400, nothing happens
    forged = await deliver(http, app, body, signature(body, secret="whsec_forged"))
    tampered = await deliver(http, app, body.replace("evt_sec_1", "evt_sec_2"), signature(body))
    unsigned = await deliver(http, app, body, None)
    assert [r.status_code for r in (forged, tampered, unsigned)] == [400, 400, 400]
    await unchanged()

    # a correctly signed event replayed ten minutes later: outside the tolerance, 400
    stale = await deliver(http, app, body, signature(body, at=int(time.time()) - 600))
    assert stale.status_code == 400
    await unchanged()

    # a signed event of a type the app does not handle: 200, nothing happens
    other = event_body("evt_other_1", "customer.created", "cus_someone", "customer")
    ignored = await deliver(http, app, other, signature(other))
    assert (ignored.status_code, ignored.json()) == (200, {"result": "ignored"})
    await unchanged()

    # a signed event for a PaymentIntent that is not one of ours (paid at Stripe): 200
    card = await asyncio.to_thread(emulator.create_card_payment_method, VISA)
    foreign = await asyncio.to_thread(
        emulator._call,
        "POST",
        "/v1/payment_intents",
        data={
            "amount": "10000",
            "currency": "aud",
            "payment_method": card,
            "payment_method_types[]": "card",
            "confirm": "true",
        },
    )
    assert foreign["status"] == "succeeded"
    stranger = event_body("evt_foreign_1", "payment_intent.succeeded", foreign["id"])
    not_ours = await deliver(http, app, stranger, signature(stranger))
    assert (not_ours.status_code, not_ours.json()) == (200, {"result": "no matching top-up"})
    await unchanged()

    # the genuine event grants once; its redelivery changes nothing
    genuine = await deliver(http, app, body, signature(body))
    again = await deliver(http, app, body, signature(body))
    assert genuine.status_code == again.status_code == 200
    assert again.json() == {"result": "duplicate"}
    assert (await wallet_of(org))["balanceCredits"] == 73_500
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    await assert_invariants(app.billing.db)


async def test_payment_failed_webhook_marks_or_keeps_the_topup_failed(
    app: ServedApp, make: Factory, emulator: StripeEmulator, http: httpx.AsyncClient
) -> None:
    # given a top-up declined at once, and a 3-D Secure one declined after authentication
    declined = await make.org(credits=500, name="Declined")
    await save_card(declined.api, emulator, DECLINED_ON_CHARGE)
    first = await topup(declined, audCents=10_000, idempotencyKey="dec")
    assert first["__typename"] == "CardDeclined", first
    [declined_intent] = await intents(emulator)

    late = await make.org(credits=500, name="Declined after 3DS")
    await save_card(late.api, emulator, THREE_D_SECURE_THEN_DECLINED)
    challenge = await topup(late, audCents=10_000, idempotencyKey="3ds-dec")
    assert challenge["__typename"] == "AuthenticationRequired", challenge
    with contextlib.suppress(Exception):  # the emulator answers the declined charge with 402
        await authenticate(emulator, challenge)

    # when Stripe reports both failures
    for n, intent_id in enumerate([declined_intent["id"], challenge["paymentIntentId"]]):
        body = event_body(f"evt_failed_{n}", "payment_intent.payment_failed", intent_id)
        response = await deliver(http, app, body, signature(body))
        assert response.status_code == 200, response.text

    # then the declined one stays FAILED, the authenticated one is now FAILED; no credits
    [kept] = await topups_of(declined)
    assert kept["status"] == "FAILED"
    [marked] = await topups_of(late)
    assert (marked["status"], marked["clientSecret"]) == ("FAILED", None)
    assert marked["failureReason"]
    retried = await topup(late, audCents=10_000, idempotencyKey="3ds-dec")
    assert (retried["__typename"], retried["httpStatus"]) == ("CardDeclined", 402)
    assert await grants_of(declined) == [] and await grants_of(late) == []
    assert (await wallet_of(late))["balanceCredits"] == 500
    await assert_invariants(app.billing.db)


async def test_signed_event_for_an_intent_stripe_does_not_have_is_acknowledged(
    app: ServedApp, make: Factory, http: httpx.AsyncClient
) -> None:
    org = await make.org(credits=1_000)
    body = event_body("evt_ghost_1", "payment_intent.succeeded", "pi_does_not_exist")

    response = await deliver(http, app, body, signature(body))

    assert (await wallet_of(org))["balanceCredits"] == 1_000
    assert response.status_code == 200


# -- 10. reconciliation ---------------------------------------------------------------------------


async def test_reconcile_grants_a_charge_whose_answer_timed_out_exactly_once(
    app: ServedApp,
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    # given a manual top-up charged at Stripe whose answer never arrived
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)
    stripe_proxy.inject("timeout_after_forward", path_contains="/v1/payment_intents")
    timed_out = await topup(org, audCents=50_000, idempotencyKey="lost-answer")
    assert timed_out["__typename"] == "PaymentProviderUnavailable", timed_out
    [stuck] = await topups_of(org)
    assert (stuck["status"], stuck["paymentIntentId"]) == ("PROCESSING", None)
    [intent] = await intents(emulator)
    assert intent["status"] == "succeeded"

    # a young attempt is left to its request
    assert (await reconcile(app.billing)).checked == 0

    # when reconciliation runs once it is older than a minute, twice
    clock.advance(timedelta(minutes=2))
    report = await reconcile(app.billing)
    second = await reconcile(app.billing)

    # then it is granted once, and the second run finds nothing to repair
    assert report.repaired == [pk_of(stuck["id"], "TopupAttempt")]
    assert (report.unreachable, report.still_open) == ([], [])
    assert (second.checked, second.repaired) == (0, [])
    [done] = await topups_of(org)
    assert (done["status"], done["paymentIntentId"]) == ("SUCCEEDED", intent["id"])
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    assert (await wallet_of(org))["balanceCredits"] == 73_500
    assert len(await intents(emulator)) == 1
    await assert_invariants(app.billing.db)


async def test_reconcile_settles_an_authenticated_3ds_topup_in_process_and_from_the_cli(
    app: ServedApp,
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    # given two 3-D Secure top-ups the customers authenticated, with no retry and no webhook
    first = await make.org(credits=23_500, name="First")
    second = await make.org(credits=1_000, name="Second")
    pending: list[dict[str, Any]] = []
    for org in (first, second):
        await save_card(org.api, emulator, THREE_D_SECURE)
        challenge = await topup(org, audCents=50_000, idempotencyKey="3ds-recon")
        assert challenge["__typename"] == "AuthenticationRequired", challenge
        await authenticate(emulator, challenge)
        pending.append(challenge)
    first_pk = pk_of(pending[0]["challengeAttemptId"], "TopupAttempt")
    second_pk = pk_of(pending[1]["challengeAttemptId"], "TopupAttempt")

    # when the first is reconciled in process (more than a minute later), twice
    clock.advance(timedelta(minutes=2))
    report = await reconcile(app.billing)
    assert report.repaired == [first_pk, second_pk]
    rerun = await reconcile(app.billing)
    assert (rerun.checked, rerun.repaired) == (0, [])

    # then each is granted once
    for org, balance in ((first, 73_500), (second, 51_000)):
        assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
        assert (await wallet_of(org))["balanceCredits"] == balance
        assert [t["status"] for t in await topups_of(org)] == ["SUCCEEDED"]

    # when the operator runs the CLI against the same database: nothing left to repair
    cli_report = await run_cli(app, stripe_proxy, "reconcile", "--json")
    assert cli_report == {"checked": 0, "repaired": [], "unreachable": [], "still_open": []}
    await assert_invariants(app.billing.db)


async def test_reconcile_cli_repairs_an_authenticated_3ds_topup(
    app: ServedApp, make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    # given a 3-D Secure top-up paid at Stripe but never settled here
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator, THREE_D_SECURE)
    challenge = await topup(org, audCents=50_000, idempotencyKey="3ds-cli")
    await authenticate(emulator, challenge)
    still = await topup(org, audCents=20_000, idempotencyKey="3ds-cli-other")
    assert still["__typename"] == "AuthenticationRequired"  # another, not authenticated

    # when the operator runs `gql-billing reconcile --json` (the system clock: it is old enough)
    report = await run_cli(app, stripe_proxy, "reconcile", "--json")
    rerun = await run_cli(app, stripe_proxy, "reconcile", "--json")

    # then the paid one is granted once; the other stays open for its customer
    paid = pk_of(challenge["challengeAttemptId"], "TopupAttempt")
    open_ = pk_of(still["challengeAttemptId"], "TopupAttempt")
    assert report == {"checked": 2, "repaired": [paid], "unreachable": [], "still_open": [open_]}
    assert rerun == {"checked": 1, "repaired": [], "unreachable": [], "still_open": [open_]}
    assert [g["amountCredits"] for g in await grants_of(org)] == [50_000]
    assert (await wallet_of(org))["balanceCredits"] == 51_000
    statuses = {t["id"]: t["status"] for t in await topups_of(org)}
    assert statuses == {
        challenge["challengeAttemptId"]: "SUCCEEDED",
        still["challengeAttemptId"]: "REQUIRES_ACTION",
    }
    await assert_invariants(app.billing.db)


# -- found while testing: the cap and the failure count -------------------------------------------


async def test_raising_the_amount_while_queued_cannot_exceed_the_daily_cap(
    app: ServedApp, make: Factory, emulator: StripeEmulator
) -> None:
    # given A$100 top-ups capped at A$500 a day, one already charged today
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    await enable(org, thresholdCredits=5_000, topupAmountCredits=10_000, dailyChargeCapAud=500)
    await tick(app)
    assert (await auto_of(org))["chargedTodayAudCents"] == 10_000

    # and a second A$100 top-up queued, then the amount raised to A$500 (still <= the cap)
    await grant_credits(app.billing.db, organization_id=org.pk, amount_credits=-7_000, reason="x")
    raised = await set_auto_topup(org, enabled=True, topupAmountCredits=50_000)
    assert raised["__typename"] == "AutoTopupUpdated", raised

    # when the worker ticks
    await tick(app)

    # then today's auto top-up charges stay within A$500
    charged = sum(i["amount"] for i in await intents(emulator) if i["status"] == "succeeded")
    assert charged <= 50_000, charged
    assert (await auto_of(org))["chargedTodayAudCents"] <= 50_000
    await assert_invariants(app.billing.db)


async def test_a_3ds_auto_topup_paid_on_resume_resets_the_failure_count(
    app: ServedApp, make: Factory, emulator: StripeEmulator, clock: FakeClock
) -> None:
    # given two declined auto top-ups in a row
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    await enable(org, thresholdCredits=5_000, topupAmountCredits=10_000, dailyChargeCapAud=500)
    await tick(app)
    clock.advance(timedelta(hours=1))
    await tick(app)
    assert [t["status"] for t in await topups_of(org)] == ["FAILED", "FAILED"]

    # when the customer switches to a 3-D Secure card and pays the next one on resume
    await save_card(org.api, emulator, THREE_D_SECURE)
    clock.advance(timedelta(hours=1))
    await tick(app)
    pending = (await auto_of(org))["lastAttempt"]
    assert pending["status"] == "REQUIRES_ACTION"
    challenge = await resume(org, pending["id"])
    await authenticate(emulator, challenge)
    assert (await resume(org, pending["id"]))["__typename"] == "TopupSuccess"

    # and, back on a declining card, the next auto top-up is declined once
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    await grant_credits(app.billing.db, organization_id=org.pk, amount_credits=-7_000, reason="x")
    clock.advance(timedelta(hours=1))
    await tick(app)
    assert (await auto_of(org))["lastAttempt"]["status"] == "FAILED"

    # then one failure after a success does not switch auto top-up off
    settings = await auto_of(org)
    assert (settings["enabled"], settings["disabledReason"]) == (True, None)
    await assert_invariants(app.billing.db)
