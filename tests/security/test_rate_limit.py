"""Per-token rate limiting: N requests per window, then HTTP 429 with Retry-After
and a GraphQL-shaped body. In memory by default; in Redis when a URL is set, shared by every
worker. Windows follow the app's clock, so time moves by `clock.advance`, never by sleeping."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import timedelta

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.settings import Settings
from support.api import GraphQLClient
from support.app_server import serve

REDIS_URL = os.environ.get("GQL_BILLING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT = 3
VIEWER = "{ viewer { scopes } }"


def limited(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(
        update={"rate_limit_requests": LIMIT, "rate_limit_window_seconds": 60, **changes}
    )


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in a reachable Redis, removed afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        client.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    prefix = f"gql-billing-test:{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "memory":
        return limited(settings)
    prefix = request.getfixturevalue("redis_prefix")
    return limited(settings, redis_url=REDIS_URL, rate_limit_key_prefix=prefix)


@pytest.fixture
async def limited_app(
    backend: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Factory]:
    async with serve(backend, clock) as served:
        yield Factory(served, http)


async def spend_the_window(api: GraphQLClient) -> None:
    for _ in range(LIMIT):
        assert (await api.post(VIEWER)).status_code == 200


def assert_rate_limited(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(retry_after)
    assert response.json() == {
        "data": None,
        "errors": [
            {
                "message": f"Rate limit exceeded; retry after {retry_after} s",
                "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
            }
        ],
    }


async def test_the_request_past_the_limit_is_429_until_the_window_ends(
    limited_app: Factory, clock: FakeClock
) -> None:
    org = await limited_app.org()
    await spend_the_window(org.api)
    clock.advance(timedelta(seconds=15))

    refused = await org.api.post(VIEWER)
    clock.advance(timedelta(seconds=45))
    next_window = await org.api.post(VIEWER)

    # The fake clock starts on a minute boundary: 45 s of the window are left.
    assert_rate_limited(refused, retry_after=45)
    assert next_window.status_code == 200


async def test_each_token_has_its_own_count(limited_app: Factory) -> None:
    org: Org = await limited_app.org()
    second = limited_app.client(await limited_app.token(org.pk, "billing:read"))
    await spend_the_window(org.api)

    assert (await org.api.post(VIEWER)).status_code == 429
    assert (await second.post(VIEWER)).status_code == 200


async def test_a_websocket_connection_counts_against_the_same_budget(limited_app: Factory) -> None:
    org = await limited_app.org()
    await spend_the_window(org.api)
    url = limited_app.app.graphql_url.replace("http://", "ws://", 1)

    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {org.token}"}}
        await ws.send(json.dumps(init))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=10)

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_redis_shares_the_count_between_workers(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient, redis_prefix: str
) -> None:
    shared = limited(settings, redis_url=REDIS_URL, rate_limit_key_prefix=redis_prefix)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(serve(shared, clock))
        second = await stack.enter_async_context(serve(shared, clock))
        org = await Factory(first, http).org()
        other_worker = GraphQLClient(http, second.graphql_url, org.token)

        statuses = [
            (await api.post(VIEWER)).status_code
            for api in (org.api, other_worker, org.api, other_worker)
        ]

    assert statuses == [200, 200, 200, 429]


async def test_an_unreachable_redis_lets_requests_through(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> None:
    # Nothing listens on port 1: the limiter fails open rather than take billing down.
    unreachable = limited(settings, redis_url="redis://127.0.0.1:1/0")
    async with serve(unreachable, clock) as served:
        org = await Factory(served, http).org()

        statuses = [(await org.api.post(VIEWER)).status_code for _ in range(LIMIT + 1)]

    assert statuses == [200] * (LIMIT + 1)


async def test_the_default_limit_is_generous(make: Factory) -> None:
    assert (make.app.settings.rate_limit_requests, make.app.settings.rate_limit_window_seconds) == (
        600,
        60,
    )
    org = await make.org()

    statuses = {(await org.api.post(VIEWER)).status_code for _ in range(20)}

    assert statuses == {200}
