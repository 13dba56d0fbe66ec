"""Replaying the idempotency key of a spend that waited for approval: the answer reflects the
decision. Still pending or rejected, it is the `ApprovalRequired` of the first answer with the
approval as it stands now; approved, it is the reservation the approval held."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Factory, Org
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.graphql.ids import to_global_id
from support.api import GraphQLClient
from support.invariants import assert_invariants

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id status amountCredits } }
    ... on ApprovalRequired {
      approval { id status amountCredits reason reservation { id status } }
    }
    ... on Problem { title detail }
  }
}
"""
DECIDE = """
mutation Decide($input: DecideApprovalInput!, $approve: Boolean!) {
  approve: approveSpend(input: $input) @include(if: $approve) { __typename }
  reject: rejectSpend(input: $input) @skip(if: $approve) { __typename }
}
"""
STATE = """
{ wallet { balanceCredits reservedCredits availableCredits }
  reservations(first: 10) { edges { node { id status } } } }
"""
SPEND = 700


async def reserve(service: GraphQLClient, org: Org) -> dict[str, Any]:
    spend = {"organizationId": org.id, "amountCredits": SPEND, "reference": "order-9"}
    data = await service(RESERVE, {"input": {**spend, "idempotencyKey": "order-9"}})
    return data["reserveCredits"]  # type: ignore[no-any-return]


async def decide(org: Org, approval_id: str, *, approve: bool) -> str:
    data = await org.api(
        DECIDE, {"input": {"approvalId": approval_id, "reason": "over budget"}, "approve": approve}
    )
    return str(data["approve" if approve else "reject"]["__typename"])


@pytest.fixture
async def org(make: Factory) -> Org:
    """An organization whose spends above 500 credits wait for a billing:approve decision."""
    db = make.app.billing.db
    row = await create_organization(db, name="Gated Imagery", approval_threshold_credits=500)
    assert row.id is not None
    await grant_credits(db, organization_id=row.id, amount_credits=10_000, reason="seed")
    token = await make.token(row.id, "billing:read,billing:approve")
    return Org(row.id, to_global_id("Organization", row.id), token, make.client(token))


@pytest.fixture
async def service(make: Factory) -> GraphQLClient:
    return make.client(await make.token(None, "billing:spend"))


async def test_replaying_a_pending_spends_key_answers_approval_required_again(
    org: Org, service: GraphQLClient
) -> None:
    first = await reserve(service, org)
    replay = await reserve(service, org)

    assert first["__typename"] == "ApprovalRequired", first
    assert replay == first
    assert (first["approval"]["status"], first["approval"]["reservation"]["status"]) == (
        "PENDING",
        "PENDING_APPROVAL",
    )


async def test_replaying_a_rejected_spends_key_answers_its_rejected_approval(
    make: Factory, org: Org, service: GraphQLClient
) -> None:
    # given a spend that waited for approval and was rejected
    first = await reserve(service, org)
    assert await decide(org, first["approval"]["id"], approve=False) == "ApprovalDecided"

    # when the service sends the same key again (a retry after a timeout, or polling)
    replay = await reserve(service, org)

    # then it hears the original outcome with the decision, never that a reservation was made
    assert replay["__typename"] == "ApprovalRequired", replay
    approval = replay["approval"]
    assert approval["id"] == first["approval"]["id"]
    assert (approval["status"], approval["reason"], approval["amountCredits"]) == (
        "REJECTED",
        "over budget",
        SPEND,
    )
    assert approval["reservation"] == {
        "id": first["approval"]["reservation"]["id"],
        "status": "REJECTED",
    }
    # and nothing was held, then or now
    state = await org.api(STATE)
    assert state["wallet"] == {
        "balanceCredits": 10_000,
        "reservedCredits": 0,
        "availableCredits": 10_000,
    }
    assert [e["node"]["status"] for e in state["reservations"]["edges"]] == ["REJECTED"]
    await assert_invariants(make.app.billing.db)


async def test_replaying_an_approved_spends_key_answers_the_held_reservation(
    make: Factory, org: Org, service: GraphQLClient
) -> None:
    # given a spend that waited for approval and was approved
    first = await reserve(service, org)
    assert await decide(org, first["approval"]["id"], approve=True) == "ApprovalDecided"

    # when the service sends the same key again
    replay = await reserve(service, org)

    # then it hears of the reservation the approval held, held once
    assert replay["__typename"] == "ReservationCreated", replay
    assert replay["reservation"] == {
        "id": first["approval"]["reservation"]["id"],
        "status": "HELD",
        "amountCredits": SPEND,
    }
    state = await org.api(STATE)
    assert state["wallet"]["reservedCredits"] == SPEND
    await assert_invariants(make.app.billing.db)
