"""The billing events a customer's endpoint hears, end to end: a spend waiting for approval
and its decision, an enterprise invoice finalized at the month boundary, a declined manual
top-up; each delivered to a real receiver on a loopback port, its signature verified with
the endpoint's secret, and its delivery DELIVERED. Also `node(id:)` for endpoints and
deliveries."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from conftest import Factory, Org
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.clock import FakeClock
from gql_billing.graphql.ids import to_global_id
from gql_billing.models import Plan
from gql_billing.worker import Worker
from support.api import GraphQLClient
from support.app_server import ServedApp
from support.cards import DECLINED_ON_CHARGE, save_card
from support.emulator import StripeEmulator
from support.receiver import Receiver, receiver

CREATE = """
mutation Create($url: String!) {
  createWebhookEndpoint(input: {url: $url}) {
    __typename ... on WebhookEndpointCreated { secret endpoint { id } }
  }
}
"""
DELIVERIES = """
{ webhookEndpoints { deliveries(first: 20) { edges { node {
  id eventId eventType status attempts lastResponseStatus
} } } } }
"""
RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id } }
    ... on ApprovalRequired { approval { id status reservation { id } } }
  }
}
"""
CAPTURE = """
mutation Capture($id: ID!, $amount: Credits) {
  captureReservation(input: {reservationId: $id, amountCredits: $amount}) { __typename }
}
"""
DECISION = """
  __typename ... on ApprovalDecided { approval { id status decidedAt reason } }
"""
APPROVE = "mutation A($id: ID!) { approveSpend(input: {approvalId: $id}) {" + DECISION + "} }"
REJECT = (
    "mutation R($id: ID!, $reason: String) {"
    " rejectSpend(input: {approvalId: $id, reason: $reason}) {" + DECISION + "} }"
)
INVOICES = "{ invoices(first: 10) { edges { node { id period status totalCredits } } } }"
TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename ... on CardDeclined { declineCode } ... on Problem { detail }
  }
}
"""
TOPUPS = "{ topups(first: 10) { edges { node { id status paymentIntentId failureReason } } } }"
NODE = """
query Node($id: ID!) {
  node(id: $id) {
    __typename id
    ... on WebhookEndpoint { url enabled }
    ... on WebhookDelivery { eventId eventType status }
  }
}
"""
SEND_TEST = """
mutation Test($id: ID!) {
  sendTestWebhook(input: {id: $id}) { __typename ... on TestWebhookQueued { delivery { id } } }
}
"""
APPROVER_SCOPES = "billing:read,billing:write,billing:approve"


# -- helpers ------------------------------------------------------------------------------------


async def listen(org: Org, hook: Receiver) -> str:
    """An endpoint for every event at the receiver; its signing secret."""
    created = (await org.api(CREATE, {"url": hook.url}))["createWebhookEndpoint"]
    assert created["__typename"] == "WebhookEndpointCreated", created
    secret: str = created["secret"]
    return secret


async def deliver(app: ServedApp) -> int:
    """The worker's delivery pass (what `gql-billing worker` runs on its own loop)."""
    return await app.billing.webhook_delivery.run_once()


async def deliveries(org: Org) -> list[dict[str, Any]]:
    [endpoint] = (await org.api(DELIVERIES))["webhookEndpoints"]
    return [edge["node"] for edge in endpoint["deliveries"]["edges"]]


async def assert_all_delivered(org: Org, *event_types: str) -> None:
    """Each event was delivered at its first attempt (newest first in `deliveries`)."""
    got = await deliveries(org)
    assert sorted(d["eventType"] for d in got) == sorted(event_types)
    assert {(d["status"], d["attempts"], d["lastResponseStatus"]) for d in got} == {
        ("DELIVERED", 1, 200)
    }


async def gated_org(make: Factory, *, threshold: int, credits: int) -> Org:
    """An organization whose spends above `threshold` wait for approval, with a token that
    may decide them."""
    db = make.app.billing.db
    org = await create_organization(
        db, name="Gated Imagery", plan=Plan.STANDARD, approval_threshold_credits=threshold
    )
    assert org.id is not None
    await grant_credits(db, organization_id=org.id, amount_credits=credits, reason="seed")
    token = await make.token(org.id, APPROVER_SCOPES)
    return Org(org.id, to_global_id("Organization", org.id), token, make.client(token))


