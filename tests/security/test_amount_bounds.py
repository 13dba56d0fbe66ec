"""Every stored amount stays within 2^53 − 1, checked before writing: beyond it is a typed
InvalidInput (or a clear CLI error), never a 500 or a float in the database, and
`gql-billing report` flags any stored value out of range."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from conftest import Factory, Org
from gql_billing.models import Plan
from gql_billing.money import MAX_CREDITS, MAX_DAILY_CAP_AUD
from support.cards import save_card
from support.emulator import StripeEmulator
from support.invariants import assert_invariants
from support.stripe_proxy import FaultProxy

CLI = str(Path(sys.executable).with_name("gql-billing"))
INT64_MAX = 2**63 - 1

SET_AUTO_TOPUP = """
mutation Set($input: SetAutoTopupInput!) {
  setAutoTopup(input: $input) {
    __typename
    ... on AutoTopupUpdated { autoTopup { enabled thresholdCredits dailyChargeCapAud } }
    ... on InvalidInput { field detail }
  }
}
"""
WALLET = """
{ wallet { balanceCredits autoTopup { enabled thresholdCredits topupAmountCredits
  dailyChargeCapAud } } }
"""
RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename ... on ReservationCreated { reservation { id } } ... on Problem { detail }
  }
}
"""
CAPTURE = """
mutation Capture($input: CaptureReservationInput!) {
  captureReservation(input: $input) {
    __typename
    ... on ReservationCaptured { reservation { status capturedCredits } }
    ... on InvalidInput { field detail }
  }
}
"""
RELEASE = """
mutation Release($input: ReleaseReservationInput!) {
  releaseReservation(input: $input) { __typename }
}
"""
INVOICES = "{ invoices(first: 5) { edges { node { totalCredits lines { amountCredits } } } } }"
TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) { __typename ... on InvalidInput { field detail } }
}
"""


def rest_url(make: Factory, operation: str) -> str:
    return f"{make.app.base_url}/v1/op/{operation}"


async def cli(make: Factory, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GQL_BILLING_DATABASE_URL": make.app.settings.database_url}
    return await asyncio.to_thread(
        subprocess.run, [CLI, *args], env=env, capture_output=True, text=True, timeout=60
    )


async def report(make: Factory, org: Org) -> tuple[int, dict[str, Any]]:
    done = await cli(make, "report", "--org", org.id, "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def check(body: dict[str, Any], key: str) -> dict[str, Any]:
    return next(c for c in body["invariants"] if c["key"] == key)


async def wallet(org: Org) -> dict[str, Any]:
    return (await org.api(WALLET))["wallet"]  # type: ignore[no-any-return]


# -- auto top-up settings, both APIs --------------------------------------------------------------


async def test_rest_auto_topup_settings_beyond_the_bound_are_invalid_input(
    make: Factory, emulator: StripeEmulator
) -> None:
    # given an organization with a card and the seed's auto top-up settings
    org = await make.org(credits=100_000)
    await save_card(org.api, emulator)
    headers = {"Authorization": f"Bearer {org.token}"}
    seed = {"threshold_credits": 5000, "topup_amount_credits": 50000, "daily_charge_cap_aud": 500}
    ok = await make.http.post(
        rest_url(make, "billing.set_auto_topup"), headers=headers, json={"enabled": True, **seed}
    )
    assert ok.status_code == 200, ok.text
    before = await wallet(org)

    # when values past 2^53 − 1 are sent, or a dollar cap past what GraphQL's Int carries
    cases = [
        ("daily_charge_cap_aud", INT64_MAX),
        ("daily_charge_cap_aud", INT64_MAX + 1),
        ("daily_charge_cap_aud", MAX_DAILY_CAP_AUD + 1),
        ("threshold_credits", MAX_CREDITS + 1),
        ("threshold_credits", INT64_MAX + 1),
        ("topup_amount_credits", INT64_MAX),
    ]
    for field, value in cases:
        response = await make.http.post(
            rest_url(make, "billing.set_auto_topup"),
            headers=headers,
            json={"enabled": True, **seed, field: value},
        )

        # then each is a 422 naming the field, and nothing changed
        assert response.status_code == 422, (field, value, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == field, response.json()
    assert await wallet(org) == before

    # and the largest values that fit are accepted
    widest = await make.http.post(
        rest_url(make, "billing.set_auto_topup"),
        headers=headers,
        json={
            "enabled": True,
            "threshold_credits": MAX_CREDITS,
            "topup_amount_credits": 50000,
            "daily_charge_cap_aud": MAX_DAILY_CAP_AUD,
        },
    )
    assert widest.status_code == 200, widest.text
    assert (await wallet(org))["autoTopup"] == {
        "enabled": True,
        "thresholdCredits": MAX_CREDITS,
        "topupAmountCredits": 50000,
        "dailyChargeCapAud": MAX_DAILY_CAP_AUD,
    }


async def test_graphql_auto_topup_settings_beyond_the_bound_are_refused(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=100_000)
    await save_card(org.api, emulator)
    before = await wallet(org)

    # when thresholdCredits is past the Credits range, or the cap past GraphQL's Int
    for name, value in (("thresholdCredits", MAX_CREDITS + 1), ("dailyChargeCapAud", 2**31)):
        response = await org.api.post(
            SET_AUTO_TOPUP,
            {"input": {"enabled": False, name: value}},
        )

        # then the variables are refused before anything runs
        body = response.json()
        assert body.get("data") is None and body["errors"], body
        assert name in body["errors"][0]["message"], body
    assert await wallet(org) == before

    # and the bound itself is accepted, and read back exactly
    widest = await org.api(
        SET_AUTO_TOPUP, {"input": {"enabled": False, "thresholdCredits": MAX_CREDITS}}
    )
    assert widest["setAutoTopup"]["autoTopup"]["thresholdCredits"] == MAX_CREDITS


# -- operator credits ------------------------------------------------------------------------------


async def test_cli_grant_beyond_the_bound_is_a_clear_error(make: Factory) -> None:
    org = await make.org(credits=100)

    # when an operator grants 2^63 − 1 credits
    huge = await cli(
        make, "credits", "grant", "--org", org.id, "--credits", str(INT64_MAX), "--reason", "x"
    )

    # then the command fails with a clear message, and the balance is untouched
    assert huge.returncode != 0
    assert "Traceback" not in huge.stderr
    assert "credits must be within" in huge.stderr, huge.stderr
    assert (await wallet(org))["balanceCredits"] == 100

    # when the balance is taken to the bound, then one more credit is refused
    to_bound = MAX_CREDITS - 100
    filled = await cli(
        make, "credits", "grant", "--org", org.id, "--credits", str(to_bound), "--reason", "x"
    )
    past = await cli(make, "credits", "grant", "--org", org.id, "--credits", "1", "--reason", "x")
    assert filled.returncode == 0, filled.stderr
    assert past.returncode != 0 and "Traceback" not in past.stderr
    assert "past" in past.stderr, past.stderr
    assert (await wallet(org))["balanceCredits"] == MAX_CREDITS

    # and the stored balance is an exact integer, and the report passes
    code, body = await report(make, org)
    assert code == 0, body
    assert body["wallet"]["balanceCredits"] == MAX_CREDITS
    assert check(body, "amounts_in_range")["passed"] is True
    await assert_invariants(make.app.billing.db)


async def test_a_topup_the_balance_could_not_hold_is_refused_before_charging(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org(credits=MAX_CREDITS - 5000)
    await save_card(org.api, emulator)

    refused = await org.api(TOPUP, {"input": {"credits": 10000, "idempotencyKey": "too-much"}})

    assert refused["topup"]["__typename"] == "InvalidInput", refused
    assert refused["topup"]["field"] == "credits"
    assert stripe_proxy.count("POST", "/v1/payment_intents") == 0
    assert (await wallet(org))["balanceCredits"] == MAX_CREDITS - 5000


# -- enterprise invoices ---------------------------------------------------------------------------


async def test_an_enterprise_invoice_total_never_passes_the_bound(make: Factory) -> None:
    # given an enterprise organization whose month already holds 2^53 − 1 of captures
    org = await make.org(plan=Plan.ENTERPRISE)
    service = make.client(await make.token(None, "billing:spend"))

    async def reserve(amount: int, key: str) -> str:
        data = await service(
            RESERVE,
            {
                "input": {
                    "organizationId": org.id,
                    "amountCredits": amount,
                    "reference": key,
                    "idempotencyKey": key,
                }
            },
        )
        assert data["reserveCredits"]["__typename"] == "ReservationCreated", data
        return str(data["reserveCredits"]["reservation"]["id"])

    first = await reserve(MAX_CREDITS, "big")
    done = await service(CAPTURE, {"input": {"reservationId": first}})
    assert done["captureReservation"]["__typename"] == "ReservationCaptured", done

    # when one more credit is captured that month
    second = await reserve(1, "one-more")
    over = await service.post(CAPTURE, {"input": {"reservationId": second}})

    # then it is InvalidInput (not a server error), and the invoice is unchanged
    assert over.status_code == 200
    body = over.json()
    assert "errors" not in body, body
    result = body["data"]["captureReservation"]
    assert (result["__typename"], result["field"]) == ("InvalidInput", "amountCredits"), result
    [invoice] = [e["node"] for e in (await org.api(INVOICES))["invoices"]["edges"]]
    assert invoice == {"totalCredits": MAX_CREDITS, "lines": [{"amountCredits": MAX_CREDITS}]}

    # and the reservation is still held, so it can be released
    released = await service(RELEASE, {"input": {"reservationId": second}})
    assert released["releaseReservation"]["__typename"] == "ReservationReleased"
    code, report_body = await report(make, org)
    assert code == 0, report_body


# -- the report ------------------------------------------------------------------------------------


async def test_report_flags_stored_amounts_out_of_range(make: Factory) -> None:
    # given an organization whose invoice total was written past the bound (by a version
    # that did not check it)
    org = await make.org(plan=Plan.ENTERPRISE)
    async with make.app.billing.db.write() as session:
        await session.execute(
            text(
                "INSERT INTO invoices (organization_id, period, status, total_credits, created_at)"
                " VALUES (:org, '2026-11', 'OPEN', :total, CURRENT_TIMESTAMP)"
            ),
            {"org": org.pk, "total": MAX_CREDITS + 1},
        )

    # when the operator runs the report
    code, body = await report(make, org)

    # then it fails and names the row
    assert code == 1
    flagged = check(body, "amounts_in_range")
    assert flagged["passed"] is False
    assert "invoices.total_credits" in flagged["detail"], flagged


async def test_report_flags_a_balance_stored_as_a_float_without_crashing(make: Factory) -> None:
    # given a wallet whose balance SQLite stored as a float (an overflowed sum), on SQLite;
    # PostgreSQL's bigint column cannot hold one, so there it is a value past the bound
    org = await make.org(credits=100)
    sqlite = make.app.settings.database_url.startswith("sqlite")
    broken = 9.223372036854915e18 if sqlite else INT64_MAX
    async with make.app.billing.db.write() as session:
        await session.execute(
            text("UPDATE wallets SET balance_credits = :b WHERE organization_id = :org"),
            {"b": broken, "org": org.pk},
        )

    code, body = await report(make, org)

    assert code == 1
    flagged = check(body, "amounts_in_range")
    assert flagged["passed"] is False
    assert "wallets.balance_credits" in flagged["detail"], flagged
