"""The low-balance alert over HTTP: `wallet.balance_low` once per crossing below the floor
(even when many spends cross together), re-armed at or above it; a change that rolls back
records no event; production refuses endpoints the platform must not call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from conftest import Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.customer_webhooks.outbox import EventType, record
from gql_billing.models import OutboxEvent, WebhookDelivery
from gql_billing.settings import Settings
from support.app_server import ServedApp, serve
from support.receiver import receiver

SET_ALERT = """
mutation Set($input: SetBalanceAlertInput!) {
  setBalanceAlert(input: $input) {
    __typename
    ... on BalanceAlertUpdated { wallet { availableCredits
      balanceAlert { enabled thresholdCredits triggered } } }
    ... on InvalidInput { field }
  }
}
"""
ALERT = "{ wallet { availableCredits balanceAlert { enabled thresholdCredits triggered } } }"
CREATE = """
mutation Create($url: String!) {
  createWebhookEndpoint(input: {url: $url}) {
    __typename
    ... on WebhookEndpointCreated { secret endpoint { id } }
    ... on InvalidInput { field detail }
  }
}
"""
RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename ... on ReservationCreated { reservation { id } }
  }
}
"""
RELEASE = """
mutation Release($id: ID!) { releaseReservation(input: {reservationId: $id}) { __typename } }
"""


async def deliver(app: ServedApp) -> int:
    return await app.billing.webhook_delivery.run_once()


async def endpoint(org: Org, url: str) -> str:
    created = (await org.api(CREATE, {"url": url}))["createWebhookEndpoint"]
    assert created["__typename"] == "WebhookEndpointCreated", created
    secret: str = created["secret"]
    return secret


async def reserve(make: Factory, org: Org, amount: int) -> dict[str, Any]:
    service = make.client(await make.token(None, "billing:spend"))
    key = str(uuid.uuid4())
    spend = {"organizationId": org.id, "amountCredits": amount, "reference": key}
    result: dict[str, Any] = (await service(RESERVE, {"input": {**spend, "idempotencyKey": key}}))[
        "reserveCredits"
    ]
    return result


async def test_setting_the_alert_shows_on_the_wallet(make: Factory) -> None:
    org = await make.org(credits=50_000)
    assert (await org.api(ALERT))["wallet"]["balanceAlert"] == {
        "enabled": False,
        "thresholdCredits": 0,
        "triggered": False,
    }
    set_ = (await org.api(SET_ALERT, {"input": {"enabled": True, "thresholdCredits": 10_000}}))[
        "setBalanceAlert"
    ]
    assert set_["__typename"] == "BalanceAlertUpdated"
    assert set_["wallet"]["balanceAlert"] == {
        "enabled": True,
        "thresholdCredits": 10_000,
        "triggered": False,
    }


@pytest.mark.parametrize("given", [{"enabled": True}, {"enabled": True, "thresholdCredits": -1}])
async def test_a_bad_alert_is_invalid_input(make: Factory, given: dict[str, Any]) -> None:
    org = await make.org(credits=50_000)
    refused = (await org.api(SET_ALERT, {"input": given}))["setBalanceAlert"]
    assert refused == {"__typename": "InvalidInput", "field": "thresholdCredits"}
    assert (await org.api(ALERT))["wallet"]["balanceAlert"]["enabled"] is False


async def test_fifty_concurrent_spends_crossing_the_floor_raise_one_alert(
    app: ServedApp, make: Factory
) -> None:
    # given 50,000 credits and a floor of 30,000
    org = await make.org(credits=50_000)
    with receiver() as hook:
        secret = await endpoint(org, hook.url)
        await org.api(SET_ALERT, {"input": {"enabled": True, "thresholdCredits": 30_000}})

        # when 50 spends of 1,000 run at once (available goes from 50,000 to 0)
        results = await asyncio.gather(*(reserve(make, org, 1_000) for _ in range(50)))
        assert {r["__typename"] for r in results} == {"ReservationCreated"}
        await deliver(app)

        # then exactly one alert, with the wallet's figures at the crossing
        [low] = hook.of_type("wallet.balance_low", secret)
    data = low["data"]
    assert data["alert_threshold_credits"] == 30_000
    assert data["available_credits"] == 29_000
    assert data["balance_credits"] == 50_000
    assert data["organization_id"] == org.id
    wallet = (await org.api(ALERT))["wallet"]
    assert (wallet["availableCredits"], wallet["balanceAlert"]["triggered"]) == (0, True)


async def test_back_at_the_floor_re_arms_and_the_next_crossing_alerts_again(
    app: ServedApp, make: Factory
) -> None:
    org = await make.org(credits=20_000)
    with receiver() as hook:
        secret = await endpoint(org, hook.url)
        await org.api(SET_ALERT, {"input": {"enabled": True, "thresholdCredits": 10_000}})
        first = await reserve(make, org, 15_000)  # 5,000 left: below
        second = await reserve(make, org, 1_000)  # still below: no new alert
        assert second["__typename"] == "ReservationCreated"
        service = make.client(await make.token(None, "billing:spend"))
        await service(RELEASE, {"id": first["reservation"]["id"]})  # 19,000: re-armed
        assert (await org.api(ALERT))["wallet"]["balanceAlert"]["triggered"] is False
        await reserve(make, org, 12_000)  # 7,000: below again
        await deliver(app)
        lows = hook.of_type("wallet.balance_low", secret)
    # (deliveries go out concurrently: in no particular order)
    assert sorted(low["data"]["available_credits"] for low in lows) == [5_000, 7_000]


