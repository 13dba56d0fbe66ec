"""Free text refuses control and bidirectional formatting characters on every way in (GraphQL
inputs, the operator's command line), naming the field and changing nothing; `report` escapes
such text stored before the check existed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import Factory, Org
from gql_billing.billing.organizations import create_organization
from gql_billing.graphql.ids import to_global_id
from support.api import GraphQLClient

CLI = str(Path(sys.executable).with_name("gql-billing"))

# NUL, ESC (a terminal escape sequence), CR/LF, TAB, DEL, C1 (NEL, CSI), the right-to-left
# override, an isolate, the line separator.
UNSAFE = {
    "nul": "a\x00b",
    "esc": "order \x1b[2J",
    "crlf": "order\r\nX-Injected: 1",
    "tab": "a\tb",
    "del": "a\x7fb",
    "nel": "a\x85b",
    "csi": "a\x9b31m",
    "rlo": "invoice \u202egnp.exe",
    "lri": "a\u2066b",
    "line-separator": "a\u2028b",
}
FINE = "Ünïcode order 日本語 — №42 ✓ [draft]"

RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename
    ... on ReservationCreated { reservation { id reference description } }
    ... on ApprovalRequired { approval { id } }
    ... on InvalidInput { field detail }
  }
}
"""
RELEASE = """
mutation Release($input: ReleaseReservationInput!) {
  releaseReservation(input: $input) {
    __typename ... on InvalidInput { field detail } ... on Problem { title }
  }
}
"""
CAPTURE = """
mutation Capture($input: CaptureReservationInput!) {
  captureReservation(input: $input) { __typename }
}
"""
REFUND = """
mutation Refund($input: RefundReservationInput!) {
  refundReservation(input: $input) {
    __typename ... on InvalidInput { field detail } ... on Problem { title }
  }
}
"""
REJECT = """
mutation Reject($input: DecideApprovalInput!) {
  rejectSpend(input: $input) {
    __typename ... on InvalidInput { field detail } ... on Problem { title }
  }
}
"""
STATE = """
{ wallet { balanceCredits reservedCredits }
  reservations(first: 10) { edges { node { status reference } } }
  approvals(first: 10) { edges { node { status reason } } } }
"""


async def reserve(service: GraphQLClient, org: Org, key: str, **fields: Any) -> dict[str, Any]:
    spend = {"organizationId": org.id, "amountCredits": 700, "reference": "order-1"}
    data = await service(RESERVE, {"input": {**spend, **fields, "idempotencyKey": key}})
    return data["reserveCredits"]  # type: ignore[no-any-return]


async def state(org: Org) -> dict[str, Any]:
    return await org.api(STATE)


@pytest.fixture
async def service(make: Factory) -> GraphQLClient:
    return make.client(await make.token(None, "billing:spend"))


@pytest.fixture
async def org(make: Factory) -> Org:
    return await make.org(credits=10_000, scopes="billing:read,billing:write,billing:approve")


# -- GraphQL inputs -------------------------------------------------------------------------------


CASES = [("reference", name) for name in UNSAFE] + [
    ("description", name) for name in ("nul", "esc", "rlo")
]