async def service(make: Factory) -> GraphQLClient:
    return make.client(await make.token(None, "billing:spend"))


async def reserve(
    api: GraphQLClient, org: Org, amount: int, reference: str, description: str = ""
) -> dict[str, Any]:
    spend = {
        "organizationId": org.id,
        "amountCredits": amount,
        "reference": reference,
        "description": description,
        "idempotencyKey": str(uuid.uuid4()),
    }
    result: dict[str, Any] = (await api(RESERVE, {"input": spend}))["reserveCredits"]
    return result


# -- approvals ----------------------------------------------------------------------------------


async def test_a_spend_above_the_threshold_sends_approval_requested(
    app: ServedApp, make: Factory, clock: FakeClock
) -> None:
    # given an approval threshold of 500 and an endpoint listening
    org = await gated_org(make, threshold=500, credits=10_000)
    with receiver() as hook:
        secret = await listen(org, hook)

        # when a service reserves 600 for the organization
        pending = await reserve(await service(make), org, 600, "order-big", "Survey tasking")
        assert pending["__typename"] == "ApprovalRequired", pending
        assert await deliver(app) == 1

        # then the receiver gets the pending approval, signed with the endpoint's secret
        [payload] = hook.of_type("approval.requested", secret)
    approval = pending["approval"]
    assert payload["type"] == "approval.requested"
    assert payload["data"] == {
        "approval_id": approval["id"],
        "reservation_id": approval["reservation"]["id"],
        "organization_id": org.id,
        "status": "pending",
        "amount_credits": 600,
        "reference": "order-big",
        "description": "Survey tasking",
        "requested_at": clock.now().isoformat(),
        "decided_at": None,
        "reason": None,
    }
    await assert_all_delivered(org, "APPROVAL_REQUESTED")


async def test_approving_and_rejecting_send_approval_decided(
    app: ServedApp, make: Factory, clock: FakeClock
) -> None:
    org = await gated_org(make, threshold=500, credits=10_000)
    spender = await service(make)
    with receiver() as hook:
        secret = await listen(org, hook)
        first = (await reserve(spender, org, 600, "order-1"))["approval"]
        second = (await reserve(spender, org, 900, "order-2"))["approval"]
        requested_at = clock.now().isoformat()

        # when an approver approves one and, a minute later, rejects the other
        clock.advance(timedelta(minutes=1))
        approved = (await org.api(APPROVE, {"id": first["id"]}))["approveSpend"]
        clock.advance(timedelta(minutes=1))
        rejected = (await org.api(REJECT, {"id": second["id"], "reason": "Over budget"}))[
            "rejectSpend"
        ]
        assert (approved["__typename"], rejected["__typename"]) == (
            "ApprovalDecided",
            "ApprovalDecided",
        )
        assert await deliver(app) == 4

        decided = hook.of_type("approval.decided", secret)
    by_id = {p["data"]["approval_id"]: p for p in decided}
    assert sorted(by_id) == sorted([first["id"], second["id"]])
    assert by_id[first["id"]]["data"] == {
        "approval_id": first["id"],
        "reservation_id": first["reservation"]["id"],
        "organization_id": org.id,
        "status": "approved",
        "amount_credits": 600,
        "reference": "order-1",
        "description": "",
        "requested_at": requested_at,
        "decided_at": (clock.now() - timedelta(minutes=1)).isoformat(),
        "reason": None,
    }
    assert by_id[second["id"]]["data"] == {
        "approval_id": second["id"],
        "reservation_id": second["reservation"]["id"],
        "organization_id": org.id,
        "status": "rejected",
        "amount_credits": 900,
        "reference": "order-2",
        "description": "",
        "requested_at": requested_at,
        "decided_at": clock.now().isoformat(),
        "reason": "Over budget",
    }
    await assert_all_delivered(
        org, "APPROVAL_REQUESTED", "APPROVAL_REQUESTED", "APPROVAL_DECIDED", "APPROVAL_DECIDED"
    )


# -- invoices -----------------------------------------------------------------------------------


