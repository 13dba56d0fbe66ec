"""Races across several gateway processes on one PostgreSQL database.

Each race spreads its requests over three `gql-billing serve` processes (and, for auto
top-up, two `gql-billing worker` processes), so only the database can keep them honest.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import TEST_SECRET_KEY
from gql_billing import auth
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.db import Database
from gql_billing.graphql.ids import to_global_id
from gql_billing.models import Plan
from support import databases
from support.api import GraphQLClient
from support.cards import save_card
from support.emulator import StripeEmulator
from support.invariants import assert_invariants
from support.processes import gateway_env, servers, workers
from support.stripe_proxy import FaultProxy

pytestmark = pytest.mark.skipif(
    databases.BACKEND != "postgresql", reason="multi-process races run on PostgreSQL"
)

SERVERS = 3

TOPUP = """
mutation($key: String!) { topup(input: {audCents: 50000, idempotencyKey: $key}) {
  __typename ... on TopupSuccess { newBalance paymentIntentId } } }
"""
RESERVE = """
mutation($org: ID!, $key: String!, $amount: Credits!) {
  reserveCredits(input: {organizationId: $org, amountCredits: $amount, reference: $key,
                         idempotencyKey: $key}) {
    __typename ... on ReservationCreated { reservation { id } } } }
"""
CAPTURE = """
mutation($id: ID!) { captureReservation(input: {reservationId: $id}) { __typename } }
"""
RELEASE = """
mutation($id: ID!) { releaseReservation(input: {reservationId: $id}) { __typename } }
"""
SET_AUTO = """
mutation { setAutoTopup(input: {enabled: true, thresholdCredits: 100000,
                                topupAmountCredits: 50000, dailyChargeCapAud: 5000}) {
  __typename } }
