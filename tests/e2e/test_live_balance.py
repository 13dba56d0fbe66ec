"""The walletUpdated subscription over graphql-transport-ws, with a real websocket client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import Factory
from gql_billing.billing.organizations import grant_credits
from support.app_server import ServedApp

SUBSCRIBE = "subscription { walletUpdated { balanceCredits availableCredits } }"


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/graphql"


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    return message


async def open_subscription(base_url: str, token: str, query: str = SUBSCRIBE) -> ClientConnection:
    ws = await connect(ws_url(base_url), subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert (await receive(ws))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
    # Subscribed once the server has the operation; a ping round-trip proves it read it.
    await ws.send(json.dumps({"type": "ping"}))
    assert (await receive(ws))["type"] == "pong"
    return ws


async def test_every_ledger_movement_is_pushed(make: Factory, app: ServedApp) -> None:
    org = await make.org(credits=1_000)
    ws = await open_subscription(app.base_url, org.token)
    try:
        await grant_credits(app.billing.db, organization_id=org.pk, amount_credits=500, reason="a")
        first = await receive(ws)
        await grant_credits(app.billing.db, organization_id=org.pk, amount_credits=-200, reason="b")
        second = await receive(ws)
    finally:
        await ws.close()

    assert first == {
        "id": "1",
        "type": "next",
        "payload": {
            "data": {"walletUpdated": {"balanceCredits": 1_500, "availableCredits": 1_500}}
        },
    }
    assert second["payload"]["data"]["walletUpdated"]["balanceCredits"] == 1_300


async def test_another_organizations_movements_are_not_pushed(
    make: Factory, app: ServedApp
) -> None:
    watcher = await make.org(name="Watcher")
    other = await make.org(name="Other")
    ws = await open_subscription(app.base_url, watcher.token)
    try:
        await grant_credits(app.billing.db, organization_id=other.pk, amount_credits=5, reason="x")
        await grant_credits(
            app.billing.db, organization_id=watcher.pk, amount_credits=7, reason="y"
        )
        message = await receive(ws)
    finally:
        await ws.close()

    assert message["payload"]["data"]["walletUpdated"]["balanceCredits"] == 7


async def test_a_websocket_without_a_valid_token_is_refused(app: ServedApp) -> None:
    ws = await connect(ws_url(app.base_url), subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}})
    )

    with pytest.raises(ConnectionClosed) as closed:
        await receive(ws)

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_a_token_without_billing_read_gets_forbidden(make: Factory, app: ServedApp) -> None:
    org = await make.org()
    writer = await make.token(org.pk, "billing:write")
    ws = await connect(ws_url(app.base_url), subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    try:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {writer}"}}
            )
        )
        assert (await receive(ws))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        message = await receive(ws)
    finally:
        await ws.close()

    assert message["type"] == "error"
    assert message["payload"][0]["extensions"]["code"] == "FORBIDDEN"
