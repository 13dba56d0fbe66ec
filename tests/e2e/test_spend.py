"""Spend over HTTP against the real app: reserve, settle once, card holds, enterprise
invoices, approvals, card hold expiry and the read side."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from conftest import Factory, Org
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.clock import FakeClock
from gql_billing.graphql.ids import to_global_id
from gql_billing.models import Plan
from gql_billing.worker import Worker
from support.api import GraphQLClient
from support.cards import DECLINED_ON_CHARGE, THREE_D_SECURE, save_card
from support.emulator import StripeEmulator
from support.invariants import assert_invariants
from support.stripe_proxy import FaultProxy

RESERVATION_FIELDS = """
fragment R on Reservation {
  id status billingMode amountCredits capturedCredits reference description paymentIntentId
  createdAt settledAt
}
"""
FRAGMENTS = (
    RESERVATION_FIELDS
    + """
fragment W on Wallet { balanceCredits reservedCredits availableCredits }
"""
)

RESERVE = (
    """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { billingMode reservation { ...R } wallet { ...W } }
    ... on ApprovalRequired {
      approval { id status amountCredits reference reservation { ...R } }
    }
    ... on InsufficientCredits { availableCredits requestedCredits }
    ... on AuthenticationRequired {
      clientSecret paymentIntentId paymentMethodId requiresAction
    }
    ... on CardDeclined { declineCode }
    ... on InvalidInput { field }
    ... on Problem { title httpStatus: status detail }
  }
}
"""
    + FRAGMENTS
)

CAPTURE = (
    """
mutation Capture($input: CaptureReservationInput!) {
  captureReservation(input: $input) {
    __typename
    ... on ReservationCaptured { billingMode reservation { ...R } wallet { ...W } }
    ... on InvalidInput { field }
    ... on Problem { title httpStatus: status detail }
  }
}
"""
    + FRAGMENTS
)

RELEASE = (
    """
mutation Release($input: ReleaseReservationInput!) {
  releaseReservation(input: $input) {
    __typename
    ... on ReservationReleased { reservation { ...R } wallet { ...W } }
    ... on Problem { title httpStatus: status detail }
  }
}
"""
    + FRAGMENTS
)

REFUND = (
    """
mutation Refund($input: RefundReservationInput!) {
  refundReservation(input: $input) {
    __typename
    ... on ReservationRefunded { reservation { ...R } wallet { ...W } }
    ... on Problem { title httpStatus: status detail }
  }
}
"""
    + FRAGMENTS
)

DECISION = """
  __typename
  ... on ApprovalDecided {
    approval { id status amountCredits reason decidedAt reservation { ...R } }
  }
  ... on InsufficientCredits { availableCredits requestedCredits }
  ... on Problem { title httpStatus: status detail }
"""

APPROVE = (
    "mutation Approve($input: DecideApprovalInput!) { approveSpend(input: $input) {"
    + DECISION
    + "} }"
    + RESERVATION_FIELDS
)

REJECT = (
    "mutation Reject($input: DecideApprovalInput!) { rejectSpend(input: $input) {"
    + DECISION
    + "} }"
    + RESERVATION_FIELDS
)

APPROVE_3DS = """
mutation Approve($input: DecideApprovalInput!) {
  approveSpend(input: $input) {
    __typename
    ... on AuthenticationRequired { clientSecret paymentIntentId paymentMethodId }
    ... on CardDeclined { declineCode }
    ... on ApprovalDecided { approval { id status } }
    ... on Problem { title httpStatus: status detail }
  }
}
"""

LEDGER = """
{ wallet { balanceCredits reservedCredits availableCredits }
  transactions(first: 100) { edges { node {
    kind amountCredits balanceDeltaCredits availableDeltaCredits
    balanceAfterCredits availableAfterCredits reference
    reservation { id status } } } } }
"""

RESERVATIONS = (
    """
query Reservations($status: ReservationStatus) {
  reservations(first: 50, status: $status) { edges { node { ...R } } }
}
"""
    + RESERVATION_FIELDS
)

APPROVALS = """
query Approvals($status: ApprovalStatus) {
  approvals(first: 50, status: $status) { edges { node {
    id status amountCredits reference reason reservation { id status } } } }
}
"""

INVOICES = """
{ invoices(first: 10) { edges { node {
    id period status totalCredits total { amount currency }
    lines { reference amountCredits } } } } }
"""

NODE = """
query Node($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Reservation { reservationStatus: status amountCredits }
    ... on Approval { approvalStatus: status amountCredits }
    ... on Invoice { period totalCredits }
  }
}
"""

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) { __typename ... on Problem { title httpStatus: status detail } }
}
"""

ORG_SCOPES = "billing:read,billing:write,billing:approve"


# -- helpers ------------------------------------------------------------------------------------


async def service_client(make: Factory) -> GraphQLClient:
    return make.client(await make.token(None, "billing:spend"))


async def approval_org(
    make: Factory,
    *,
    threshold: int,
    credits: int = 0,
    plan: Plan = Plan.STANDARD,
    name: str = "Gated Imagery",
) -> Org:
    """An organization with an approval gate and a token that may decide."""
    db = make.app.billing.db
    org = await create_organization(db, name=name, plan=plan, approval_threshold_credits=threshold)
    assert org.id is not None
    if credits:
        await grant_credits(db, organization_id=org.id, amount_credits=credits, reason="seed")
    token = await make.token(org.id, ORG_SCOPES)
    return Org(org.id, to_global_id("Organization", org.id), token, make.client(token))


async def reserve(
    api: GraphQLClient,
    org: Org,
    amount: int,
    key: str | None,
    *,
    reference: str = "order-1",
    **extra: Any,
) -> dict[str, Any]:
    spend = {"organizationId": org.id, "amountCredits": amount, "reference": reference, **extra}
    if key is not None:
        spend["idempotencyKey"] = key
    data = await api(RESERVE, {"input": spend})
    return data["reserveCredits"]  # type: ignore[no-any-return]


async def capture(api: GraphQLClient, reservation_id: str, amount: int | None) -> dict[str, Any]:
    spend: dict[str, Any] = {"reservationId": reservation_id}
    if amount is not None:
        spend["amountCredits"] = amount
    return (await api(CAPTURE, {"input": spend}))["captureReservation"]  # type: ignore[no-any-return]


async def release(api: GraphQLClient, reservation_id: str) -> dict[str, Any]:
    data = await api(RELEASE, {"input": {"reservationId": reservation_id, "reason": "cancelled"}})
    return data["releaseReservation"]  # type: ignore[no-any-return]


