"""Probes (/healthz, /readyz) and a graceful stop: in-flight requests and the worker's tick
in progress finish before the process lets go of the database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from conftest import Factory
from gql_billing.clock import FakeClock
from gql_billing.models import TopupAttempt
from gql_billing.settings import Settings
from gql_billing.worker import Worker, running
from support.app_server import serve
from support.cards import save_card
from support.emulator import StripeEmulator
from support.stripe_proxy import FaultProxy

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) { __typename ... on TopupSuccess { newBalance } }
}
"""
SET_AUTO_TOPUP = """
mutation Auto($input: SetAutoTopupInput!) { setAutoTopup(input: $input) { __typename } }
"""
CHARGES = "/v1/payment_intents"


async def until_stripe_is_charging(proxy: FaultProxy) -> None:
    """Returns once a charge has reached the (slowed) proxy: it is in flight now."""
    for _ in range(3_000):  # a safety net, not a timing expectation
        if proxy.count("POST", CHARGES):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no charge reached Stripe")


async def test_healthz_answers_while_the_process_runs(
    make: Factory, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{make.app.base_url}/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_checks_the_database_and_stripe(
    make: Factory, http: httpx.AsyncClient, stripe_proxy: FaultProxy
) -> None:
    ready = await http.get(f"{make.app.base_url}/readyz")
    with stripe_proxy.refusing():
        stripe_down = await http.get(f"{make.app.base_url}/readyz")

    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "stripe": "ok"}
    assert stripe_proxy.count("GET", "/v1/balance") == 1
    assert stripe_down.status_code == 503
    assert stripe_down.json() == {
        "status": "unavailable",
        "database": "ok",
        "stripe": "unreachable",
    }


async def test_readyz_without_stripe_checks_only_the_database(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    unconfigured = settings.model_copy(update={"stripe_secret_key": None})

    async with serve(unconfigured) as app:
        response = await http.get(f"{app.base_url}/readyz")

    assert (response.status_code, response.json()) == (200, {"status": "ok", "database": "ok"})


async def test_readyz_is_unavailable_without_the_database(
    settings: Settings, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    gone = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path}/missing/dir/billing.db"}
    )

    async with serve(gone) as app:
        response = await http.get(f"{app.base_url}/readyz")
        alive = await http.get(f"{app.base_url}/healthz")

    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
    assert alive.status_code == 200


async def test_shutdown_lets_an_in_flight_topup_finish(
    settings: Settings,
    clock: FakeClock,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
    http: httpx.AsyncClient,
) -> None:
    async with serve(settings, clock) as app:
        org = await Factory(app, http).org()
        await save_card(org.api, emulator)
        stripe_proxy.inject("slow", path_contains=CHARGES)
        request = asyncio.create_task(
            org.api(TOPUP, {"input": {"audCents": 10_000, "idempotencyKey": "in-flight"}})
        )
        await until_stripe_is_charging(stripe_proxy)
    # The server has stopped (the block waited for it); the request it was serving finished.
    answered: dict[str, Any] = await request

    assert answered["topup"] == {"__typename": "TopupSuccess", "newBalance": 10_000}


async def test_stopping_the_worker_lets_its_tick_finish_the_charge(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    auto = {"thresholdCredits": 5_000, "topupAmountCredits": 50_000, "dailyChargeCapAud": 500}
    await org.api(SET_AUTO_TOPUP, {"input": {"enabled": True, **auto}})
    stripe_proxy.inject("slow", path_contains=CHARGES)
    billing = make.app.billing

    async with running(Worker(billing)):
        await until_stripe_is_charging(stripe_proxy)
    # Stopped: nothing runs any more, so what the database holds now is final.
    async with billing.db.read() as session:
        attempt = (await session.execute(select(TopupAttempt))).scalar_one()

    assert (attempt.trigger, attempt.status) == ("AUTO", "SUCCEEDED")
    assert attempt.credits_granted == 50_000