"""
WALLET = "{ wallet { balanceCredits reservedCredits availableCredits } }"
TOPUPS = "{ topups(first: 50) { edges { node { trigger status audCents } } } }"
GRANTS = (
    "{ transactions(first: 100, filter: {kinds: [GRANT]}) { edges { node { amountCredits } } } }"
)


class Cluster:
    """The servers, their database, and clients spread round-robin over them."""

    def __init__(self, http: httpx.AsyncClient, urls: list[str], database_url: str) -> None:
        self.http = http
        self.urls = urls
        self.db = Database(database_url)
        self._next = itertools.cycle(urls)

    def clients(self, token: str) -> list[GraphQLClient]:
        return [GraphQLClient(self.http, url, token) for url in self.urls]

    def spread(self, token: str, count: int) -> list[GraphQLClient]:
        return [GraphQLClient(self.http, next(self._next), token) for _ in range(count)]

    async def org(self, *, credits: int = 0, plan: Plan = Plan.STANDARD) -> tuple[str, str]:
        org = await create_organization(self.db, name="Scale Pty", plan=plan)
        assert org.id is not None
        if credits:
            await grant_credits(self.db, organization_id=org.id, amount_credits=credits, reason="s")
        issued = await auth.issue_token(
            self.db, organization_id=org.id, scopes=auth.ORGANIZATION_SCOPES
        )
        return to_global_id("Organization", org.id), issued.token

    async def service_token(self) -> str:
        issued = await auth.issue_token(
            self.db, organization_id=None, scopes=auth.SERVICE_SCOPES, name="orders"
        )
        return issued.token


@pytest.fixture
async def cluster(
    database_url: str, stripe_proxy: FaultProxy, http: httpx.AsyncClient
) -> AsyncIterator[Cluster]:
    env = gateway_env(
        database_url, stripe_proxy.base_url, TEST_SECRET_KEY, GQL_BILLING_RUN_WORKER="false"
    )
    with servers(SERVERS, env) as urls:
        cluster = Cluster(http, urls, database_url)
        try:
            yield cluster
        finally:
            await cluster.db.dispose()


async def call(client: GraphQLClient, query: str, **variables: Any) -> dict[str, Any]:
    return await client(query, variables)


async def test_100_retries_of_one_topup_across_3_servers_charge_and_grant_once(
    cluster: Cluster, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    _, token = await cluster.org(credits=23_500)
    await save_card(cluster.clients(token)[0], emulator)

    results = await asyncio.gather(
        *(call(c, TOPUP, key="one-key") for c in cluster.spread(token, 100))
    )
    final = await call(cluster.clients(token)[1], TOPUP, key="one-key")

    kinds = Counter(r["topup"]["__typename"] for r in results)
    assert set(kinds) <= {"TopupSuccess", "IdempotencyConflict"}, kinds
    assert final["topup"] == {
        "__typename": "TopupSuccess",
        "newBalance": 73_500,
        "paymentIntentId": final["topup"]["paymentIntentId"],
    }
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    assert len(await asyncio.to_thread(emulator.list_payment_intents)) == 1
    grants = await call(cluster.clients(token)[2], GRANTS)
    assert [e["node"]["amountCredits"] for e in grants["transactions"]["edges"]] == [50_000]
    await assert_invariants(cluster.db)


async def test_50_reservations_across_3_servers_on_a_balance_for_10(cluster: Cluster) -> None:
    org_id, token = await cluster.org(credits=100)
    service = await cluster.service_token()

    results = await asyncio.gather(
        *(
            call(c, RESERVE, org=org_id, key=f"r{i}", amount=10)
            for i, c in enumerate(cluster.spread(service, 50))
        )
    )

    kinds = Counter(r["reserveCredits"]["__typename"] for r in results)
    assert kinds == {"ReservationCreated": 10, "InsufficientCredits": 40}
    wallet = (await call(cluster.clients(token)[0], WALLET))["wallet"]
    assert wallet == {"balanceCredits": 100, "reservedCredits": 100, "availableCredits": 0}
    await assert_invariants(cluster.db)


async def test_capture_and_release_on_different_servers_have_one_winner(cluster: Cluster) -> None:
    org_id, token = await cluster.org(credits=10_000)
    service = await cluster.service_token()
    first, second, _ = cluster.clients(service)
    reservations = [
        (await call(first, RESERVE, org=org_id, key=f"race-{i}", amount=100))["reserveCredits"][
            "reservation"
        ]["id"]
        for i in range(10)
    ]

    outcomes = await asyncio.gather(
        *(
            asyncio.gather(call(first, CAPTURE, id=rid), call(second, RELEASE, id=rid))
            for rid in reservations
        )
    )

    for captured, released in outcomes:
        pair = {
            captured["captureReservation"]["__typename"],
            released["releaseReservation"]["__typename"],
        }
        assert pair in (
            {"ReservationCaptured", "InvalidState"},
            {"ReservationReleased", "InvalidState"},
        )
    wallet = (await call(cluster.clients(token)[2], WALLET))["wallet"]
    captures = sum(
        c["captureReservation"]["__typename"] == "ReservationCaptured" for c, _ in outcomes
    )
    assert wallet["balanceCredits"] == 10_000 - 100 * captures
    assert wallet["reservedCredits"] == 0
    await assert_invariants(cluster.db)


async def test_two_workers_and_a_threshold_crossing_make_one_auto_topup(
    cluster: Cluster,
    database_url: str,
    emulator: StripeEmulator,
    stripe_proxy: FaultProxy,
) -> None:
    org_id, token = await cluster.org(credits=150_000)
    api = cluster.clients(token)[0]
    await save_card(api, emulator)
    assert (await call(api, SET_AUTO))["setAutoTopup"]["__typename"] == "AutoTopupUpdated"
    service = await cluster.service_token()

    worker_env = gateway_env(
        database_url,
        stripe_proxy.base_url,
        TEST_SECRET_KEY,
        GQL_BILLING_WORKER_INTERVAL_SECONDS="0.2",
    )
    with workers(2, worker_env):
        results = await asyncio.gather(
            *(
                call(c, RESERVE, org=org_id, key=f"spend-{i}", amount=1_000)
                for i, c in enumerate(cluster.spread(service, 60))
            )
        )
        topups = await _wait_for_auto_topup(api)

    assert Counter(r["reserveCredits"]["__typename"] for r in results) == {"ReservationCreated": 60}
    assert [(t["trigger"], t["status"], t["audCents"]) for t in topups] == [
        ("AUTO", "SUCCEEDED", 50_000)
    ]
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    wallet = (await call(api, WALLET))["wallet"]
    assert wallet["balanceCredits"] == 200_000
    await assert_invariants(cluster.db)


async def _wait_for_auto_topup(api: GraphQLClient) -> list[dict[str, Any]]:
    for _ in range(150):
        nodes = [e["node"] for e in (await call(api, TOPUPS))["topups"]["edges"]]
        if nodes and all(n["status"] in ("SUCCEEDED", "FAILED") for n in nodes):
            # Give a second worker a moment to (wrongly) start another one.
            await asyncio.sleep(1)
            return [e["node"] for e in (await call(api, TOPUPS))["topups"]["edges"]]
        await asyncio.sleep(0.1)
    raise AssertionError("no auto top-up finished")


async def test_live_balance_crosses_processes(cluster: Cluster) -> None:
    from websockets.asyncio.client import connect

    _, token = await cluster.org(credits=1_000)
    org_pk = (await auth.authenticate(cluster.db, token)).organization_id  # type: ignore[union-attr]
    assert org_pk is not None
    url = cluster.urls[0].replace("http://", "ws://", 1)
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = "subscription { walletUpdated { balanceCredits } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"

        # This test process is not the server the websocket talks to.
        await grant_credits(cluster.db, organization_id=org_pk, amount_credits=234, reason="x")
        pushed = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))

    assert pushed["payload"]["data"]["walletUpdated"]["balanceCredits"] == 1_234
