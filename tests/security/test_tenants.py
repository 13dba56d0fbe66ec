"""Tenant isolation: another organization's object, by global id in `node` or by id
in a mutation input, answers exactly like a missing one.

Not here, on purpose: capture/release/refund take a reservation id from a service token,
which acts for every organization by design; idempotency keys being per organization is
tests/e2e/test_topup.py::test_keys_are_per_organization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Factory, Org
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.graphql.ids import from_global_id, to_global_id
from gql_billing.models import Plan
from support.api import GraphQLClient
from support.cards import save_card
from support.emulator import StripeEmulator

NODE = """
query Node($id: ID!) { node(id: $id) { __typename id } }
"""

IDS = """
{ viewer { organization { id } }
  wallet { id }
  transactions(first: 1) { edges { node { id } } }
  paymentMethods { id stripeId }
  topups(first: 1) { edges { node { id } } } }
"""

TOPUP = """
mutation {
  topup(input: {audCents: 10000, idempotencyKey: "tenant-a"}) {
    __typename ... on TopupSuccess { topupAttemptId } ... on Problem { detail }
  }
}
"""

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id } }
    ... on ApprovalRequired { approval { id } }
    ... on Problem { detail }
  }
}
"""

CAPTURE = """
mutation Capture($id: ID!) {
  captureReservation(input: {reservationId: $id}) { __typename }
}
"""

INVOICES = "{ invoices(first: 1) { edges { node { id } } } }"

PROBLEM = "__typename ... on Problem { title status detail }"
ATTACH = f"""
mutation Attach($pm: String!) {{
  attachPaymentMethod(input: {{paymentMethodId: $pm}}) {{ {PROBLEM} }}
}}
"""
SET_DEFAULT = f"""
mutation SetDefault($pm: String!) {{
  setDefaultPaymentMethod(input: {{paymentMethodId: $pm}}) {{ {PROBLEM} }}
}}
"""
DETACH = f"""
mutation Detach($pm: String!) {{
  detachPaymentMethod(input: {{paymentMethodId: $pm}}) {{ {PROBLEM} }}
}}
"""
RESUME = f"""
mutation Resume($id: ID!) {{ resumeTopup(input: {{topupAttemptId: $id}}) {{ {PROBLEM} }} }}
"""
APPROVE = f"""
mutation Approve($id: ID!) {{ approveSpend(input: {{approvalId: $id}}) {{ {PROBLEM} }} }}
"""
REJECT = f"""
mutation Reject($id: ID!) {{ rejectSpend(input: {{approvalId: $id}}) {{ {PROBLEM} }} }}
"""

OWNER_STATE = """
{ paymentMethods { stripeId isDefault }
  approvals(first: 5) { edges { node { id status } } } }
"""

KINDS = [
    "Organization",
    "Wallet",
    "Transaction",
    "PaymentMethod",
    "TopupAttempt",
    "Reservation",
    "Approval",
    "Invoice",
]
ALL_ORG_SCOPES = "billing:read,billing:write,billing:approve"


@dataclass
class Owned:
    """Organization A's objects: global ids by kind, and the card's Stripe id. Invoices need
    an enterprise plan, which cannot top up: A's invoice is its enterprise sibling's."""

    owner: Org
    enterprise: GraphQLClient
    ids: dict[str, str]
    card: str

    def reader_of(self, kind: str) -> GraphQLClient:
        return self.enterprise if kind == "Invoice" else self.owner.api


async def service(make: Factory) -> GraphQLClient:
    return make.client(await make.token(None, "billing:spend"))


async def reserve(spender: GraphQLClient, org_id: str, amount: int, ref: str) -> dict[str, Any]:
    input = {
        "organizationId": org_id,
        "amountCredits": amount,
        "reference": ref,
        "idempotencyKey": ref,
    }
    result: dict[str, Any] = (await spender(RESERVE, {"input": input}))["reserveCredits"]
    assert result["__typename"] in ("ReservationCreated", "ApprovalRequired"), result
    return result


async def enterprise_invoice(make: Factory, spender: GraphQLClient) -> tuple[GraphQLClient, str]:
    row = await create_organization(make.app.billing.db, name="A Enterprise", plan=Plan.ENTERPRISE)
    assert row.id is not None
    org_id = to_global_id("Organization", row.id)
    created = await reserve(spender, org_id, 500, "invoiced")
    await spender(CAPTURE, {"id": created["reservation"]["id"]})
    reader = make.client(await make.token(row.id, "billing:read"))
    edges = (await reader(INVOICES))["invoices"]["edges"]
    return reader, edges[0]["node"]["id"]