async def refund(api: GraphQLClient, reservation_id: str) -> dict[str, Any]:
    data = await api(REFUND, {"input": {"reservationId": reservation_id, "reason": "returned"}})
    return data["refundReservation"]  # type: ignore[no-any-return]


async def approve(org: Org, approval_id: str) -> dict[str, Any]:
    data = await org.api(APPROVE, {"input": {"approvalId": approval_id}})
    return data["approveSpend"]  # type: ignore[no-any-return]


async def reject(org: Org, approval_id: str, reason: str | None = None) -> dict[str, Any]:
    data = await org.api(REJECT, {"input": {"approvalId": approval_id, "reason": reason}})
    return data["rejectSpend"]  # type: ignore[no-any-return]


async def ledger_of(org: Org) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The wallet and the ledger entries, newest first."""
    data = await org.api(LEDGER)
    return data["wallet"], [edge["node"] for edge in data["transactions"]["edges"]]


async def wallet_of(org: Org) -> dict[str, int]:
    return (await ledger_of(org))[0]


async def reservations_of(org: Org, status: str | None = None) -> list[dict[str, Any]]:
    data = await org.api(RESERVATIONS, {"status": status})
    return [edge["node"] for edge in data["reservations"]["edges"]]


async def approvals_of(org: Org, status: str | None = None) -> list[dict[str, Any]]:
    data = await org.api(APPROVALS, {"status": status})
    return [edge["node"] for edge in data["approvals"]["edges"]]


async def invoices_of(org: Org) -> list[dict[str, Any]]:
    return [edge["node"] for edge in (await org.api(INVOICES))["invoices"]["edges"]]


async def intent(emulator: StripeEmulator, pi: str) -> dict[str, Any]:
    return await asyncio.to_thread(emulator.retrieve_payment_intent, pi)


async def charge_of(emulator: StripeEmulator, pi: str) -> dict[str, Any]:
    """The intent's latest charge (localstripe may render it as an id or an object)."""
    latest = (await intent(emulator, pi))["latest_charge"]
    charge_id = latest if isinstance(latest, str) else latest["id"]
    return await asyncio.to_thread(emulator._call, "GET", f"/v1/charges/{charge_id}")


async def refunds_of(emulator: StripeEmulator, pi: str) -> list[dict[str, Any]]:
    page = await asyncio.to_thread(
        emulator._call, "GET", "/v1/refunds", params={"payment_intent": pi}
    )
    return page["data"]  # type: ignore[no-any-return]


def kinds(entries: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in entries]


def entry(
    kind: str, amount: int, balance_delta: int, available_delta: int, balance: int, available: int
) -> dict[str, Any]:
    return {
        "kind": kind,
        "amountCredits": amount,
        "balanceDeltaCredits": balance_delta,
        "availableDeltaCredits": available_delta,
        "balanceAfterCredits": balance,
        "availableAfterCredits": available,
    }


def figures(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in entry("", 0, 0, 0, 0, 0)}


# -- 1. concurrent reservations never overdraw -----------------------------------------------------


async def test_fifty_concurrent_reservations_hold_exactly_the_balance(make: Factory) -> None:
    # given an organization with 100 credits and an internal service
    org = await make.org(credits=100)
    service = await service_client(make)

    # when 50 spends of 10 credits arrive at once, each with its own key
    results = await asyncio.gather(
        *(reserve(service, org, 10, f"burst-{i}", reference=f"job-{i}") for i in range(50))
    )

    # then exactly ten are held and forty are refused with the real figures
    created = [r for r in results if r["__typename"] == "ReservationCreated"]
    refused = [r for r in results if r["__typename"] == "InsufficientCredits"]
    assert (len(created), len(refused)) == (10, 40), {r["__typename"] for r in results}
    assert {r["billingMode"] for r in created} == {"CREDITS"}
    assert {r["reservation"]["status"] for r in created} == {"HELD"}
    assert {(r["availableCredits"], r["requestedCredits"], r["httpStatus"]) for r in refused} == {
        (0, 10, 402)
    }
    wallet, entries = await ledger_of(org)
    assert wallet == {"balanceCredits": 100, "reservedCredits": 100, "availableCredits": 0}
    assert kinds(entries) == ["RESERVATION"] * 10 + ["ADJUSTMENT"]
    assert len(await reservations_of(org, "HELD")) == 10
    await assert_invariants(make.app.billing.db)


# -- 2. capture, release of the rest, refund ---------------------------------------------------


