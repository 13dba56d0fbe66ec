"""A card hold's settlement is claimed in the database before Stripe is called: parallel
settlements of one hold make one Stripe call, and one that died mid-call is finished by a
retry or the worker with the same Stripe key."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from conftest import TEST_SECRET_KEY, Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.models import Plan
from gql_billing.worker import Worker
from support.api import GraphQLClient
from support.app_server import free_port
from support.cards import save_card
from support.emulator import StripeEmulator
from support.invariants import assert_invariants
from support.processes import CLI, gateway_env
from support.stripe_proxy import FaultProxy

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id status billingMode paymentIntentId } }
    ... on Problem { title detail }
  }
}
"""

SETTLED = "reservation { id status capturedCredits } wallet { balanceCredits }"

CAPTURE = f"""
mutation Capture($input: CaptureReservationInput!) {{
  captureReservation(input: $input) {{
    __typename ... on ReservationCaptured {{ {SETTLED} }} ... on Problem {{ title detail }}
  }}
}}
"""

RELEASE = f"""
mutation Release($input: ReleaseReservationInput!) {{
  releaseReservation(input: $input) {{
    __typename ... on ReservationReleased {{ {SETTLED} }} ... on Problem {{ title detail }}
  }}
}}
"""

REFUND = f"""
mutation Refund($input: RefundReservationInput!) {{
  refundReservation(input: $input) {{
    __typename ... on ReservationRefunded {{ {SETTLED} }} ... on Problem {{ title detail }}
  }}
}}
"""

LEDGER = "{ transactions(first: 10) { edges { node { kind } } } }"


async def card_hold(make: Factory, emulator: StripeEmulator, amount: int) -> tuple[Org, Any, str]:
    """A free organization without credits, a saved card, and a service token's hold."""
    org = await make.org(plan=Plan.FREE)
    await save_card(org.api, emulator)
    service = make.client(await make.token(None, "billing:spend"))
    data = await service(
        RESERVE,
        {
            "input": {
                "organizationId": org.id,
                "amountCredits": amount,
                "reference": "scene-9",
                "idempotencyKey": f"hold-{amount}",
            }
        },
    )
    held = data["reserveCredits"]
    assert held["__typename"] == "ReservationCreated", held
    assert held["reservation"]["billingMode"] == "CARD_HOLD"
    return org, service, held["reservation"]


async def settle(api: GraphQLClient, document: str, reservation_id: str, **extra: Any) -> Any:
    data = await api(document, {"input": {"reservationId": reservation_id, **extra}})
    return next(iter(data.values()))


async def refunds_at_stripe(emulator: StripeEmulator, pi: str) -> list[int]:
    page = await asyncio.to_thread(
        emulator._call, "GET", "/v1/refunds", params={"payment_intent": pi}
    )
    return [r["amount"] for r in page["data"] if r["payment_intent"] == pi]