@pytest.fixture
async def owned(make: Factory, emulator: StripeEmulator) -> Owned:
    db = make.app.billing.db
    row = await create_organization(db, name="A", approval_threshold_credits=50_000)
    assert row.id is not None
    await grant_credits(db, organization_id=row.id, amount_credits=100_000, reason="seed")
    token = await make.token(row.id, ALL_ORG_SCOPES)
    owner = Org(row.id, to_global_id("Organization", row.id), token, make.client(token))
    card = await save_card(owner.api, emulator)
    topup = (await owner.api(TOPUP))["topup"]
    assert topup["__typename"] == "TopupSuccess", topup
    spender = await service(make)
    held = await reserve(spender, owner.id, 100, "held")
    pending = await reserve(spender, owner.id, 60_000, "needs approval")
    data = await owner.api(IDS)
    enterprise, invoice = await enterprise_invoice(make, spender)
    ids = {
        "Organization": data["viewer"]["organization"]["id"],
        "Wallet": data["wallet"]["id"],
        "Transaction": data["transactions"]["edges"][0]["node"]["id"],
        "PaymentMethod": data["paymentMethods"][0]["id"],
        "TopupAttempt": topup["topupAttemptId"],
        "Reservation": held["reservation"]["id"],
        "Approval": pending["approval"]["id"],
        "Invoice": invoice,
    }
    return Owned(owner, enterprise, ids, card)


@pytest.fixture
async def other(make: Factory) -> Org:
    return await make.org(credits=100_000, name="B", scopes=ALL_ORG_SCOPES)


def missing_id(global_id: str) -> str:
    """An id of the same kind that names nothing."""
    parsed = from_global_id(global_id)
    assert parsed is not None
    return to_global_id(parsed[0], 999_999)


@pytest.mark.parametrize("kind", KINDS)
async def test_node_of_another_organization_is_like_a_missing_one(
    make: Factory, owned: Owned, other: Org, kind: str
) -> None:
    global_id = owned.ids[kind]
    assert (await owned.reader_of(kind)(NODE, {"id": global_id}))["node"]["__typename"] == kind

    theirs = await other.api.post(NODE, {"id": global_id})
    missing = await other.api.post(NODE, {"id": missing_id(global_id)})

    assert theirs.status_code == missing.status_code == 200
    assert theirs.json() == missing.json() == {"data": {"node": None}}


def answer(body: dict[str, Any], sent: str) -> dict[str, Any]:
    """A mutation's problem with the id it was sent replaced, so two ids can be compared."""
    [result] = body["data"].values()
    return {k: str(v).replace(sent, "<id>") for k, v in result.items()}


async def assert_like_missing(
    api: GraphQLClient, document: str, variable: str, theirs: str, missing: str
) -> None:
    for_theirs = (await api.post(document, {variable: theirs})).json()
    for_missing = (await api.post(document, {variable: missing})).json()

    assert answer(for_theirs, theirs)["__typename"] == "NotFound", for_theirs
    assert answer(for_theirs, theirs) == answer(for_missing, missing)


@pytest.mark.parametrize(
    "document", [ATTACH, SET_DEFAULT, DETACH], ids=["attach", "default", "detach"]
)
async def test_another_organizations_card_is_like_a_missing_one(
    owned: Owned, other: Org, document: str
) -> None:
    await assert_like_missing(other.api, document, "pm", owned.card, "pm_missing0000000000000")

    state = await owned.owner.api(OWNER_STATE)
    assert state["paymentMethods"] == [{"stripeId": owned.card, "isDefault": True}]


async def test_another_organizations_topup_attempt_is_like_a_missing_one(
    owned: Owned, other: Org
) -> None:
    theirs = owned.ids["TopupAttempt"]

    await assert_like_missing(other.api, RESUME, "id", theirs, missing_id(theirs))


@pytest.mark.parametrize("document", [APPROVE, REJECT], ids=["approve", "reject"])
async def test_another_organizations_approval_is_like_a_missing_one(
    owned: Owned, other: Org, document: str
) -> None:
    theirs = owned.ids["Approval"]

    await assert_like_missing(other.api, document, "id", theirs, missing_id(theirs))

    state = await owned.owner.api(OWNER_STATE)
    assert [e["node"] for e in state["approvals"]["edges"]] == [{"id": theirs, "status": "PENDING"}]
