"""Every door admits the same way: the body cut off at its limit while it streams in, the token
re-checked on every websocket message and a revoked token's sockets closed, the same per-token
rate limit on /graphql, its websocket and /v1/op, and REST bodies only as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import Factory, Org
from gql_billing.auth import revoke_token
from gql_billing.clock import FakeClock
from gql_billing.settings import Settings
from support.app_server import serve
from support.cards import save_card
from support.emulator import StripeEmulator

CLI = str(Path(sys.executable).with_name("gql-billing"))
KiB = 1024
MiB = 1024 * KiB
PROBLEM = "application/problem+json"
VIEWER = "{ viewer { scopes } }"
WALLET = "{ wallet { balanceCredits } }"
SUBSCRIBE = "subscription { walletUpdated { balanceCredits } }"
TOPUP = """
mutation { topup(input: {audCents: 10000}) { __typename ... on Problem { detail } } }
"""


async def endless(total_bytes: int = 300 * MiB) -> AsyncIterator[bytes]:
    """A chunked body far over any limit; the server must stop reading long before its end."""
    chunk = b"x" * (64 * KiB)
    for _ in range(total_bytes // len(chunk)):
        yield chunk


def bearer(org: Org) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.token}"}


async def ws_open(make: Factory, token: str) -> ClientConnection:
    url = make.app.graphql_url.replace("http://", "ws://", 1)
    ws = await connect(url, subprotocols=["graphql-transport-ws"], max_size=None)  # type: ignore[list-item]
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    await ws.send(json.dumps(init))
    assert (await receive(ws))["type"] == "connection_ack"
    return ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    return message


async def answer(ws: ClientConnection, operation_id: str) -> dict[str, Any]:
    """The operation's first result (`next` or `error`), skipping other operations' messages."""
    while True:
        message = await receive(ws)
        if message.get("id") == operation_id and message["type"] in {"next", "error"}:
            return message


async def close_code(ws: ClientConnection) -> int:
    """The code the server closed with, reading (and dropping) what it sent before."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def subscribe(ws: ClientConnection, operation_id: str, query: str) -> None:
    message = {"id": operation_id, "type": "subscribe", "payload": {"query": query}}
    await ws.send(json.dumps(message))


async def balance(make: Factory, org: Org) -> int:
    reader = make.client(await make.token(org.pk, "billing:read"))
    data = await reader(WALLET)
    return int(data["wallet"]["balanceCredits"])


async def assert_up(make: Factory, org: Org) -> None:
    response = await make.http.post(
        make.app.graphql_url, json={"query": VIEWER}, headers=bearer(org)
    )
    assert response.status_code == 200


# -- a revoked token over an open websocket -----------------------------------------------------


async def test_a_revoked_tokens_idle_socket_is_closed_and_its_subscription_stops(
    make: Factory,
) -> None:
    org = await make.org(credits=1_000)
    ws = await ws_open(make, org.token)
    await subscribe(ws, "1", SUBSCRIBE)
    await ws.send(json.dumps({"type": "ping"}))
    assert (await receive(ws))["type"] == "pong"

    # Another process revokes it, as an operator would.
    revoked = await asyncio.to_thread(
        subprocess.run,
        [CLI, "token", "revoke", org.token[:13]],
        env={**os.environ, "GQL_BILLING_DATABASE_URL": make.app.settings.database_url},
        capture_output=True,
        timeout=60,
    )
    # The client sends nothing more: the server closes the socket on its own.
    code = await close_code(ws)

    assert revoked.returncode == 0, revoked.stderr
    assert code == 4403
    assert ws.close_reason == "Token revoked"


async def test_a_revoked_tokens_topup_over_an_open_socket_is_refused(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    ws = await ws_open(make, org.token)

    await revoke_token(make.app.billing.db, org.token[:13])
    await subscribe(ws, "1", TOPUP)
    code = await close_code(ws)

    assert code == 4403
    assert emulator.list_payment_intents() == []
    assert await balance(make, org) == 1_000


async def test_a_live_tokens_socket_stays_open(make: Factory) -> None:
    org = await make.org()
    ws = await ws_open(make, org.token)
    await subscribe(ws, "1", VIEWER)
    first = await answer(ws, "1")
    # Longer than the revocation watch's interval: it looked, and left the socket alone.
    await asyncio.sleep(1.5)
    await subscribe(ws, "2", VIEWER)
    second = await answer(ws, "2")
    await ws.close()

    assert (
        first["payload"]
        == second["payload"]
        == {"data": {"viewer": {"scopes": ["BILLING_READ", "BILLING_WRITE"]}}}
    )


# -- body limits at every door -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [("/graphql", False), ("/v1/op/billing.topup", True)],
    ids=["graphql", "rest"],
)
async def test_an_endless_chunked_body_is_cut_off_at_the_limit(
    make: Factory, emulator: StripeEmulator, path: str, problem: bool
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)
    headers = {**bearer(org), "Content-Type": "application/json"}

    response = await make.http.post(make.app.base_url + path, headers=headers, content=endless())

    assert response.status_code == 413
    if problem:
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["title"] == "Payload Too Large"
    else:
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert emulator.list_payment_intents() == []
    await assert_up(make, org)