async def test_the_month_boundary_sends_invoice_finalized(
    app: ServedApp, make: Factory, clock: FakeClock
) -> None:
    # given an enterprise organization that spent 700 in November
    org = await make.org(plan=Plan.ENTERPRISE)
    spender = await service(make)
    with receiver() as hook:
        secret = await listen(org, hook)
        held = await reserve(spender, org, 700, "tasking-1")
        assert held["__typename"] == "ReservationCreated", held
        captured = await spender(CAPTURE, {"id": held["reservation"]["id"], "amount": 700})
        assert captured["captureReservation"]["__typename"] == "ReservationCaptured"
        assert await deliver(app) == 0  # an open invoice is no news

        # when December begins and the worker ticks
        clock.advance(timedelta(days=11))
        assert (await Worker(app.billing).tick()).invoices_finalized == 1
        assert await deliver(app) == 1

        [payload] = hook.of_type("invoice.finalized", secret)
    [invoice] = [edge["node"] for edge in (await org.api(INVOICES))["invoices"]["edges"]]
    assert (invoice["period"], invoice["status"]) == ("2026-11", "FINALIZED")
    assert payload["data"] == {
        "invoice_id": invoice["id"],
        "organization_id": org.id,
        "period": "2026-11",
        "status": "finalized",
        "total_credits": 700,
        "finalized_at": clock.now().isoformat(),
    }
    await assert_all_delivered(org, "INVOICE_FINALIZED")


# -- top-ups ------------------------------------------------------------------------------------


async def test_a_declined_manual_topup_sends_topup_failed(
    app: ServedApp, make: Factory, emulator: StripeEmulator
) -> None:
    # given a card that is declined when charged
    org = await make.org(credits=1_000)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    with receiver() as hook:
        secret = await listen(org, hook)

        # when the customer tops up by hand
        key = str(uuid.uuid4())
        declined = (await org.api(TOPUP, {"input": {"audCents": 10_000, "idempotencyKey": key}}))[
            "topup"
        ]
        assert declined["__typename"] == "CardDeclined", declined
        assert await deliver(app) == 1

        # then the receiver hears of the failure, as the top-up reads
        [payload] = hook.of_type("topup.failed", secret)
    [attempt] = [edge["node"] for edge in (await org.api(TOPUPS))["topups"]["edges"]]
    assert attempt["status"] == "FAILED"
    assert attempt["failureReason"]
    assert payload["data"] == {
        "topup_attempt_id": attempt["id"],
        "organization_id": org.id,
        "trigger": "manual",
        "status": "failed",
        "aud_cents": 10_000,
        "credits_granted": 0,
        "bonus_credits": 0,
        "new_balance": None,
        "payment_intent_id": attempt["paymentIntentId"],
        "decline_code": declined["declineCode"],
        "failure_reason": attempt["failureReason"],
    }
    await assert_all_delivered(org, "TOPUP_FAILED")


# -- node(id:) ----------------------------------------------------------------------------------


async def test_node_resolves_the_callers_endpoints_and_deliveries_only(
    app: ServedApp, make: Factory
) -> None:
    owner = await make.org(name="Owner")
    other = await make.org(name="Other")
    with receiver() as hook:
        created = (await owner.api(CREATE, {"url": hook.url}))["createWebhookEndpoint"]
        endpoint_id = created["endpoint"]["id"]
        queued = (await owner.api(SEND_TEST, {"id": endpoint_id}))["sendTestWebhook"]
        delivery_id = queued["delivery"]["id"]
        await deliver(app)
    [delivery] = await deliveries(owner)
    assert delivery["id"] == delivery_id

    endpoint = (await owner.api(NODE, {"id": endpoint_id}))["node"]
    assert endpoint == {
        "__typename": "WebhookEndpoint",
        "id": endpoint_id,
        "url": hook.url,
        "enabled": True,
    }
    found = (await owner.api(NODE, {"id": delivery_id}))["node"]
    assert found == {
        "__typename": "WebhookDelivery",
        "id": delivery_id,
        "eventId": delivery["eventId"],
        "eventType": "WEBHOOK_TEST",
        "status": "DELIVERED",
    }
    # another organization's are indistinguishable from missing ones
    assert (await other.api(NODE, {"id": endpoint_id}))["node"] is None
    assert (await other.api(NODE, {"id": delivery_id}))["node"] is None
    missing = to_global_id("WebhookEndpoint", 10_000_000)
    assert (await owner.api(NODE, {"id": missing}))["node"] is None
