"""Production mode: the production app, served for real, probed for each lock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import Factory
from gql_billing.clock import FakeClock
from gql_billing.settings import Settings
from support.app_server import serve
from support.stripe_proxy import FaultProxy

ALLOWED_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"

INTROSPECTION = "{ __schema { queryType { name } } }"
TYPO_FIELD = "{ walet { balanceCredits } }"
TYPO_ARGUMENT = "{ transactions(frist: 1) { pageInfo { hasNextPage } } }"
TYPO_ENUM = "query Held($s: ReservationStatus) { reservations(status: $s) { edges { cursor } } }"
INVOICES = "{ invoices { edges { node { id } } } }"
TOPUP = """
mutation { topup(input: {audCents: 10000, idempotencyKey: "p-1"}) {
  __typename ... on Problem { title status detail } } }
"""
CREATE_SETUP_INTENT = "mutation { createSetupIntent { __typename } }"


async def served_factory(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient, **changes: object
) -> AsyncIterator[Factory]:
    async with serve(settings.model_copy(update=changes), clock) as served:
        yield Factory(served, http)


@pytest.fixture
async def prod(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Factory]:
    async for factory in served_factory(
        settings, clock, http, env="production", cors_allow_origins=ALLOWED_ORIGIN
    ):
        yield factory


@pytest.fixture
async def prod_with_introspection(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Factory]:
    async for factory in served_factory(
        settings, clock, http, env="production", introspection=True
    ):
        yield factory


def messages(response: httpx.Response) -> list[str]:
    return [e["message"] for e in response.json().get("errors", [])]


# -- GraphiQL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_token", [False, True])
async def test_no_graphiql(prod: Factory, http: httpx.AsyncClient, with_token: bool) -> None:
    headers = {"Accept": "text/html"}
    if with_token:
        headers |= (await prod.org()).api.headers()

    response = await http.get(prod.app.graphql_url, headers=headers)

    assert 400 <= response.status_code < 500
    assert not response.headers["content-type"].startswith("text/html")
    assert "graphiql" not in response.text.lower()


async def test_no_graphiql_files(prod: Factory, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{prod.app.base_url}/graphiql/graphiql@3.8.3/graphiql.min.js")

    assert response.status_code == 404


# -- introspection ------------------------------------------------------------------------------


async def test_no_introspection(prod: Factory) -> None:
    org = await prod.org()

    response = await org.api.post(INTROSPECTION)

    assert response.json()["data"] is None
    assert any("introspection has been disabled" in m for m in messages(response))
    assert (await org.api("{ __typename }")) == {"__typename": "Query"}


async def test_introspection_can_be_turned_back_on_alone(prod_with_introspection: Factory) -> None:
    org = await prod_with_introspection.org()

    data = await org.api(INTROSPECTION)

    assert data == {"__schema": {"queryType": {"name": "Query"}}}


async def test_development_allows_introspection(make: Factory) -> None:
    org = await make.org()

    assert (await org.api(INTROSPECTION)) == {"__schema": {"queryType": {"name": "Query"}}}


# -- suggestions --------------------------------------------------------------------------------

TYPOS = [(TYPO_FIELD, None), (TYPO_ARGUMENT, None), (TYPO_ENUM, {"s": "HELDD"})]


@pytest.mark.parametrize(("query", "variables"), TYPOS, ids=["field", "argument", "enum"])
async def test_no_did_you_mean(prod: Factory, query: str, variables: dict[str, str] | None) -> None:
    org = await prod.org()

    response = await org.api.post(query, variables)

    assert messages(response), response.text
    assert not any("did you mean" in m.lower() for m in messages(response)), messages(response)


@pytest.mark.parametrize(("query", "variables"), TYPOS, ids=["field", "argument", "enum"])
async def test_development_suggests(
    make: Factory, query: str, variables: dict[str, str] | None
) -> None:
    org = await make.org()

    response = await org.api.post(query, variables)

    assert any("Did you mean" in m for m in messages(response)), messages(response)


# -- masked faults, visible problems ------------------------------------------------------------


async def test_an_unexpected_error_is_masked(prod: Factory) -> None:
    org = await prod.org()
    # A table gone missing (a botched migration, say) makes the resolver fail unexpectedly.
    async with prod.app.billing.db.write() as session:
        await session.execute(text("ALTER TABLE invoices RENAME TO invoices_gone"))

    response = await org.api.post(INVOICES)

    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"invoices": None}
    assert body["errors"] == [
        {
            "message": "Internal server error",
            "locations": [{"line": 1, "column": 3}],
            "path": ["invoices"],
        }
    ]


async def test_a_typed_problem_is_still_visible(prod: Factory) -> None:
    org = await prod.org()

    data = await org.api(TOPUP)

    assert data["topup"]["__typename"] == "PaymentMethodRequired"
    assert data["topup"]["status"] == 402


# -- POST must be JSON (CSRF) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_body",
    [
        {"data": {"query": CREATE_SETUP_INTENT}},
        {"files": {"operations": (None, f'{{"query": "{CREATE_SETUP_INTENT}"}}')}},
        {
            "content": f'{{"query": "{CREATE_SETUP_INTENT}"}}',
            "headers": {"Content-Type": "text/plain"},
        },
    ],
    ids=["form", "multipart", "text-plain"],
)
async def test_a_simple_cross_site_post_is_refused(
    prod: Factory,
    http: httpx.AsyncClient,
    stripe_proxy: FaultProxy,
    request_body: dict[str, object],
) -> None:
    org = await prod.org()
    headers = {**org.api.headers(), **request_body.pop("headers", {})}  # type: ignore[dict-item]

    response = await http.post(prod.app.graphql_url, headers=headers, **request_body)  # type: ignore[arg-type]

    assert 400 <= response.status_code < 500
    assert stripe_proxy.requests == []


# -- websockets ---------------------------------------------------------------------------------


def ws_url(factory: Factory) -> str:
    return factory.app.graphql_url.replace("http://", "ws://", 1)


async def test_the_legacy_graphql_ws_protocol_is_refused(prod: Factory) -> None:
    async with connect(ws_url(prod), subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol is None
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4406


async def test_graphql_transport_ws_is_spoken(prod: Factory) -> None:
    async with connect(ws_url(prod), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "graphql-transport-ws"


# -- CORS ---------------------------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_a_preflight_from_an_allowed_origin_is_answered(
    prod: Factory, http: httpx.AsyncClient
) -> None:
    response = await http.options(prod.app.graphql_url, headers=preflight(ALLOWED_ORIGIN))

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_a_preflight_from_another_origin_gets_no_grant(
    prod: Factory, http: httpx.AsyncClient
) -> None:
    response = await http.options(prod.app.graphql_url, headers=preflight(OTHER_ORIGIN))

    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(("origin", "granted"), [(ALLOWED_ORIGIN, True), (OTHER_ORIGIN, False)])
async def test_a_response_names_only_an_allowed_origin(
    prod: Factory, origin: str, granted: bool
) -> None:
    org = await prod.org()

    response = await org.api.post("{ __typename }", headers={"Origin": origin})

    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") == (origin if granted else None)