async def test_an_endless_chunked_webhook_is_cut_off_before_its_signature_is_checked(
    make: Factory,
) -> None:
    org = await make.org()
    headers = {"Stripe-Signature": "t=1,v1=forged", "Content-Type": "application/json"}

    response = await make.http.post(
        make.app.base_url + "/webhooks/stripe", headers=headers, content=endless()
    )

    assert response.status_code == 413
    assert response.json() == {"result": "body too large"}
    await assert_up(make, org)


async def test_a_webhook_within_its_limit_reaches_the_signature_check(make: Factory) -> None:
    # Larger than an API body (64 KiB), within the webhook's 256 KiB: read, then refused as forged.
    body = json.dumps({"id": "evt_1", "type": "ping", "padding": "x" * (200 * KiB)})

    response = await make.http.post(
        make.app.base_url + "/webhooks/stripe",
        headers={"Stripe-Signature": "t=1,v1=forged", "Content-Type": "application/json"},
        content=body,
    )

    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/graphql", "/v1/op/billing.topup", "/webhooks/stripe"])
async def test_an_upload_still_going_after_the_linger_is_hung_up_on(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient, path: str
) -> None:
    impatient = settings.model_copy(update={"oversized_body_linger_seconds": 0})
    async with serve(impatient, clock) as served:
        make = Factory(served, http)
        org = await make.org()
        sent_bytes = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal sent_bytes
            async for chunk in endless():
                sent_bytes += len(chunk)
                yield chunk

        headers = {**bearer(org), "Content-Type": "application/json"}
        try:
            response = await http.post(served.base_url + path, headers=headers, content=counted())
            status: int | None = response.status_code
        except httpx.TransportError:
            # The server hung up while the client was still sending; it may not see the 413.
            status = None

        assert status in {413, None}
        assert sent_bytes < 300 * MiB
        await assert_up(make, org)


# -- the same rate limit on every door ---------------------------------------------------------


@pytest.fixture
async def limited(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Factory]:
    async with serve(settings.model_copy(update={"rate_limit_requests": 3}), clock) as served:
        yield Factory(served, http)


async def test_rest_is_429_past_the_limit_shared_with_graphql(limited: Factory) -> None:
    org = await limited.org()
    url = limited.app.base_url + "/v1/op/billing.credits.balance"

    graphql = [(await org.api.post(VIEWER)).status_code for _ in range(2)]
    rest = [(await limited.http.get(url, headers=bearer(org))).status_code for _ in range(2)]
    refused = await limited.http.get(url, headers=bearer(org))

    assert graphql == [200, 200]
    assert rest == [200, 429]
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith(PROBLEM)
    # The fake clock starts on a minute boundary and stands still: the whole window is left.
    assert refused.headers["retry-after"] == "60"
    assert refused.json()["retry_after"] == 60


async def test_websocket_operations_are_counted_one_by_one(make: Factory) -> None:
    org = await make.org()
    ws = await ws_open(make, org.token)

    for n in range(700):
        await subscribe(ws, str(n), VIEWER)
    answers: dict[str, str] = {}
    codes: set[str] = set()
    while len(answers) < 700:
        message = await receive(ws)
        if message["type"] in {"next", "error"}:
            answers[message["id"]] = message["type"]
        if message["type"] == "error":
            codes.add(message["payload"][0]["extensions"]["code"])
    await ws.close()

    # 600 a minute: the connection took one, 599 operations ran, 101 were refused.
    assert list(answers.values()).count("next") == 599
    assert list(answers.values()).count("error") == 101
    assert codes == {"RATE_LIMITED"}


# -- websocket message size --------------------------------------------------------------------


async def test_a_websocket_message_over_the_body_limit_closes_the_socket(make: Factory) -> None:
    org = await make.org()
    ws = await ws_open(make, org.token)

    padding = "#" * MiB
    await subscribe(ws, "1", VIEWER + "\n" + padding)
    code = await close_code(ws)

    assert code == 1009
    await assert_up(make, org)


async def test_a_websocket_message_within_the_body_limit_runs(make: Factory) -> None:
    org = await make.org()
    ws = await ws_open(make, org.token)

    # Comments pad the message to just under 64 KiB without adding lexical work.
    padding = "#" + " " * (60 * KiB)
    await subscribe(ws, "1", VIEWER + "\n" + padding)
    result = await answer(ws, "1")
    await ws.close()

    assert result["type"] == "next"


# -- REST bodies are JSON ----------------------------------------------------------------------


async def test_a_text_plain_rest_topup_is_415_and_charges_nothing(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)

    response = await make.http.post(
        make.app.base_url + "/v1/op/billing.topup",
        headers={**bearer(org), "Content-Type": "text/plain", "Idempotency-Key": "plain"},
        content=json.dumps({"aud_cents": 10_000}),
    )

    assert response.status_code == 415
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["title"] == "Unsupported Media Type"
    assert emulator.list_payment_intents() == []
    assert await balance(make, org) == 1_000


async def test_a_json_rest_topup_with_a_charset_is_accepted(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator)

    response = await make.http.post(
        make.app.base_url + "/v1/op/billing.topup",
        headers={
            **bearer(org),
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": "json",
        },
        content=json.dumps({"aud_cents": 10_000}),
    )

    assert response.status_code == 200, response.text
    assert response.json()["new_balance"] > 1_000