async def test_balance_low_sends_the_balance_operations_answer_and_the_floor(
    app: ServedApp, make: Factory
) -> None:
    # given 20,000 credits, automatic top-ups configured and a floor of 10,000
    org = await make.org(credits=20_000)
    set_auto = await make.http.post(
        f"{app.base_url}/v1/op/billing.set_auto_topup",
        headers={"Authorization": f"Bearer {org.token}"},
        json={
            "enabled": False,
            "threshold_credits": 4_000,
            "topup_amount_credits": 50_000,
            "daily_charge_cap_aud": 800,
        },
    )
    assert set_auto.status_code == 200, set_auto.text
    with receiver() as hook:
        secret = await endpoint(org, hook.url)
        await org.api(SET_ALERT, {"input": {"enabled": True, "thresholdCredits": 10_000}})

        # when a spend takes the available balance below the floor and nothing moves after
        assert (await reserve(make, org, 12_500))["__typename"] == "ReservationCreated"
        assert await deliver(app) == 1
        [low] = hook.of_type("wallet.balance_low", secret)

    # then `data` is what GET /v1/op/billing.credits.balance answers, plus whose and the floor
    balance = await make.http.get(
        f"{app.base_url}/v1/op/billing.credits.balance",
        headers={"Authorization": f"Bearer {org.token}"},
    )
    assert balance.status_code == 200
    assert low["data"] == {
        **balance.json(),
        "organization_id": org.id,
        "alert_threshold_credits": 10_000,
    }
    assert low["data"]["balance"] == {
        "amount": "200.00",
        "currency": "AUD",
        "formatted": "$200.00",
        "is_estimate": False,
    }
    assert (low["data"]["reserved_credits"], low["data"]["available_credits"]) == (12_500, 7_500)
    assert low["data"]["auto_topup"] == {
        "enabled": False,
        "threshold_credits": 4_000,
        "topup_amount_credits": 50_000,
        "daily_charge_cap_aud": 800,
        "charged_today_aud_cents": 0,
        "disabled_reason": None,
    }


async def test_setting_a_floor_above_the_balance_alerts_at_once(
    app: ServedApp, make: Factory
) -> None:
    org = await make.org(credits=5_000)
    with receiver() as hook:
        secret = await endpoint(org, hook.url)
        set_ = await org.api(SET_ALERT, {"input": {"enabled": True, "thresholdCredits": 10_000}})
        assert set_["setBalanceAlert"]["wallet"]["balanceAlert"]["triggered"] is True
        # the same floor again is not a new crossing
        await org.api(SET_ALERT, {"input": {"enabled": True, "thresholdCredits": 10_000}})
        await deliver(app)
        assert len(hook.of_type("wallet.balance_low", secret)) == 1


async def test_a_spend_that_fails_records_no_event(app: ServedApp, make: Factory) -> None:
    org = await make.org(credits=20_000)
    with receiver() as hook:
        await endpoint(org, hook.url)
        await org.api(SET_ALERT, {"input": {"enabled": True, "thresholdCredits": 10_000}})
        refused = await reserve(make, org, 25_000)
        assert refused["__typename"] == "InsufficientCredits"
        assert await deliver(app) == 0
        assert hook.received == []


async def test_an_event_recorded_in_a_transaction_that_rolls_back_is_never_sent(
    app: ServedApp, make: Factory
) -> None:
    org = await make.org()
    with receiver() as hook:
        await endpoint(org, hook.url)
        now = app.billing.clock.now()
        with pytest.raises(RuntimeError):
            async with app.billing.db.write() as session:
                queued = await record(session, org.pk, EventType.WEBHOOK_TEST, {}, now=now)
                assert len(queued) == 1
                raise RuntimeError("the change fails after its event was recorded")
        assert await deliver(app) == 0
        assert hook.received == []
    async with app.billing.db.read() as session:
        for table in (OutboxEvent, WebhookDelivery):
            assert (await session.execute(select(func.count()).select_from(table))).scalar() == 0


# -- production ---------------------------------------------------------------------------------


@pytest.fixture
async def production(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Factory]:
    async with serve(settings.model_copy(update={"env": "production"}), clock) as served:
        yield Factory(served, http)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/billing",
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",
        "https://10.0.0.8/hooks",
        "https://169.254.169.254/latest",
        "https://[::1]/hooks",
    ],
)
async def test_production_refuses_http_and_private_addresses(production: Factory, url: str) -> None:
    org = await production.org()
    refused = (await org.api(CREATE, {"url": url}))["createWebhookEndpoint"]
    assert (refused["__typename"], refused["field"]) == ("InvalidInput", "url")
    assert "Traceback" not in refused["detail"]


async def test_production_accepts_https_to_a_public_address(production: Factory) -> None:
    org = await production.org()
    created = await org.api(CREATE, {"url": "https://93.184.215.14/hooks"})
    assert created["createWebhookEndpoint"]["__typename"] == "WebhookEndpointCreated"