@pytest.mark.parametrize(("field", "case"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
async def test_reserve_refuses_control_characters_naming_the_field(
    service: GraphQLClient, org: Org, field: str, case: str
) -> None:
    before = await state(org)

    refused = await reserve(service, org, "k1", **{field: UNSAFE[case]})

    assert refused["__typename"] == "InvalidInput", refused
    assert refused["field"] == field
    assert "control or bidirectional" in refused["detail"]
    assert await state(org) == before
    # the key was not consumed: the same key with clean text reserves
    accepted = await reserve(service, org, "k1", reference=FINE, description=FINE)
    assert accepted["__typename"] == "ReservationCreated", accepted
    assert accepted["reservation"]["reference"] == accepted["reservation"]["description"] == FINE


@pytest.mark.parametrize("value", [UNSAFE["esc"], UNSAFE["rlo"], UNSAFE["crlf"]])
async def test_settlement_reasons_refuse_control_characters(
    service: GraphQLClient, org: Org, value: str
) -> None:
    held = (await reserve(service, org, "held"))["reservation"]["id"]
    captured = (await reserve(service, org, "captured"))["reservation"]["id"]
    await service(CAPTURE, {"input": {"reservationId": captured}})
    before = await state(org)

    release = await service(RELEASE, {"input": {"reservationId": held, "reason": value}})
    refund = await service(REFUND, {"input": {"reservationId": captured, "reason": value}})

    assert release["releaseReservation"]["__typename"] == "InvalidInput"
    assert release["releaseReservation"]["field"] == "reason"
    assert refund["refundReservation"]["__typename"] == "InvalidInput"
    assert refund["refundReservation"]["field"] == "reason"
    assert await state(org) == before


async def test_a_rejection_reason_refuses_control_characters(
    make: Factory, service: GraphQLClient
) -> None:
    db = make.app.billing.db
    gated = await create_organization(db, name="Gated", approval_threshold_credits=500)
    assert gated.id is not None
    token = await make.token(gated.id, "billing:read,billing:approve")
    org = Org(gated.id, to_global_id("Organization", gated.id), token, make.client(token))
    approval = (await reserve(service, org, "big"))["approval"]["id"]

    refused = await org.api(REJECT, {"input": {"approvalId": approval, "reason": UNSAFE["rlo"]}})
    accepted = await org.api(REJECT, {"input": {"approvalId": approval, "reason": FINE}})

    assert (refused["rejectSpend"]["__typename"], refused["rejectSpend"]["field"]) == (
        "InvalidInput",
        "reason",
    )
    assert accepted["rejectSpend"]["__typename"] == "ApprovalDecided"
    assert (await state(org))["approvals"]["edges"][0]["node"] == {
        "status": "REJECTED",
        "reason": FINE,
    }


# -- the command line ---------------------------------------------------------------------------


async def cli(make: Factory, *args: str) -> subprocess.CompletedProcess[str]:
    # Wide enough that the report's tables do not wrap a reference.
    env = {
        **os.environ,
        "GQL_BILLING_DATABASE_URL": make.app.settings.database_url,
        "COLUMNS": "200",
    }
    return await asyncio.to_thread(
        subprocess.run, [CLI, *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_the_command_line_refuses_control_characters_with_a_clear_error(
    make: Factory, org: Org
) -> None:
    grant = await cli(
        make, "credits", "grant", "--org", org.id, "--credits", "5", "--reason", UNSAFE["esc"]
    )
    named = await cli(make, "org", "create", "--name", UNSAFE["rlo"])
    token = await cli(make, "token", "create", "--org", org.id, "--name", UNSAFE["crlf"])

    for done, flag in [(grant, "reason"), (named, "name"), (token, "name")]:
        assert done.returncode == 2, done
        assert done.stderr.startswith(f"error: {flag} must not contain control"), done.stderr
        assert "Traceback" not in done.stderr
    assert (await state(org))["wallet"]["balanceCredits"] == 10_000


async def test_report_escapes_control_characters_stored_before_the_check(
    make: Factory, org: Org, service: GraphQLClient
) -> None:
    # given rows written before free text was checked (straight into the database)
    await reserve(service, org, "old", reference="order-1")
    async with make.app.billing.db.write() as session:
        await session.execute(
            text("UPDATE organizations SET name = :name WHERE id = :id"),
            {"name": "Acme \u202eevil", "id": org.pk},
        )
        await session.execute(
            text("UPDATE reservations SET reference = :ref WHERE organization_id = :id"),
            {"ref": "order \x1b[2J\x1b[31mwiped", "id": org.pk},
        )

    # when the operator prints the report
    done = await cli(make, "report", "--org", org.id)

    # then the text is shown escaped, and no control character reaches the terminal
    assert done.returncode == 0, done.stderr
    assert "Acme \\u202eevil" in done.stdout
    assert "\\u001b[2J\\u001b[31mwiped" in done.stdout
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