async def test_twenty_parallel_refunds_of_one_hold_refund_once_at_stripe(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    # given a card hold of 5,000 of which 3,000 was captured
    org, service, hold = await card_hold(make, emulator, 5000)
    captured = await settle(service, CAPTURE, hold["id"], amountCredits=3000)
    assert captured["__typename"] == "ReservationCaptured", captured

    # when 20 refunds of it arrive at once
    answers = await asyncio.gather(*(settle(service, REFUND, hold["id"]) for _ in range(20)))

    # then Stripe was asked to refund once, refunded 3,000 once, and every answer agrees
    assert stripe_proxy.count("POST", "/v1/refunds") == 1
    assert await refunds_at_stripe(emulator, hold["paymentIntentId"]) == [3000]
    assert {a["__typename"] for a in answers} == {"ReservationRefunded"}, answers
    assert {(a["reservation"]["status"], a["reservation"]["capturedCredits"]) for a in answers} == {
        ("REFUNDED", 3000)
    }
    # and a card hold never touches the wallet
    assert (await org.api(LEDGER))["transactions"]["edges"] == []
    await assert_invariants(make.app.billing.db)


async def test_parallel_captures_and_releases_of_one_hold_make_one_stripe_call(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    # given a card hold of 4,000
    _, service, hold = await card_hold(make, emulator, 4000)
    pi = hold["paymentIntentId"]

    # when ten captures of 2,500 and ten releases race
    answers = await asyncio.gather(
        *(settle(service, CAPTURE, hold["id"], amountCredits=2500) for _ in range(10)),
        *(settle(service, RELEASE, hold["id"], reason="cancelled") for _ in range(10)),
    )

    # then Stripe saw exactly one settlement call: a capture or a cancel
    captures = stripe_proxy.count("POST", f"/v1/payment_intents/{pi}/capture")
    cancels = stripe_proxy.count("POST", f"/v1/payment_intents/{pi}/cancel")
    assert captures + cancels == 1, (captures, cancels)
    names = [a["__typename"] for a in answers]
    if captures:
        # the captures all replay the one success, the releases are refused
        assert names == ["ReservationCaptured"] * 10 + ["InvalidState"] * 10, answers
        assert (await asyncio.to_thread(emulator.retrieve_payment_intent, pi))["status"] == (
            "succeeded"
        )
    else:
        assert names == ["InvalidState"] * 10 + ["ReservationReleased"] * 10, answers
        assert (await asyncio.to_thread(emulator.retrieve_payment_intent, pi))["status"] == (
            "canceled"
        )
    await assert_invariants(make.app.billing.db)


async def test_a_refund_whose_answer_was_lost_is_finished_by_the_retry(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    # given a captured hold, and Stripe's answer to the refund lost after it refunded
    _, service, hold = await card_hold(make, emulator, 2000)
    await settle(service, CAPTURE, hold["id"])
    stripe_proxy.inject("timeout_after_forward", path_contains="/v1/refunds")

    first = await settle(service, REFUND, hold["id"])

    # then the client is told to retry, and Stripe did refund
    assert first["__typename"] == "PaymentProviderUnavailable", first
    assert await refunds_at_stripe(emulator, hold["paymentIntentId"]) == [2000]

    # when it retries
    retried = await settle(service, REFUND, hold["id"])

    # then the same Stripe key replays the refund: refunded once
    assert retried["__typename"] == "ReservationRefunded", retried
    assert await refunds_at_stripe(emulator, hold["paymentIntentId"]) == [2000]
    assert stripe_proxy.count("POST", "/v1/refunds") == 2


async def test_settlements_cut_off_by_a_crash_are_finished_by_a_retry_and_by_the_worker(
    make: Factory,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    clock: FakeClock,
    http: httpx.AsyncClient,
) -> None:
    # given two captured holds of one organization
    _, service, first = await card_hold(make, emulator, 1500)
    _, _, second = await card_hold(make, emulator, 2500)
    for hold in (first, second):
        await settle(service, CAPTURE, hold["id"])

    # when a server process sends both refunds to Stripe, Stripe refunds them, and the
    # process dies before it hears back (killed while the answers hang)
    stripe_proxy.inject("timeout_after_forward", path_contains="/v1/refunds", count=2)
    port = free_port()
    env = gateway_env(
        make.app.settings.database_url,
        stripe_proxy.base_url,
        TEST_SECRET_KEY,
        GQL_BILLING_RUN_WORKER="false",
        GQL_BILLING_IDEMPOTENCY_LEASE_SECONDS="1",
        GQL_BILLING_STRIPE_TIMEOUT_SECONDS="30",
    )
    proc = _start_server(env, port)
    try:
        await _wait_healthy(http, f"http://127.0.0.1:{port}")
        doomed = GraphQLClient(http, f"http://127.0.0.1:{port}/graphql", service.token)
        in_flight = [
            asyncio.create_task(doomed.post(REFUND, {"input": {"reservationId": h["id"]}}))
            for h in (first, second)
        ]
        await _until(lambda: stripe_proxy.count("POST", "/v1/refunds") == 2)
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        for task in in_flight:
            with contextlib.suppress(httpx.TransportError):  # the server died: no answer
                await task
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
    assert await refunds_at_stripe(emulator, first["paymentIntentId"]) == [1500]
    assert await refunds_at_stripe(emulator, second["paymentIntentId"]) == [2500]

    # once the dead process's claims have lapsed
    clock.advance(datetime.now(UTC) - clock.now() + timedelta(seconds=5))

    # when the client retries the first refund
    retried = await settle(service, REFUND, first["id"])

    # then it is finished with the same Stripe key: refunded once
    assert retried["__typename"] == "ReservationRefunded", retried
    assert await refunds_at_stripe(emulator, first["paymentIntentId"]) == [1500]

    # and the worker finishes the second one, also once
    report = await Worker(make.app.billing).tick()
    assert report.card_settlements_finished == 1
    assert await refunds_at_stripe(emulator, second["paymentIntentId"]) == [2500]
    replayed = await settle(service, REFUND, second["id"])
    assert replayed["__typename"] == "ReservationRefunded", replayed
    assert (await Worker(make.app.billing).tick()).card_settlements_finished == 0
    await assert_invariants(make.app.billing.db)


def _start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_healthy(http: httpx.AsyncClient, base_url: str) -> None:
    async def healthy() -> bool:
        try:
            return (await http.get(f"{base_url}/healthz", timeout=1)).status_code == 200
        except httpx.TransportError:
            return False

    deadline = time.monotonic() + 30
    while not await healthy():
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.1)


async def _until(condition: Any, timeout_seconds: float = 20) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
