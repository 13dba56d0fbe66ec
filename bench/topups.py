"""Top-ups against the Stripe emulator with injected latency: one alone, then 32 at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from . import seed, servers
from .stats import median_ratio, summary

STRIPE_KEY = "sk_test_gql_billing_bench"

CREATE_SETUP_INTENT = "mutation { createSetupIntent { __typename ... on SetupIntentCreated "
CREATE_SETUP_INTENT += "{ setupIntentId } ... on Problem { detail } } }"
ATTACH = """
mutation A($pm: String!) {
  attachPaymentMethod(input: {paymentMethodId: $pm, setAsDefault: true}) {
    __typename ... on Problem { detail }
  }
}
"""
TOPUP = """
mutation T($key: String!) {
  topup(input: {audCents: 10000, idempotencyKey: $key}) {
    __typename ... on TopupSuccess { creditsGranted } ... on Problem { detail }
  }
}
"""


def _graphql(
    client: httpx.Client, url: str, token: str, query: str, variables: dict[str, Any] | None
) -> dict[str, Any]:
    response = client.post(
        url,
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


def save_card(graphql_url: str, token: str, emulator_url: str) -> str:
    """As a browser would: SetupIntent, Stripe.js creates and confirms the card, attach.
    Returns the card's pm_ id."""
    with httpx.Client(timeout=30.0) as client:
        created = _graphql(client, graphql_url, token, CREATE_SETUP_INTENT, None)
        intent = created["createSetupIntent"]
        assert intent["__typename"] == "SetupIntentCreated", intent
        stripe = {"Authorization": f"Bearer {STRIPE_KEY}"}
        card = {
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        }
        pm = client.post(f"{emulator_url}/v1/payment_methods", headers=stripe, data=card)
        pm.raise_for_status()
        pm_id = pm.json()["id"]
        confirmed = client.post(
            f"{emulator_url}/v1/setup_intents/{intent['setupIntentId']}/confirm",
            headers=stripe,
            data={"payment_method": pm_id},
        )
        confirmed.raise_for_status()
        attached = _graphql(client, graphql_url, token, ATTACH, {"pm": pm_id})
        outcome = attached["attachPaymentMethod"]
        assert outcome["__typename"] == "PaymentMethodAttached", outcome
        return str(pm_id)


async def _topup(client: httpx.AsyncClient, url: str, token: str) -> None:
    response = await client.post(
        url,
        json={"query": TOPUP, "variables": {"key": f"bench-{uuid.uuid4().hex}"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    result = response.json()["data"]["topup"]
    if result["__typename"] != "TopupSuccess":
        raise RuntimeError(f"top-up failed: {result}")


async def wall_seconds(graphql_url: str, token: str, concurrent: int) -> float:
    """Wall time for `concurrent` top-ups started together (each with its own key)."""
    limits = httpx.Limits(max_connections=concurrent, max_keepalive_connections=concurrent)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        # Connections opened first, so the timing covers the top-ups rather than TCP set-up.
        await asyncio.gather(*(client.get(graphql_url) for _ in range(concurrent)))
        started = time.perf_counter()
        await asyncio.gather(*(_topup(client, graphql_url, token) for _ in range(concurrent)))
        return time.perf_counter() - started


async def _charge(client: httpx.AsyncClient, customer_id: str, pm_id: str) -> None:
    """The one Stripe call a top-up makes (what StripeGateway.charge_off_session sends)."""
    response = await client.post(
        "/v1/payment_intents",
        headers={"Idempotency-Key": f"bench-floor-{uuid.uuid4().hex}"},
        data={
            "amount": "10000",
            "currency": "aud",
            "customer": customer_id,
            "payment_method": pm_id,
            "payment_method_types[]": "card",
            "off_session": "true",
            "confirm": "true",
        },
    )
    response.raise_for_status()


async def floor_seconds(stripe_url: str, customer_id: str, pm_id: str, concurrent: int) -> float:
    """Wall time for `concurrent` bare PaymentIntents through the same proxy: what the
    emulator itself allows, with no gateway in the way."""
    limits = httpx.Limits(max_connections=concurrent, max_keepalive_connections=concurrent)
    headers = {"Authorization": f"Bearer {STRIPE_KEY}"}
    async with httpx.AsyncClient(
        base_url=stripe_url, headers=headers, timeout=60.0, limits=limits
    ) as client:
        await asyncio.gather(*(client.get("/v1/balance") for _ in range(concurrent)))
        started = time.perf_counter()
        await asyncio.gather(*(_charge(client, customer_id, pm_id) for _ in range(concurrent)))
        return time.perf_counter() - started


def measure(
    graphql: servers.Server,
    data: seed.Seeded,
    *,
    emulator_url: str,
    stripe_url: str,
    database_url: str,
    rounds: int,
    concurrent: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, float]]:
    """One top-up, `concurrent` at once, and the same two as bare PaymentIntents, per round."""
    url = f"{graphql.base_url}/graphql"
    token = data.topups.token
    pm_id = save_card(url, token, emulator_url)
    customer_id = seed.stripe_customer(database_url, data.topups.pk)
    runs: dict[str, list[float]] = {"one": [], "many": [], "floor_one": [], "floor_many": []}
    for round_ in range(rounds):
        log(f"top-up round {round_ + 1} of {rounds}")
        runs["one"].append(asyncio.run(wall_seconds(url, token, 1)))
        runs["many"].append(asyncio.run(wall_seconds(url, token, concurrent)))
        for key, count in (("floor_one", 1), ("floor_many", concurrent)):
            runs[key].append(asyncio.run(floor_seconds(stripe_url, customer_id, pm_id, count)))
    figures = {
        "one_s": summary(runs["one"], 3),
        f"concurrent_{concurrent}_s": summary(runs["many"], 3),
        "emulator_one_s": summary(runs["floor_one"], 3),
        f"emulator_concurrent_{concurrent}_s": summary(runs["floor_many"], 3),
    }
    gateway = [many / one for many, one in zip(runs["many"], runs["one"], strict=True)]
    floor = [many / one for many, one in zip(runs["floor_many"], runs["floor_one"], strict=True)]
    ratios = {
        "concurrent_topups": median_ratio(runs["many"], runs["one"], 2),
        "concurrent_topups_emulator_floor": median_ratio(runs["floor_many"], runs["floor_one"], 2),
        # How far above what the emulator itself allows, each round against its own floor.
        "concurrent_topups_over_floor": median_ratio(gateway, floor, 2),
    }
    return figures, ratios
