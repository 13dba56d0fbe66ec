"""`gql-billing report` and `reconcile` as an operator runs them, against a served app's
database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from conftest import TEST_SECRET_KEY, Factory, Org
from gql_billing.invariants import INVARIANT_KEYS
from support.cards import save_card
from support.emulator import StripeEmulator
from support.stripe_proxy import FaultProxy

CLI = str(Path(sys.executable).with_name("gql-billing"))
BREAK_BALANCE = (
    "UPDATE wallets SET balance_credits = balance_credits + 1 WHERE organization_id = :org"
)

TOPUP = """
mutation Topup($input: TopupInput!) { topup(input: $input) { __typename } }
"""
RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) {
    __typename ... on ReservationCreated { reservation { id } }
  }
}
"""
CAPTURE = """
mutation Capture($input: CaptureReservationInput!) {
  captureReservation(input: $input) { __typename }
}
"""


async def cli(make: Factory, *args: str) -> subprocess.CompletedProcess[str]:
    settings = make.app.settings
    env = {
        **os.environ,
        "GQL_BILLING_DATABASE_URL": settings.database_url,
        "STRIPE_SECRET_KEY": TEST_SECRET_KEY,
        "STRIPE_API_BASE": settings.stripe_api_base or "",
    }
    return await asyncio.to_thread(
        subprocess.run, [CLI, *args], env=env, capture_output=True, text=True, timeout=60
    )


async def break_balance(make: Factory, org: Org) -> None:
    """What no code path may do: move the balance column without a ledger entry."""
    async with make.app.billing.db.write() as session:
        await session.execute(text(BREAK_BALANCE), {"org": org.pk})


async def report(make: Factory, org: Org) -> tuple[int, dict[str, Any]]:
    done = await cli(make, "report", "--org", org.id, "--json")
    return done.returncode, json.loads(done.stdout)


async def reserve(make: Factory, org: Org, amount: int, key: str) -> str:
    service = make.client(await make.token(None, "billing:spend"))
    spend = {"organizationId": org.id, "amountCredits": amount, "reference": key}
    held = await service(RESERVE, {"input": {**spend, "idempotencyKey": key}})
    assert held["reserveCredits"]["__typename"] == "ReservationCreated", held
    return str(held["reserveCredits"]["reservation"]["id"])


async def test_report_after_a_topup_a_reservation_and_a_capture_passes_every_invariant(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)
    await org.api(TOPUP, {"input": {"audCents": 50_000, "idempotencyKey": "t1"}})
    captured = await reserve(make, org, 20_000, "order-1")
    service = make.client(await make.token(None, "billing:spend"))
    await service(CAPTURE, {"input": {"reservationId": captured, "amountCredits": 15_000}})
    await reserve(make, org, 3_000, "order-2")

    status, body = await report(make, org)

    assert status == 0
    assert body["passed"] is True
    assert [c["key"] for c in body["invariants"]] == list(INVARIANT_KEYS)
    assert all(c["passed"] for c in body["invariants"]), body["invariants"]
    assert body["wallet"] == {
        "balanceCredits": 23_500 + 50_000 - 15_000,
        "reservedCredits": 3_000,
        "availableCredits": 23_500 + 50_000 - 15_000 - 3_000,
    }
    totals = {kind: t["amountCredits"] for kind, t in body["ledgerTotals"].items()}
    assert totals == {
        "ADJUSTMENT": 23_500,
        "CHARGE": 15_000,
        "GRANT": 50_000,
        "RELEASE": 5_000,
        "RESERVATION": 23_000,
    }
    assert [t["status"] for t in body["recentTopups"]] == ["SUCCEEDED"]
    assert [(r["status"], r["amountCredits"]) for r in body["recentReservations"]] == [
        ("HELD", 3_000),
        ("CAPTURED", 20_000),
    ]
    assert "client_secret" not in json.dumps(body) and "pm_" not in json.dumps(body)


async def test_a_broken_balance_fails_its_invariant_and_the_command(make: Factory) -> None:
    org = await make.org(credits=5_000)
    await break_balance(make, org)

    status, body = await report(make, org)
    table = await cli(make, "report", "--org", org.id)

    failed = {c["key"] for c in body["invariants"] if not c["passed"]}
    assert status == 1 and body["passed"] is False
    assert "balance" in failed and "reserved" not in failed
    assert table.returncode == 1
    assert "FAILED" in table.stdout


async def test_other_organizations_do_not_fail_this_report(make: Factory) -> None:
    healthy = await make.org(credits=5_000, name="Healthy")
    broken = await make.org(credits=5_000, name="Broken")
    await break_balance(make, broken)

    status, body = await report(make, healthy)

    assert (status, body["passed"]) == (0, True)


async def test_an_unsettled_topup_points_the_operator_to_reconcile(
    make: Factory, emulator: StripeEmulator, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    await save_card(org.api, emulator)
    stripe_proxy.inject("http_500", path_contains="/v1/payment_intents")
    await org.api(TOPUP, {"input": {"audCents": 10_000, "idempotencyKey": "stuck"}})

    status, body = await report(make, org)
    table = await cli(make, "report", "--org", org.id)
    reconciled = await cli(make, "reconcile", "--json")

    assert (status, body["unsettledTopups"]) == (0, 1)
    assert "gql-billing reconcile" in body["hints"][0]
    assert "gql-billing reconcile" in " ".join(table.stdout.split())
    assert reconciled.returncode == 0, reconciled.stderr
    assert json.loads(reconciled.stdout)["checked"] == 1
    assert "reconciling top-ups: 1/1" in reconciled.stderr


async def test_an_unknown_organization_is_an_error(make: Factory) -> None:
    done = await cli(make, "report", "--org", "999999")

    assert done.returncode == 2
    assert "No organization" in done.stderr