async def test_capture_charges_and_releases_the_rest_then_refund_returns_it(
    make: Factory,
) -> None:
    # given 1000 credits and a reservation of 100
    org = await make.org(credits=1000)
    service = await service_client(make)
    held = await reserve(service, org, 100, "order-1", description="Scene 42")
    assert held["__typename"] == "ReservationCreated"
    assert held["wallet"] == {
        "balanceCredits": 1000,
        "reservedCredits": 100,
        "availableCredits": 900,
    }
    reservation_id = held["reservation"]["id"]

    # when the order completes for 80
    captured = await capture(service, reservation_id, 80)

    # then 80 is charged and 20 released
    assert captured["__typename"] == "ReservationCaptured"
    assert captured["billingMode"] == "CREDITS"
    assert captured["reservation"]["status"] == "CAPTURED"
    assert (
        captured["reservation"]["amountCredits"],
        captured["reservation"]["capturedCredits"],
    ) == (
        100,
        80,
    )
    assert captured["reservation"]["settledAt"] is not None
    assert captured["wallet"] == {
        "balanceCredits": 920,
        "reservedCredits": 0,
        "availableCredits": 920,
    }
    wallet, entries = await ledger_of(org)
    assert wallet == captured["wallet"]
    assert [figures(e) for e in entries] == [
        entry("RELEASE", 20, 0, 20, 920, 920),
        entry("CHARGE", 80, -80, 0, 920, 900),
        entry("RESERVATION", 100, 0, -100, 1000, 900),
        entry("ADJUSTMENT", 1000, 1000, 1000, 1000, 1000),
    ]
    assert [e["reservation"] for e in entries[:3]] == [
        {"id": reservation_id, "status": "CAPTURED"}
    ] * 3
    assert {e["reference"] for e in entries[:3]} == {"order-1"}
    assert entries[3]["reservation"] is None
    await assert_invariants(make.app.billing.db)

    # when the order is cancelled afterwards
    refunded = await refund(service, reservation_id)

    # then the 80 credits come back
    assert refunded["__typename"] == "ReservationRefunded"
    assert refunded["reservation"]["status"] == "REFUNDED"
    assert refunded["wallet"] == {
        "balanceCredits": 1000,
        "reservedCredits": 0,
        "availableCredits": 1000,
    }
    _, entries = await ledger_of(org)
    assert figures(entries[0]) == entry("REFUND", 80, 80, 80, 1000, 1000)
    assert entries[0]["reservation"] == {"id": reservation_id, "status": "REFUNDED"}
    assert kinds(entries) == ["REFUND", "RELEASE", "CHARGE", "RESERVATION", "ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


async def test_capture_without_an_amount_takes_all_of_it_and_release_returns_it(
    make: Factory,
) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    first = (await reserve(service, org, 300, "a", reference="a"))["reservation"]["id"]
    second = (await reserve(service, org, 200, "b", reference="b"))["reservation"]["id"]

    captured = await capture(service, first, None)
    released = await release(service, second)

    assert captured["reservation"]["capturedCredits"] == 300
    assert released["__typename"] == "ReservationReleased"
    assert released["reservation"]["status"] == "RELEASED"
    assert released["wallet"] == {
        "balanceCredits": 700,
        "reservedCredits": 0,
        "availableCredits": 700,
    }
    _, entries = await ledger_of(org)
    assert kinds(entries) == ["RELEASE", "CHARGE", "RESERVATION", "RESERVATION", "ADJUSTMENT"]
    assert figures(entries[0]) == entry("RELEASE", 200, 0, 200, 700, 700)
    await assert_invariants(make.app.billing.db)


# -- 3. settle once ----------------------------------------------------------------------------


async def test_repeating_a_capture_replays_it_and_other_settlements_are_invalid(
    make: Factory,
) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    reservation_id = (await reserve(service, org, 100, "k"))["reservation"]["id"]

    first = await capture(service, reservation_id, 80)
    again = await capture(service, reservation_id, 80)
    different = await capture(service, reservation_id, 50)
    everything = await capture(service, reservation_id, None)
    released = await release(service, reservation_id)

    assert first["__typename"] == "ReservationCaptured"
    assert again == first
    for late in (different, everything, released):
        assert (late["__typename"], late["httpStatus"]) == ("InvalidState", 409), late
    wallet, entries = await ledger_of(org)
    assert kinds(entries) == ["RELEASE", "CHARGE", "RESERVATION", "ADJUSTMENT"]
    assert wallet == {"balanceCredits": 920, "reservedCredits": 0, "availableCredits": 920}
    await assert_invariants(make.app.billing.db)


async def test_releasing_twice_replays_and_a_later_capture_is_invalid(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    reservation_id = (await reserve(service, org, 100, "k"))["reservation"]["id"]

    first = await release(service, reservation_id)
    again = await release(service, reservation_id)
    late_capture = await capture(service, reservation_id, 100)
    late_refund = await refund(service, reservation_id)

    assert first["__typename"] == "ReservationReleased"
    assert again == first
    assert (late_capture["__typename"], late_capture["httpStatus"]) == ("InvalidState", 409)
    assert late_refund["__typename"] == "InvalidState"
    wallet, entries = await ledger_of(org)
    assert kinds(entries) == ["RELEASE", "RESERVATION", "ADJUSTMENT"]
    assert wallet == {"balanceCredits": 1000, "reservedCredits": 0, "availableCredits": 1000}
    await assert_invariants(make.app.billing.db)


async def test_capture_racing_release_settles_each_reservation_once(make: Factory) -> None:
    # given ten held reservations of 100
    org = await make.org(credits=1000)
    service = await service_client(make)
    ids = [
        (await reserve(service, org, 100, f"race-{i}", reference=f"r-{i}"))["reservation"]["id"]
        for i in range(10)
    ]

    # when each is captured (for 60) and released at the same moment, sent in either order
    async def race(i: int, rid: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if i % 2:
            released, captured = await asyncio.gather(
                release(service, rid), capture(service, rid, 60)
            )
            return captured, released
        captured, released = await asyncio.gather(capture(service, rid, 60), release(service, rid))
        return captured, released

    outcomes = await asyncio.gather(*(race(i, rid) for i, rid in enumerate(ids)))

    # then exactly one settlement wins each race and the loser is told InvalidState
    captured = 0
    for captured_result, released_result in outcomes:
        names = {captured_result["__typename"], released_result["__typename"]}
        assert names in (
            {"ReservationCaptured", "InvalidState"},
            {"ReservationReleased", "InvalidState"},
        ), (captured_result, released_result)
        captured += captured_result["__typename"] == "ReservationCaptured"
    held_now = await reservations_of(org, "HELD")
    assert held_now == []
    wallet, entries = await ledger_of(org)
    assert wallet == {
        "balanceCredits": 1000 - 60 * captured,
        "reservedCredits": 0,
        "availableCredits": 1000 - 60 * captured,
    }
    assert kinds(entries).count("CHARGE") == captured
    # a capture of 60 releases 40; a release releases all 100: one RELEASE each
    assert kinds(entries).count("RELEASE") == 10
    await assert_invariants(make.app.billing.db)


async def test_refund_of_a_held_reservation_and_overcapture_are_refused(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    reservation_id = (await reserve(service, org, 100, "k"))["reservation"]["id"]

    early_refund = await refund(service, reservation_id)
    too_much = await capture(service, reservation_id, 101)
    nothing = await capture(service, reservation_id, 0)
    negative = await capture(service, reservation_id, -5)

    assert (early_refund["__typename"], early_refund["httpStatus"]) == ("InvalidState", 409)
    for bad in (too_much, nothing, negative):
        assert (bad["__typename"], bad["field"], bad["httpStatus"]) == (
            "InvalidInput",
            "amountCredits",
            422,
        )
    wallet, entries = await ledger_of(org)
    assert kinds(entries) == ["RESERVATION", "ADJUSTMENT"]
    assert wallet == {"balanceCredits": 1000, "reservedCredits": 100, "availableCredits": 900}
    # still settleable afterwards; a second refund replays the first
    assert (await capture(service, reservation_id, 100))["__typename"] == "ReservationCaptured"
    first = await refund(service, reservation_id)
    assert await refund(service, reservation_id) == first
    _, entries = await ledger_of(org)
    assert kinds(entries) == ["REFUND", "CHARGE", "RESERVATION", "ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


async def test_settling_an_unknown_reservation_is_not_found(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    await reserve(service, org, 100, "k")
    missing = to_global_id("Reservation", 999_999)
    wrong_type = org.id

    for rid in (missing, wrong_type, "not-an-id"):
        assert (await capture(service, rid, 10))["__typename"] == "NotFound"
        assert (await release(service, rid))["__typename"] == "NotFound"
        assert (await refund(service, rid))["__typename"] == "NotFound"


# -- 4. reserveCredits idempotency and input -------------------------------------------------


async def test_same_key_same_input_replays_the_same_reservation(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)

    first = await reserve(service, org, 100, "same")
    again = await reserve(service, org, 100, "same")

    assert first["__typename"] == "ReservationCreated"
    assert again == first
    _, entries = await ledger_of(org)
    assert kinds(entries) == ["RESERVATION", "ADJUSTMENT"]
    assert len(await reservations_of(org)) == 1
    await assert_invariants(make.app.billing.db)


async def test_key_from_the_idempotency_key_header(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    spend = {"organizationId": org.id, "amountCredits": 100, "reference": "hdr"}

    first = await service(RESERVE, {"input": spend}, headers={"Idempotency-Key": "hdr-1"})
    again = await service(RESERVE, {"input": spend}, headers={"Idempotency-Key": "hdr-1"})

    assert first["reserveCredits"]["__typename"] == "ReservationCreated"
    assert again == first
    assert len(await reservations_of(org)) == 1


async def test_same_key_different_input_is_a_conflict(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    await reserve(service, org, 100, "k")

    other_amount = await reserve(service, org, 200, "k")
    other_reference = await reserve(service, org, 100, "k", reference="order-2")

    for conflict in (other_amount, other_reference):
        assert (conflict["__typename"], conflict["httpStatus"]) == ("IdempotencyConflict", 409)
    wallet, entries = await ledger_of(org)
    assert kinds(entries) == ["RESERVATION", "ADJUSTMENT"]
    assert wallet["reservedCredits"] == 100
    await assert_invariants(make.app.billing.db)


async def test_keys_are_scoped_per_organization(make: Factory) -> None:
    one = await make.org(credits=1000, name="One")
    two = await make.org(credits=1000, name="Two")
    service = await service_client(make)

    first = await reserve(service, one, 100, "shared")
    second = await reserve(service, two, 300, "shared")

    assert first["__typename"] == second["__typename"] == "ReservationCreated"
    assert first["reservation"]["id"] != second["reservation"]["id"]
    assert (await wallet_of(two))["reservedCredits"] == 300


async def test_insufficient_credits_does_not_consume_the_key(make: Factory) -> None:
    # given 50 credits
    org = await make.org(credits=50)
    service = await service_client(make)

    # when 100 are asked for, the operator grants more, and the spend is retried
    refused = await reserve(service, org, 100, "retry-me")
    await grant_credits(
        make.app.billing.db, organization_id=org.pk, amount_credits=100, reason="goodwill"
    )
    retried = await reserve(service, org, 100, "retry-me")

    # then the retry with the same key holds the credits
    assert refused["__typename"] == "InsufficientCredits"
    # (a service token is not told the organization's balance)
    assert (refused["availableCredits"], refused["requestedCredits"]) == (0, 100)
    assert retried["__typename"] == "ReservationCreated"
    assert retried["wallet"] == {
        "balanceCredits": 150,
        "reservedCredits": 100,
        "availableCredits": 50,
    }
    _, entries = await ledger_of(org)
    assert kinds(entries) == ["RESERVATION", "ADJUSTMENT", "ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


async def test_invalid_input_names_the_field_and_holds_nothing(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    unknown = to_global_id("Organization", 999_999)

    cases = [
        (await reserve(service, org, 100, None), "idempotencyKey"),
        (await reserve(service, org, 100, ""), "idempotencyKey"),
        (await reserve(service, org, 100, "k" * 256), "idempotencyKey"),
        (await reserve(service, org, 0, "zero"), "amountCredits"),
        (await reserve(service, org, -10, "negative"), "amountCredits"),
        (await reserve(service, org, 100, "ref", reference="  "), "reference"),
        (await reserve(service, org, 100, "long", description="d" * 501), "description"),
        (await reserve(service, Org(0, unknown, "", service), 100, "nobody"), "organizationId"),
        (await reserve(service, Org(0, "garbage", "", service), 100, "junk"), "organizationId"),
        (
            await reserve(service, Org(0, to_global_id("Wallet", org.pk), "", service), 100, "w"),
            "organizationId",
        ),
    ]

    for result, field in cases:
        assert (result["__typename"], result["field"], result["httpStatus"]) == (
            "InvalidInput",
            field,
            422,
        ), (result, field)
    wallet, entries = await ledger_of(org)
    assert kinds(entries) == ["ADJUSTMENT"]
    assert wallet["reservedCredits"] == 0
    # the zero-amount key was not consumed either
    assert (await reserve(service, org, 10, "zero"))["__typename"] == "ReservationCreated"


# -- 5. FREE plans: card holds -------------------------------------------------------------------


async def test_free_plan_without_credits_holds_the_card_and_settles_at_stripe(
    make: Factory, emulator: StripeEmulator
) -> None:
    # given a free organization with no credits and a saved card
    org = await make.org(plan=Plan.FREE)
    await save_card(org.api, emulator)
    service = await service_client(make)

    # when it reserves 100
    held = await reserve(service, org, 100, "hold-1", reference="scene-1")

    # then the card is authorised for 100, capture later
    assert held["__typename"] == "ReservationCreated", held
    assert held["billingMode"] == held["reservation"]["billingMode"] == "CARD_HOLD"
    assert held["reservation"]["status"] == "HELD"
    pi = held["reservation"]["paymentIntentId"]
    assert pi.startswith("pi_")
    assert held["wallet"] == {"balanceCredits": 0, "reservedCredits": 0, "availableCredits": 0}
    authorised = await intent(emulator, pi)
    assert (authorised["status"], authorised["amount"], authorised["currency"]) == (
        "requires_capture",
        100,
        "aud",
    )
    assert authorised["capture_method"] == "manual"
    assert authorised["metadata"]["reference"] == "scene-1"

    # when 60 of it is captured
    captured = await capture(service, held["reservation"]["id"], 60)

    # then Stripe took 60: localstripe has no amount_received; it captures the whole charge
    # and refunds the uncaptured 40, so the charge shows amount 100, amount_refunded 40
    assert captured["__typename"] == "ReservationCaptured", captured
    assert (captured["reservation"]["status"], captured["reservation"]["capturedCredits"]) == (
        "CAPTURED",
        60,
    )
    assert (await intent(emulator, pi))["status"] == "succeeded"
    charge = await charge_of(emulator, pi)
    assert charge["captured"] is True
    assert charge["amount"] - charge["amount_refunded"] == 60

    # when another hold is released
    other = await reserve(service, org, 250, "hold-2", reference="scene-2")
    other_pi = other["reservation"]["paymentIntentId"]
    released = await release(service, other["reservation"]["id"])

    # then its intent is cancelled
    assert released["__typename"] == "ReservationReleased", released
    assert released["reservation"]["status"] == "RELEASED"
    assert (await intent(emulator, other_pi))["status"] == "canceled"

    # when the captured one is refunded
    refunded = await refund(service, held["reservation"]["id"])

    # then Stripe refunds the 60 captured
    assert refunded["__typename"] == "ReservationRefunded", refunded
    assert refunded["reservation"]["status"] == "REFUNDED"
    refunds = await refunds_of(emulator, pi)
    assert [r["amount"] for r in refunds if r["payment_intent"] == pi] == [60]
    charge = await charge_of(emulator, pi)
    assert charge["amount_refunded"] == charge["amount"] == 100

    # and the wallet was never touched
    wallet, entries = await ledger_of(org)
    assert wallet == {"balanceCredits": 0, "reservedCredits": 0, "availableCredits": 0}
    assert entries == []
    await assert_invariants(make.app.billing.db)


async def test_card_hold_settlements_replay_and_refuse_like_credit_ones(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(plan=Plan.FREE)
    await save_card(org.api, emulator)
    service = await service_client(make)
    held = (await reserve(service, org, 100, "h"))["reservation"]

    first = await capture(service, held["id"], 70)
    again = await capture(service, held["id"], 70)
    different = await capture(service, held["id"], 30)
    late_release = await release(service, held["id"])

    assert first["__typename"] == "ReservationCaptured"
    assert again == first
    assert different["__typename"] == late_release["__typename"] == "InvalidState"
    assert stripe_proxy.count("POST", f"/v1/payment_intents/{held['paymentIntentId']}/capture") == 1
    assert (await ledger_of(org))[1] == []


async def test_card_hold_capture_racing_release_settles_once_at_stripe(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(plan=Plan.FREE)
    await save_card(org.api, emulator)
    service = await service_client(make)
    holds = [
        (await reserve(service, org, 100, f"h{i}", reference=f"r{i}"))["reservation"]
        for i in range(4)
    ]

    outcomes = await asyncio.gather(
        *(
            asyncio.gather(capture(service, hold["id"], 60), release(service, hold["id"]))
            for hold in holds
        )
    )

    for hold, (captured, released) in zip(holds, outcomes, strict=True):
        names = {captured["__typename"], released["__typename"]}
        assert names in (
            {"ReservationCaptured", "InvalidState"},
            {"ReservationReleased", "InvalidState"},
        ), (captured, released)
        expected = "succeeded" if captured["__typename"] == "ReservationCaptured" else "canceled"
        assert (await intent(emulator, hold["paymentIntentId"]))["status"] == expected
    assert await reservations_of(org, "HELD") == []
    assert (await ledger_of(org))[1] == []


async def test_free_plan_without_credits_or_card_needs_a_payment_method(
    make: Factory, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(plan=Plan.FREE)
    service = await service_client(make)

    result = await reserve(service, org, 100, "no-card")

    assert (result["__typename"], result["httpStatus"]) == ("PaymentMethodRequired", 402)
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 0
    assert await reservations_of(org) == []


async def test_free_plan_with_enough_credits_spends_credits(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(plan=Plan.FREE, credits=500)
    await save_card(org.api, emulator)
    service = await service_client(make)

    result = await reserve(service, org, 500, "credits")

    assert result["__typename"] == "ReservationCreated"
    assert result["billingMode"] == "CREDITS"
    assert result["reservation"]["paymentIntentId"] is None
    assert result["wallet"] == {
        "balanceCredits": 500,
        "reservedCredits": 500,
        "availableCredits": 0,
    }
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 0
    await assert_invariants(make.app.billing.db)


async def test_card_hold_needing_three_d_secure_resumes_with_the_same_key(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    # given a free organization whose card needs 3-D Secure
    org = await make.org(plan=Plan.FREE)
    pm = await save_card(org.api, emulator, THREE_D_SECURE)
    service = await service_client(make)

    # when it reserves
    challenge = await reserve(service, org, 400, "3ds")
    not_yet = await reserve(service, org, 400, "3ds")

    # then the customer has to authenticate first
    assert (challenge["__typename"], challenge["httpStatus"]) == ("AuthenticationRequired", 402)
    assert challenge["requiresAction"] is True
    assert challenge["paymentMethodId"] == pm
    pi = challenge["paymentIntentId"]
    assert challenge["clientSecret"].startswith(pi)
    assert not_yet["__typename"] == "AuthenticationRequired"
    assert not_yet["paymentIntentId"] == pi

    # when the challenge is completed and the spend retried with the same key
    await asyncio.to_thread(emulator.authenticate_payment_intent, pi, challenge["clientSecret"])
    held = await reserve(service, org, 400, "3ds")

    # then the same intent holds the card
    assert held["__typename"] == "ReservationCreated", held
    assert held["billingMode"] == "CARD_HOLD"
    assert held["reservation"]["status"] == "HELD"
    assert held["reservation"]["paymentIntentId"] == pi
    assert (await intent(emulator, pi))["status"] == "requires_capture"
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    assert await reserve(service, org, 400, "3ds") == held
    assert [r["id"] for r in await reservations_of(org)] == [held["reservation"]["id"]]
    assert (await ledger_of(org))[1] == []


async def test_card_declined_on_hold_is_replayed(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(plan=Plan.FREE)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    service = await service_client(make)

    first = await reserve(service, org, 100, "declined")
    again = await reserve(service, org, 100, "declined")

    assert (first["__typename"], first["httpStatus"]) == ("CardDeclined", 402)
    assert first["declineCode"] == "card_declined"
    assert again == first
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 1
    assert await reservations_of(org) == []
    wallet, entries = await ledger_of(org)
    assert (wallet["balanceCredits"], entries) == (0, [])


# -- 6. ENTERPRISE: monthly invoices ---------------------------------------------------------


async def test_enterprise_spend_accrues_to_the_monthly_invoice(
    make: Factory, clock: FakeClock
) -> None:
    # given an enterprise organization with no credits at all
    org = await make.org(plan=Plan.ENTERPRISE)
    service = await service_client(make)

    # when it reserves and captures 700
    held = await reserve(service, org, 700, "ent-1", reference="tasking-1")
    assert held["__typename"] == "ReservationCreated", held
    assert held["billingMode"] == "ENTERPRISE"
    assert held["reservation"]["status"] == "HELD"
    captured = await capture(service, held["reservation"]["id"], 700)

    # then November's open invoice carries one line of 700
    assert captured["__typename"] == "ReservationCaptured"
    assert captured["billingMode"] == "ENTERPRISE"
    [invoice] = await invoices_of(org)
    assert {k: invoice[k] for k in ("period", "status", "totalCredits", "total", "lines")} == {
        "period": "2026-11",
        "status": "OPEN",
        "totalCredits": 700,
        "total": {"amount": "7.00", "currency": "AUD"},
        "lines": [{"reference": "tasking-1", "amountCredits": 700}],
    }

    # when it is refunded
    refunded = await refund(service, held["reservation"]["id"])

    # then a negative line brings the total back to zero
    assert refunded["__typename"] == "ReservationRefunded"
    assert refunded["reservation"]["status"] == "REFUNDED"
    [invoice] = await invoices_of(org)
    assert [line["amountCredits"] for line in invoice["lines"]] == [700, -700]
    assert (invoice["totalCredits"], invoice["total"]["amount"]) == (0, "0.00")

    # and the wallet is untouched
    wallet, entries = await ledger_of(org)
    assert wallet == {"balanceCredits": 0, "reservedCredits": 0, "availableCredits": 0}
    assert entries == []
    await assert_invariants(make.app.billing.db)

    # when the month ends and the worker runs
    clock.advance(timedelta(days=15))
    report = await Worker(make.app.billing).tick()

    # then November is finalized, and the next capture opens December
    assert report.invoices_finalized == 1
    [november] = await invoices_of(org)
    assert november["status"] == "FINALIZED"
    later = await reserve(service, org, 300, "ent-2", reference="tasking-2")
    await capture(service, later["reservation"]["id"], 250)
    invoices = await invoices_of(org)
    assert [(i["period"], i["status"], i["totalCredits"]) for i in invoices] == [
        ("2026-12", "OPEN", 250),
        ("2026-11", "FINALIZED", 0),
    ]
    assert (await Worker(make.app.billing).tick()).invoices_finalized == 0
    await assert_invariants(make.app.billing.db)


async def test_enterprise_releases_touch_no_invoice(make: Factory) -> None:
    org = await make.org(plan=Plan.ENTERPRISE)
    service = await service_client(make)
    held = await reserve(service, org, 700, "ent")

    released = await release(service, held["reservation"]["id"])

    assert released["__typename"] == "ReservationReleased"
    assert await invoices_of(org) == []
    assert (await ledger_of(org))[1] == []


async def test_enterprise_organizations_cannot_top_up(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(plan=Plan.ENTERPRISE)
    await save_card(org.api, emulator)

    result = (await org.api(TOPUP, {"input": {"audCents": 10_000, "idempotencyKey": "t"}}))["topup"]

    assert (result["__typename"], result["httpStatus"]) == ("InvalidState", 409)
    assert emulator.list_payment_intents() == []


# -- 7. approvals ------------------------------------------------------------------------------


async def test_large_spend_waits_for_approval_then_holds(make: Factory) -> None:
    # given an approval threshold of 500 and 10000 credits
    org = await approval_org(make, threshold=500, credits=10_000)
    service = await service_client(make)

    # when 600 are reserved
    pending = await reserve(service, org, 600, "big", reference="order-big")

    # then the spend waits, holding nothing
    assert pending["__typename"] == "ApprovalRequired", pending
    approval = pending["approval"]
    assert (approval["status"], approval["amountCredits"], approval["reference"]) == (
        "PENDING",
        600,
        "order-big",
    )
    assert approval["reservation"]["status"] == "PENDING_APPROVAL"
    assert await wallet_of(org) == {
        "balanceCredits": 10_000,
        "reservedCredits": 0,
        "availableCredits": 10_000,
    }
    assert [a["id"] for a in await approvals_of(org, "PENDING")] == [approval["id"]]
    assert await reserve(service, org, 600, "big", reference="order-big") == pending
    # at the threshold no approval is needed
    small = await reserve(service, org, 500, "small")
    assert small["__typename"] == "ReservationCreated"

    # when it is approved
    decided = await approve(org, approval["id"])

    # then the credits are held
    assert decided["__typename"] == "ApprovalDecided", decided
    assert decided["approval"]["status"] == "APPROVED"
    assert decided["approval"]["decidedAt"] is not None
    assert decided["approval"]["reservation"]["status"] == "HELD"
    assert decided["approval"]["reservation"]["billingMode"] == "CREDITS"
    assert await wallet_of(org) == {
        "balanceCredits": 10_000,
        "reservedCredits": 1_100,
        "availableCredits": 8_900,
    }
    assert await approvals_of(org, "PENDING") == []
    assert [a["id"] for a in await approvals_of(org, "APPROVED")] == [approval["id"]]

    # and the decision is made once
    assert await approve(org, approval["id"]) == decided
    late_reject = await reject(org, approval["id"], "changed my mind")
    assert (late_reject["__typename"], late_reject["httpStatus"]) == ("InvalidState", 409)
    _, entries = await ledger_of(org)
    assert kinds(entries) == ["RESERVATION", "RESERVATION", "ADJUSTMENT"]
    # the approved reservation settles like any other
    captured = await capture(service, approval["reservation"]["id"], 600)
    assert captured["wallet"] == {
        "balanceCredits": 9_400,
        "reservedCredits": 500,
        "availableCredits": 8_900,
    }
    await assert_invariants(make.app.billing.db)


async def test_approval_alone_holds_exactly_the_spend(make: Factory) -> None:
    org = await approval_org(make, threshold=500, credits=10_000)
    service = await service_client(make)
    approval = (await reserve(service, org, 600, "big"))["approval"]

    await approve(org, approval["id"])

    assert await wallet_of(org) == {
        "balanceCredits": 10_000,
        "reservedCredits": 600,
        "availableCredits": 9_400,
    }
    await assert_invariants(make.app.billing.db)


async def test_rejected_spend_is_decided_once(make: Factory) -> None:
    org = await approval_org(make, threshold=500, credits=10_000)
    service = await service_client(make)
    approval = (await reserve(service, org, 700, "big"))["approval"]

    rejected = await reject(org, approval["id"], "over budget")
    again = await reject(org, approval["id"], "over budget")
    late_approve = await approve(org, approval["id"])
    late_capture = await capture(service, approval["reservation"]["id"], 700)

    assert rejected["__typename"] == "ApprovalDecided", rejected
    assert (rejected["approval"]["status"], rejected["approval"]["reason"]) == (
        "REJECTED",
        "over budget",
    )
    assert rejected["approval"]["reservation"]["status"] == "REJECTED"
    assert again == rejected
    assert (late_approve["__typename"], late_approve["httpStatus"]) == ("InvalidState", 409)
    assert late_capture["__typename"] == "InvalidState"
    assert [a["id"] for a in await approvals_of(org, "REJECTED")] == [approval["id"]]
    assert [r["status"] for r in await reservations_of(org)] == ["REJECTED"]
    wallet, entries = await ledger_of(org)
    assert wallet["reservedCredits"] == 0
    assert kinds(entries) == ["ADJUSTMENT"]
    await assert_invariants(make.app.billing.db)


async def test_approving_without_enough_credits_leaves_it_pending(make: Factory) -> None:
    # given a standard organization with 100 credits and a pending spend of 200
    org = await approval_org(make, threshold=50, credits=100)
    service = await service_client(make)
    approval = (await reserve(service, org, 200, "big"))["approval"]

    # when it is approved
    refused = await approve(org, approval["id"])

    # then it cannot be held yet and stays pending
    assert refused["__typename"] == "InsufficientCredits", refused
    assert (refused["availableCredits"], refused["requestedCredits"]) == (100, 200)
    [still] = await approvals_of(org, "PENDING")
    assert still["id"] == approval["id"]
    assert still["reservation"]["status"] == "PENDING_APPROVAL"
    assert (await ledger_of(org))[1][0]["kind"] == "ADJUSTMENT"

    # when credits arrive, the same approval goes through
    await grant_credits(
        make.app.billing.db, organization_id=org.pk, amount_credits=150, reason="goodwill"
    )
    approved = await approve(org, approval["id"])
    assert approved["__typename"] == "ApprovalDecided"
    assert approved["approval"]["status"] == "APPROVED"
    assert await wallet_of(org) == {
        "balanceCredits": 250,
        "reservedCredits": 200,
        "availableCredits": 50,
    }
    await assert_invariants(make.app.billing.db)


async def test_approval_of_a_free_organization_holds_the_card(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await approval_org(make, threshold=100, plan=Plan.FREE)
    await save_card(org.api, emulator)
    service = await service_client(make)
    approval = (await reserve(service, org, 300, "big"))["approval"]

    decided = await approve(org, approval["id"])

    assert decided["__typename"] == "ApprovalDecided", decided
    assert decided["approval"]["status"] == "APPROVED"
    reservation = decided["approval"]["reservation"]
    assert (reservation["status"], reservation["billingMode"]) == ("HELD", "CARD_HOLD")
    authorised = await intent(emulator, reservation["paymentIntentId"])
    assert (authorised["status"], authorised["amount"]) == ("requires_capture", 300)
    assert (await ledger_of(org))[1] == []


async def test_approval_of_a_free_organization_can_need_three_d_secure(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await approval_org(make, threshold=100, plan=Plan.FREE)
    await save_card(org.api, emulator, THREE_D_SECURE)
    service = await service_client(make)
    approval = (await reserve(service, org, 300, "big"))["approval"]

    challenge = (await org.api(APPROVE_3DS, {"input": {"approvalId": approval["id"]}}))[
        "approveSpend"
    ]
    assert challenge["__typename"] == "AuthenticationRequired", challenge
    assert [a["id"] for a in await approvals_of(org, "PENDING")] == [approval["id"]]
    await asyncio.to_thread(
        emulator.authenticate_payment_intent,
        challenge["paymentIntentId"],
        challenge["clientSecret"],
    )
    decided = await approve(org, approval["id"])

    assert decided["__typename"] == "ApprovalDecided", decided
    assert decided["approval"]["status"] == "APPROVED"
    reservation = decided["approval"]["reservation"]
    assert (reservation["status"], reservation["paymentIntentId"]) == (
        "HELD",
        challenge["paymentIntentId"],
    )
    assert (await intent(emulator, challenge["paymentIntentId"]))["status"] == "requires_capture"


async def test_a_declined_approval_can_still_be_rejected(
    make: Factory, emulator: StripeEmulator
) -> None:
    # given a free organization whose card is declined, and a pending spend
    org = await approval_org(make, threshold=100, plan=Plan.FREE)
    await save_card(org.api, emulator, DECLINED_ON_CHARGE)
    service = await service_client(make)
    approval = (await reserve(service, org, 300, "big"))["approval"]

    # when approving it fails at the card
    declined = (await org.api(APPROVE_3DS, {"input": {"approvalId": approval["id"]}}))[
        "approveSpend"
    ]
    assert declined["__typename"] == "CardDeclined", declined
    assert [a["id"] for a in await approvals_of(org, "PENDING")] == [approval["id"]]

    # then the approver can still reject the request that was never decided
    rejected = await reject(org, approval["id"], "card declined")
    assert rejected["__typename"] == "ApprovalDecided", rejected
    assert rejected["approval"]["status"] == "REJECTED"
    assert await approvals_of(org, "PENDING") == []


async def test_deciding_needs_the_approve_scope(make: Factory) -> None:
    org = await approval_org(make, threshold=500, credits=10_000)
    service = await service_client(make)
    approval = (await reserve(service, org, 600, "big"))["approval"]
    writer = make.client(await make.token(org.pk, "billing:read,billing:write"))

    for document, name in ((APPROVE, "approveSpend"), (REJECT, "rejectSpend")):
        response = await writer.post(document, {"input": {"approvalId": approval["id"]}})

        assert response.status_code == 200
        body = response.json()
        assert body["data"] is None
        [error] = body["errors"]
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert error["path"] == [name]
    assert (await approvals_of(org, "PENDING"))[0]["id"] == approval["id"]


async def test_organization_tokens_cannot_spend(make: Factory) -> None:
    org = await make.org(credits=1000, scopes=ORG_SCOPES)
    spend = {"organizationId": org.id, "amountCredits": 10, "reference": "x", "idempotencyKey": "k"}

    response = await org.api.post(RESERVE, {"input": spend})

    body = response.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert body["errors"][0]["path"] == ["reserveCredits"]
    assert (await wallet_of(org))["reservedCredits"] == 0


async def test_organization_tokens_cannot_settle(make: Factory) -> None:
    org = await make.org(credits=1000, scopes=ORG_SCOPES)
    service = await service_client(make)
    reservation_id = (await reserve(service, org, 100, "k"))["reservation"]["id"]

    for document in (CAPTURE, RELEASE, REFUND):
        response = await org.api.post(document, {"input": {"reservationId": reservation_id}})
        body = response.json()
        assert body["data"] is None
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert [r["status"] for r in await reservations_of(org)] == ["HELD"]


async def test_service_tokens_cannot_decide(make: Factory) -> None:
    org = await approval_org(make, threshold=500, credits=10_000)
    service = await service_client(make)
    approval = (await reserve(service, org, 600, "big"))["approval"]

    response = await service.post(APPROVE, {"input": {"approvalId": approval["id"]}})

    body = response.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


async def test_another_organizations_approval_is_not_found(make: Factory) -> None:
    owner = await approval_org(make, threshold=500, credits=10_000, name="Owner")
    other = await approval_org(make, threshold=500, credits=10_000, name="Other")
    service = await service_client(make)
    approval = (await reserve(service, owner, 600, "big"))["approval"]

    approved = await approve(other, approval["id"])
    rejected = await reject(other, approval["id"])
    garbage = await approve(other, "not-an-id")

    for result in (approved, rejected, garbage):
        assert (result["__typename"], result["httpStatus"]) == ("NotFound", 404)
    assert await approvals_of(other) == []
    [still] = await approvals_of(owner)
    assert still["status"] == "PENDING"


# -- 8. card hold expiry -------------------------------------------------------------------------


async def test_worker_releases_card_holds_older_than_the_ttl(
    make: Factory, emulator: StripeEmulator, clock: FakeClock
) -> None:
    # given a card hold of a free organization and a credit reservation of the same age
    free = await make.org(plan=Plan.FREE, name="Free")
    await save_card(free.api, emulator)
    paying = await make.org(credits=1000, name="Paying")
    service = await service_client(make)
    hold = (await reserve(service, free, 100, "hold"))["reservation"]
    credit = (await reserve(service, paying, 100, "credit"))["reservation"]
    worker = Worker(make.app.billing)

    # when exactly the ttl has passed, nothing expires yet
    clock.advance(timedelta(days=6))
    assert (await worker.tick()).card_holds_released == 0
    assert (await intent(emulator, hold["paymentIntentId"]))["status"] == "requires_capture"

    # when one more second passes
    clock.advance(timedelta(seconds=1))
    report = await worker.tick()

    # then the card hold is released and its intent cancelled; the credit one is still held
    assert report.card_holds_released == 1
    [released] = await reservations_of(free)
    assert (released["id"], released["status"]) == (hold["id"], "RELEASED")
    assert (await intent(emulator, hold["paymentIntentId"]))["status"] == "canceled"
    [kept] = await reservations_of(paying)
    assert (kept["id"], kept["status"]) == (credit["id"], "HELD")
    assert (await wallet_of(paying))["reservedCredits"] == 100
    assert (await worker.tick()).card_holds_released == 0
    late = await capture(service, hold["id"], 100)
    assert late["__typename"] == "InvalidState"
    await assert_invariants(make.app.billing.db)


async def test_a_hold_whose_answer_was_lost_and_never_retried_is_cancelled_at_stripe(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy, clock: FakeClock
) -> None:
    # given a card hold authorised at Stripe whose answer timed out, and no retry ever came
    free = await make.org(plan=Plan.FREE, name="Free")
    await save_card(free.api, emulator)
    service = await service_client(make)
    stripe_proxy.inject("timeout_after_forward", path_contains="/v1/payment_intents")
    lost = await reserve(service, free, 100, "lost")
    assert lost["__typename"] == "PaymentProviderUnavailable"
    [held_at_stripe] = await asyncio.to_thread(emulator.list_payment_intents)
    assert held_at_stripe["status"] == "requires_capture"

    # when the card hold ttl passes and the worker runs
    clock.advance(timedelta(days=6, seconds=1))
    await Worker(make.app.billing).tick()

    # then the authorisation is cancelled, and nothing of it is listed as a reservation
    cancelled = await intent(emulator, held_at_stripe["id"])
    assert cancelled["status"] == "canceled"
    assert await reservations_of(free) == []
    await assert_invariants(make.app.billing.db)


# -- 9. the read side ----------------------------------------------------------------------------


async def test_reservations_are_listed_newest_first_and_filtered(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    ids = [
        (await reserve(service, org, 100, f"k{i}", reference=f"order-{i}"))["reservation"]["id"]
        for i in range(3)
    ]
    await capture(service, ids[1], 50)

    everything = await reservations_of(org)
    held = await reservations_of(org, "HELD")
    captured = await reservations_of(org, "CAPTURED")
    released = await reservations_of(org, "RELEASED")

    assert [(r["id"], r["reference"]) for r in everything] == [
        (ids[2], "order-2"),
        (ids[1], "order-1"),
        (ids[0], "order-0"),
    ]
    assert [r["id"] for r in held] == [ids[2], ids[0]]
    assert [(r["id"], r["capturedCredits"]) for r in captured] == [(ids[1], 50)]
    assert released == []


async def test_node_finds_reservations_approvals_and_invoices_of_the_caller_only(
    make: Factory,
) -> None:
    # given an enterprise organization with an approval gate, an approval and an invoice
    org = await approval_org(make, threshold=500, plan=Plan.ENTERPRISE, name="Enterprise")
    stranger = await make.org(credits=1000, name="Stranger", scopes=ORG_SCOPES)
    service = await service_client(make)
    approval = (await reserve(service, org, 600, "big"))["approval"]
    small = (await reserve(service, org, 100, "small"))["reservation"]
    await capture(service, small["id"], 100)
    [invoice] = await invoices_of(org)

    # when each is refetched by its id
    found = [(await org.api(NODE, {"id": i}))["node"] for i in (small["id"], approval["id"])]
    found.append((await org.api(NODE, {"id": invoice["id"]}))["node"])

    # then the caller sees its own objects
    assert found == [
        {
            "__typename": "Reservation",
            "id": small["id"],
            "reservationStatus": "CAPTURED",
            "amountCredits": 100,
        },
        {
            "__typename": "Approval",
            "id": approval["id"],
            "approvalStatus": "PENDING",
            "amountCredits": 600,
        },
        {
            "__typename": "Invoice",
            "id": invoice["id"],
            "period": "2026-11",
            "totalCredits": 100,
        },
    ]
    # and another organization sees nothing
    for object_id in (small["id"], approval["id"], approval["reservation"]["id"], invoice["id"]):
        assert (await stranger.api(NODE, {"id": object_id}))["node"] is None
        assert (await service.post(NODE, {"id": object_id})).json()["data"]["node"] is None
    assert await reservations_of(stranger) == []
    assert await invoices_of(stranger) == []


async def test_service_tokens_cannot_list_spend(make: Factory) -> None:
    org = await make.org(credits=1000)
    service = await service_client(make)
    await reserve(service, org, 100, "k")

    response = await service.post(RESERVATIONS, {"status": None})

    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"reservations": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["reservations"]
