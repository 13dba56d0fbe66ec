"""Scopes over the whole schema: every root field is walked from the exported
schema, so a field added without a guard (or without an entry here) fails the suite.
Queries and mutations go over HTTP, subscriptions over graphql-transport-ws."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    get_named_type,
    is_composite_type,
    is_required_argument,
    is_required_input_field,
)
from websockets.asyncio.client import ClientConnection, connect

from conftest import Factory
from gql_billing.auth import Scope
from gql_billing.billing.organizations import grant_credits
from gql_billing.graphql.ids import to_global_id
from gql_billing.graphql.schema import build_schema

READ, WRITE, SPEND, APPROVE = (
    Scope.BILLING_READ,
    Scope.BILLING_WRITE,
    Scope.BILLING_SPEND,
    Scope.BILLING_APPROVE,
)

# The scope each root field needs; None: any valid token.
REQUIRED: dict[str, Scope | None] = {
    "Query.viewer": None,
    "Query.node": None,  # null without billing:read, like a missing id (test_tenants.py)
    "Query.wallet": READ,
    "Query.transactions": READ,
    "Query.paymentMethods": READ,
    "Query.topups": READ,
    "Query.price": READ,
    "Query.reservations": READ,
    "Query.approvals": READ,
    "Query.invoices": READ,
    "Query.balanceHistory": READ,
    "Query.webhookEndpoints": READ,
    "Mutation.createSetupIntent": WRITE,
    "Mutation.attachPaymentMethod": WRITE,
    "Mutation.setDefaultPaymentMethod": WRITE,
    "Mutation.detachPaymentMethod": WRITE,
    "Mutation.topup": WRITE,
    "Mutation.resumeTopup": WRITE,
    "Mutation.setAutoTopup": WRITE,
    "Mutation.reserveCredits": SPEND,
    "Mutation.captureReservation": SPEND,
    "Mutation.releaseReservation": SPEND,
    "Mutation.refundReservation": SPEND,
    "Mutation.approveSpend": APPROVE,
    "Mutation.rejectSpend": APPROVE,
    "Mutation.setBalanceAlert": WRITE,
    "Mutation.createWebhookEndpoint": WRITE,
    "Mutation.updateWebhookEndpoint": WRITE,
    "Mutation.deleteWebhookEndpoint": WRITE,
    "Mutation.rotateWebhookEndpointSecret": WRITE,
    "Mutation.sendTestWebhook": WRITE,
    "Subscription.walletUpdated": READ,
}


async def move_the_wallet(make: Factory, organization_id: int) -> None:
    await grant_credits(
        make.app.billing.db, organization_id=organization_id, amount_credits=1, reason="probe"
    )


# What makes each subscription push its first event, so a permitted one can be told apart
# from one that just never answers.
TRIGGERS: dict[str, Callable[[Factory, int], Awaitable[None]]] = {
    "Subscription.walletUpdated": move_the_wallet,
}

# Scalars by name: the smallest value each accepts.
SCALAR_VALUES: dict[str, Any] = {
    "ID": to_global_id("Organization", 999_999),
    "String": "pm_probe",
    "Int": 1,
    "Float": 1.0,
    "Boolean": False,
    "Credits": 100,
    "DateTime": "2026-11-20T09:30:00+00:00",
    "Date": "2026-11-20",
}


@dataclass(frozen=True)
class RootField:
    operation: str  # "query" | "mutation" | "subscription"
    type_name: str
    name: str
    field: GraphQLField

    @property
    def key(self) -> str:
        return f"{self.type_name}.{self.name}"


def root_fields() -> list[RootField]:
    schema = build_schema()._schema
    roots = [
        ("query", schema.query_type),
        ("mutation", schema.mutation_type),
        ("subscription", schema.subscription_type),
    ]
    return [
        RootField(operation, root.name, name, field)
        for operation, root in roots
        if root is not None
        for name, field in root.fields.items()
    ]


ROOT_FIELDS = root_fields()


def minimal_value(type_: GraphQLInputType) -> Any:
    """The smallest value that passes validation: required input fields only."""
    if isinstance(type_, GraphQLNonNull):
        return minimal_value(type_.of_type)
    if isinstance(type_, GraphQLList):
        return []
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return {
            name: minimal_value(field.type)
            for name, field in type_.fields.items()
            if is_required_input_field(field)
        }
    assert isinstance(type_, GraphQLScalarType)
    return SCALAR_VALUES[type_.name]


def probe(root: RootField) -> tuple[str, dict[str, Any]]:
    """A valid document selecting only this root field, and its variables."""
    required = {n: a for n, a in root.field.args.items() if is_required_argument(a)}
    definitions = ", ".join(f"${n}: {a.type}" for n, a in required.items())
    arguments = ", ".join(f"{n}: ${n}" for n in required)
    selection = " { __typename }" if is_composite_type(get_named_type(root.field.type)) else ""
    head = f"{root.operation} Probe({definitions})" if required else root.operation
    call = f"{root.name}({arguments})" if required else root.name
    variables = {n: minimal_value(a.type) for n, a in required.items()}
    return f"{head} {{ {call}{selection} }}", variables


@dataclass
class Tokens:
    """One token per scope, each holding that scope alone; the organization ones share one."""

    organization_id: int
    by_scope: dict[Scope, str]

    def holding(self, scope: Scope) -> str:
        return self.by_scope[scope]

    def lacking(self, scope: Scope) -> list[str]:
        return [token for held, token in self.by_scope.items() if held != scope]


@pytest.fixture
async def tokens(make: Factory) -> Tokens:
    org = await make.org(credits=10_000)
    by_scope = {scope: await make.token(org.pk, scope.value) for scope in (READ, WRITE, APPROVE)}
    by_scope[SPEND] = await make.token(None, SPEND.value)
    return Tokens(org.pk, by_scope)


def forbidden_paths(body: dict[str, Any]) -> list[list[Any]]:
    return [
        e.get("path", [])
        for e in body.get("errors", [])
        if e.get("extensions", {}).get("code") == "FORBIDDEN"
    ]


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    return message


async def first_event(
    make: Factory,
    token: str,
    document: str,
    variables: dict[str, Any],
    trigger: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """The subscription's first answer as a response body: an immediate refusal, or the event
    the trigger causes."""
    url = make.app.graphql_url.replace("http://", "ws://", 1)
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        assert (await receive(ws))["type"] == "connection_ack"
        payload = {"query": document, "variables": variables}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        # A ping's pong comes after anything the server answered the subscribe with.
        await ws.send(json.dumps({"type": "ping"}))
        message = await receive(ws)
        if message["type"] == "pong":
            await trigger()
            message = await receive(ws)
    if message["type"] == "error":
        return {"errors": message["payload"]}
    assert message["type"] == "next", message
    body: dict[str, Any] = message["payload"]
    return body


async def answer(make: Factory, tokens: Tokens, root: RootField, token: str) -> dict[str, Any]:
    document, variables = probe(root)
    if root.operation != "subscription":
        response = await make.client(token).post(document, variables)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
    assert root.key in TRIGGERS, f"{root.key} has no trigger recorded in TRIGGERS"
    trigger = TRIGGERS[root.key]
    return await first_event(
        make, token, document, variables, lambda: trigger(make, tokens.organization_id)
    )


@pytest.mark.parametrize("root", ROOT_FIELDS, ids=lambda r: r.key)
async def test_a_token_without_the_scope_is_forbidden_and_one_with_it_is_not(
    make: Factory, tokens: Tokens, root: RootField
) -> None:
    assert root.key in REQUIRED, f"{root.key} has no required scope recorded in REQUIRED"
    scope = REQUIRED[root.key]
    holders = list(tokens.by_scope.values()) if scope is None else [tokens.holding(scope)]
    lacking = [] if scope is None else tokens.lacking(scope)

    for token in holders:
        body = await answer(make, tokens, root, token)
        assert "errors" not in body, (token[:13], body)
    for token in lacking:
        body = await answer(make, tokens, root, token)
        assert forbidden_paths(body) == [[root.name]], (token[:13], body)
        assert len(body["errors"]) == 1, body


def test_every_recorded_scope_names_a_root_field_of_the_schema() -> None:
    assert set(REQUIRED) == {root.key for root in ROOT_FIELDS}


MIXED = """
query Mixed($id: ID!) {
  viewer { scopes }
  node(id: $id) { id }
  wallet { balanceCredits }
}
"""


async def test_a_forbidden_field_beside_permitted_ones_blanks_only_itself(
    make: Factory, tokens: Tokens
) -> None:
    writer = make.client(tokens.holding(WRITE))

    response = await writer.post(MIXED, {"id": to_global_id("Wallet", 1)})

    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"viewer": {"scopes": ["BILLING_WRITE"]}, "node": None, "wallet": None}
    [error] = body["errors"]
    assert (error["path"], error["extensions"]["code"]) == (["wallet"], "FORBIDDEN")
