"""Statements over HTTP against the real app: the ledger as a CSV download, and the balance
per UTC day (`balanceHistory`), on a ledger built by real top-ups, spends and refunds."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from conftest import Factory, Org
from gql_billing import ledger
from gql_billing.clock import FakeClock
from gql_billing.models import LedgerEntry
from gql_billing.settings import Settings
from support.api import GraphQLClient
from support.cards import save_card
from support.emulator import StripeEmulator

CLI = str(Path(sys.executable).with_name("gql-billing"))
CSV_HEADER = [
    "id",
    "created_at",
    "kind",
    "amount_credits",
    "balance_delta_credits",
    "available_delta_credits",
    "balance_after_credits",
    "available_after_credits",
    "description",
    "reference",
    "payment_intent_id",
]

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) { __typename ... on TopupSuccess { creditsGranted bonusCredits } }
}
"""
RESERVE = """
mutation Reserve($input: ReserveCreditsInput!) {
  reserveCredits(input: $input) { __typename ... on ReservationCreated { reservation { id } } }
}
"""
CAPTURE = """
mutation Capture($input: CaptureReservationInput!) {
  captureReservation(input: $input) { __typename }
}
"""
RELEASE = """
mutation Release($input: ReleaseReservationInput!) {
  releaseReservation(input: $input) { __typename }
}
"""
REFUND = """
mutation Refund($input: RefundReservationInput!) {
  refundReservation(input: $input) { __typename }
}
"""
TRANSACTIONS = """
query Ledger($after: String) {
  transactions(first: 3, after: $after) {
    edges { node {
      id createdAt kind amountCredits balanceDeltaCredits availableDeltaCredits
      balanceAfterCredits availableAfterCredits description reference
      topup { paymentIntentId }
    } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
HISTORY = """
query History($from: Date!, $to: Date!) {
  balanceHistory(from: $from, to: $to) {
    date closingBalanceCredits creditedCredits debitedCredits
  }
}
"""

# Comma, quotes, and a leading `=` that a spreadsheet would run as a formula.
TRICKY_REASON = '=HYPERLINK("http://evil.example","Refund"), see "notes"'
TRICKY_REFERENCE = '@SUM(A1:A9), "order" 7'


# -- helpers ------------------------------------------------------------------------------------


async def topup(org: Org, credits: int, key: str) -> None:
    data = await org.api(TOPUP, {"input": {"credits": credits, "idempotencyKey": key}})
    assert data["topup"]["__typename"] == "TopupSuccess", data


async def reserve(service: GraphQLClient, org: Org, amount: int, key: str, **extra: Any) -> str:
    spend = {"organizationId": org.id, "amountCredits": amount, "idempotencyKey": key}
    data = await service(RESERVE, {"input": {"reference": key, **spend, **extra}})
    assert data["reserveCredits"]["__typename"] == "ReservationCreated", data
    return str(data["reserveCredits"]["reservation"]["id"])


async def settle(service: GraphQLClient, mutation: str, reservation_id: str, **extra: Any) -> None:
    data = await service(mutation, {"input": {"reservationId": reservation_id, **extra}})
    outcome = next(iter(data.values()))
    assert outcome["__typename"].startswith("Reservation"), data


async def cli_grant(settings: Settings, org: Org, credits: int, reason: str) -> None:
    env = {**os.environ, "GQL_BILLING_DATABASE_URL": settings.database_url}
    args = [CLI, "credits", "grant", "--org", org.id, "--credits", str(credits), "--reason", reason]
    done = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


async def ledger_pages(org: Org) -> list[dict[str, Any]]:
    """Every entry through GraphQL, newest first, three to a page."""
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        page = (await org.api(TRANSACTIONS, {"after": after}))["transactions"]
        nodes += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


async def csv_export(
    http: httpx.AsyncClient, base_url: str, token: str, **params: str
) -> httpx.Response:
    return await http.get(
        f"{base_url}/v1/op/billing.credits.transactions",
        params={"format": "csv", **params},
        headers={"Authorization": f"Bearer {token}"},
    )


def parsed(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    return list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))


def as_cells(node: dict[str, Any]) -> list[str]:
    """What the CSV must hold for a GraphQL ledger node: free text starting a formula gets
    a leading apostrophe; numbers, negative ones included, stay as they are."""

    def text(value: str | None) -> str:
        value = value or ""
        return "'" + value if value[:1] in ("=", "+", "-", "@") else value

    return [
        node["id"],
        node["createdAt"],
        node["kind"],
        str(node["amountCredits"]),
        str(node["balanceDeltaCredits"]),
        str(node["availableDeltaCredits"]),
        str(node["balanceAfterCredits"]),
        str(node["availableAfterCredits"]),
        text(node["description"]),
        text(node["reference"]),
        (node["topup"] or {}).get("paymentIntentId") or "",
    ]


async def every_kind_of_entry(
    make: Factory, emulator: StripeEmulator, settings: Settings, org: Org
) -> None:
    """GRANT and BONUS (a top-up above A$20,000), RESERVATION, CHARGE, RELEASE, REFUND,
    ADJUSTMENT (the operator's command, both ways), and an old entry whose description holds
    line breaks (booked straight through the ledger, as data from before free text refused
    control characters)."""
    service = make.client(await make.token(None, "billing:spend"))
    await save_card(org.api, emulator)
    await topup(org, 2_100_000, "big-topup")
    captured = await reserve(service, org, 5_000, "order-1", description="Scene, north")
    await settle(service, CAPTURE, captured, amountCredits=3_000)
    await settle(service, REFUND, captured, reason="returned")
    released = await reserve(service, org, 700, "order-2", reference=TRICKY_REFERENCE)
    await settle(service, RELEASE, released, reason="cancelled")
    await cli_grant(settings, org, -250, TRICKY_REASON)
    await cli_grant(settings, org, 1_000, "+1 goodwill")
    async with make.app.billing.db.write() as session:
        await ledger.post(
            session,
            organization_id=org.pk,
            movement=ledger.adjustment(1),
            description='=1+1\nsecond line, "quoted"\r\nthird',
        )


# -- the CSV export -----------------------------------------------------------------------------


async def test_csv_of_every_kind_of_entry_equals_the_graphql_ledger(
    make: Factory, emulator: StripeEmulator, settings: Settings, http: httpx.AsyncClient
) -> None:
    # given a ledger with every kind of entry
    org = await make.org(name="Acme Imagery")
    await every_kind_of_entry(make, emulator, settings, org)

    # when the ledger is read both ways
    nodes = await ledger_pages(org)
    response = await csv_export(http, make.app.base_url, org.token)

    # then the CSV is the GraphQL ledger, field by field, newest first
    rows = parsed(response)
    assert rows[0] == CSV_HEADER
    assert rows[1:] == [as_cells(node) for node in nodes]
    assert {row[2] for row in rows[1:]} == {
        "GRANT",
        "BONUS",
        "RESERVATION",
        "CHARGE",
        "RELEASE",
        "REFUND",
        "ADJUSTMENT",
    }
    assert len(rows) == 1 + 11
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        f'attachment; filename="ledger-acme-imagery-{org.pk}-all.csv"'
    )


async def test_free_text_round_trips_quoted_and_neutralised(
    make: Factory, emulator: StripeEmulator, settings: Settings, http: httpx.AsyncClient
) -> None:
    # given entries whose description and reference hold commas, quotes, line breaks and a
    # leading formula character
    org = await make.org()
    await every_kind_of_entry(make, emulator, settings, org)

    # when exported
    response = await csv_export(http, make.app.base_url, org.token)

    # then each reads back whole with the csv module, and would not run as a formula
    rows = parsed(response)
    by_kind_and_amount = {(row[2], row[3]): row for row in rows[1:]}
    old = by_kind_and_amount[("ADJUSTMENT", "1")]
    assert old[8] == '\'=1+1\nsecond line, "quoted"\r\nthird'
    debit = by_kind_and_amount[("ADJUSTMENT", "250")]
    assert debit[8] == "'" + TRICKY_REASON
    assert debit[4] == "-250"  # a number stays a number, minus sign and all
    assert by_kind_and_amount[("ADJUSTMENT", "1000")][8] == "'+1 goodwill"
    reserved = by_kind_and_amount[("RESERVATION", "700")]
    assert reserved[9] == "'" + TRICKY_REFERENCE
    assert reserved[5] == "-700"
    assert by_kind_and_amount[("RESERVATION", "5000")][9] == "order-1"
    # RFC 4180 on the wire: CRLF after each record, the awkward field quoted, quotes doubled
    assert response.content.startswith(b"id,created_at,kind,")
    assert b'"\'=1+1\nsecond line, ""quoted""\r\nthird"' in response.content
    assert response.content.endswith(b"\r\n")


async def test_accept_header_and_created_range(
    make: Factory, emulator: StripeEmulator, clock: FakeClock, http: httpx.AsyncClient
) -> None:
    # given top-ups on three days
    org = await make.org(name="Geo / Pty Ltd")
    await save_card(org.api, emulator)
    for day in range(3):
        await topup(org, 10_000 + day, f"day-{day}")
        clock.advance(timedelta(days=1))
    nodes = await ledger_pages(org)
    middle = datetime.fromisoformat(nodes[1]["createdAt"])

    # when the middle day is asked for, with Accept: text/csv and no format parameter
    response = await http.get(
        f"{make.app.base_url}/v1/op/billing.credits.transactions",
        params={
            "created_after": (middle - timedelta(hours=1)).isoformat(),
            "created_before": (middle + timedelta(hours=1)).isoformat(),
        },
        headers={"Authorization": f"Bearer {org.token}", "Accept": "text/csv"},
    )

    # then only that day's entry is in it, and the file name says whose and which range
    assert parsed(response)[1:] == [as_cells(nodes[1])]
    assert response.headers["content-disposition"] == (
        f'attachment; filename="ledger-geo-pty-ltd-{org.pk}'
        '-20261121T083000Z-to-20261121T103000Z.csv"'
    )
    # and an open-ended range, with a bare date meaning midnight UTC
    since = await csv_export(http, make.app.base_url, org.token, created_after="2026-11-21")
    assert parsed(since)[1:] == [as_cells(node) for node in nodes[:2]]
    until = await csv_export(
        http, make.app.base_url, org.token, created_before="2026-11-21T00:00:00Z"
    )
    assert parsed(until)[1:] == [as_cells(nodes[2])]


async def test_json_stays_the_default(make: Factory, http: httpx.AsyncClient) -> None:
    org = await make.org(credits=500)

    response = await http.get(
        f"{make.app.base_url}/v1/op/billing.credits.transactions",
        headers={"Authorization": f"Bearer {org.token}", "Accept": "application/json"},
    )

    assert response.status_code == 200
    assert [t["amount_credits"] for t in response.json()["transactions"]] == [500]


async def test_bad_ranges_are_400_naming_the_parameter(
    make: Factory, http: httpx.AsyncClient
) -> None:
    org = await make.org(credits=500)
    cases = {
        "created_after": {"created_after": "last tuesday"},
        "created_before": {"created_before": "2026-13-01"},
        "format": {"format": "xlsx"},
    }
    for parameter, params in cases.items():
        response = await csv_export(http, make.app.base_url, org.token, **params)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == parameter
    backwards = await csv_export(
        http,
        make.app.base_url,
        org.token,
        created_after="2026-11-02T00:00:00Z",
        created_before="2026-11-01T00:00:00+00:00",
    )
    assert backwards.status_code == 400
    assert backwards.json()["field"] == "created_before"


async def test_csv_needs_billing_read_and_shows_only_the_callers_organization(
    make: Factory, http: httpx.AsyncClient
) -> None:
    # given two organizations with their own entries
    ours = await make.org(credits=1_234)
    theirs = await make.org(credits=9_999, name="Rival")
    write_only = await make.token(ours.pk, "billing:write")

    # when each exports, and tokens without billing:read try
    rows = parsed(await csv_export(http, make.app.base_url, ours.token))
    their_rows = parsed(await csv_export(http, make.app.base_url, theirs.token))
    forbidden = await csv_export(http, make.app.base_url, write_only)
    anonymous = await http.get(f"{make.app.base_url}/v1/op/billing.credits.transactions?format=csv")

    # then each sees its own ledger only
    assert [row[3] for row in rows[1:]] == ["1234"]
    assert [row[3] for row in their_rows[1:]] == ["9999"]
    assert {row[0] for row in rows[1:]}.isdisjoint(row[0] for row in their_rows[1:])
    assert forbidden.status_code == 403
    assert anonymous.status_code == 401


# -- balanceHistory -----------------------------------------------------------------------------


def day_by_day(nodes: list[dict[str, Any]], first: date, last: date) -> list[dict[str, Any]]:
    """The expected points, summed here from the ledger's entries."""
    credited: dict[date, int] = defaultdict(int)
    debited: dict[date, int] = defaultdict(int)
    balance_before = 0
    for node in nodes:
        day = datetime.fromisoformat(node["createdAt"]).date()
        delta = node["balanceDeltaCredits"]
        if day < first:
            balance_before += delta
        elif delta > 0:
            credited[day] += delta
        else:
            debited[day] -= delta
    points, balance = [], balance_before
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        balance += credited[day] - debited[day]
        points.append(
            {
                "date": day.isoformat(),
                "closingBalanceCredits": balance,
                "creditedCredits": credited[day],
                "debitedCredits": debited[day],
            }
        )
    return points


async def history(org: Org, first: date, last: date) -> list[dict[str, Any]]:
    data = await org.api(HISTORY, {"from": first.isoformat(), "to": last.isoformat()})
    return data["balanceHistory"]  # type: ignore[no-any-return]


async def test_balance_history_equals_the_day_by_day_sum_of_the_ledger(
    make: Factory, emulator: StripeEmulator, clock: FakeClock
) -> None:
    # given top-ups, spends and refunds over several days (2026-11-20 onwards), one quiet
    org = await make.org()
    service = make.client(await make.token(None, "billing:spend"))
    await save_card(org.api, emulator)
    await topup(org, 50_000, "t1")
    clock.advance(timedelta(hours=2))
    first = await reserve(service, org, 8_000, "r1")
    await settle(service, CAPTURE, first, amountCredits=6_000)
    clock.advance(timedelta(days=1))
    second = await reserve(service, org, 3_000, "r2")
    await settle(service, CAPTURE, second)
    await settle(service, REFUND, first, reason="returned")
    clock.advance(timedelta(days=2))
    await topup(org, 20_000, "t2")
    await reserve(service, org, 1_000, "r3")  # held: the balance does not move
    clock.advance(timedelta(hours=13))  # past midnight
    third = await reserve(service, org, 500, "r4")
    await settle(service, CAPTURE, third)
    nodes = await ledger_pages(org)

    # when the history is asked for around it, and from inside it
    whole = await history(org, date(2026, 11, 19), date(2026, 11, 26))
    inside = await history(org, date(2026, 11, 21), date(2026, 11, 23))

    # then every day is the sum of its entries, quiet days carrying the balance over
    assert whole == day_by_day(nodes, date(2026, 11, 19), date(2026, 11, 26))
    assert inside == day_by_day(nodes, date(2026, 11, 21), date(2026, 11, 23))
    assert [p["closingBalanceCredits"] for p in whole] == [
        0,
        44_000,
        47_000,
        47_000,
        67_000,
        66_500,
        66_500,
        66_500,
    ]
    assert whole[2] == {
        "date": "2026-11-21",
        "closingBalanceCredits": 47_000,
        "creditedCredits": 6_000,
        "debitedCredits": 3_000,
    }
    # and the last closing balance is the wallet's
    assert whole[-1]["closingBalanceCredits"] == nodes[0]["balanceAfterCredits"]


async def test_balance_history_bad_ranges_name_the_argument(make: Factory) -> None:
    org = await make.org(credits=100)

    backwards = await org.api.post(HISTORY, {"from": "2026-11-20", "to": "2026-11-19"})
    too_long = await org.api.post(HISTORY, {"from": "2025-01-01", "to": "2026-01-02"})
    leap_year = await history(org, date(2024, 1, 1), date(2024, 12, 31))

    for response in (backwards, too_long):
        body = response.json()
        assert body["data"] == {"balanceHistory": None}
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["field"] == "to"
        assert "`to`" in error["message"]
    assert len(leap_year) == 366
    assert leap_year[-1]["date"] == "2024-12-31"


async def test_balance_history_needs_billing_read_and_is_the_callers_own(make: Factory) -> None:
    # given two organizations, only one of which has moved credits in the range
    ours = await make.org()
    theirs = await make.org(credits=9_999, name="Rival")
    write_only = make.client(await make.token(ours.pk, "billing:write"))
    # (the seed grant is booked at the real time, not the fake clock's: a range around today
    # holds it even if midnight passes meanwhile)
    today = datetime.now(UTC).date()
    days = (today - timedelta(days=1), today + timedelta(days=1))

    # when each asks
    own = await history(ours, *days)
    their_own = await history(theirs, *days)
    refused = (await write_only.post(HISTORY, {"from": "2026-11-19", "to": "2026-11-20"})).json()

    # then neither sees the other's movements, and billing:read is required
    assert [p["closingBalanceCredits"] for p in own] == [0, 0, 0]
    assert sum(p["creditedCredits"] for p in own) == 0
    assert their_own[-1]["closingBalanceCredits"] == 9_999
    assert sum(p["creditedCredits"] for p in their_own) == 9_999
    assert refused["data"] == {"balanceHistory": None}
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_client_hanging_up_mid_export_gives_its_connection_back(
    make: Factory, http: httpx.AsyncClient
) -> None:
    # given a ledger far longer than one batch (bulk-inserted, running totals chaining)
    org = await make.org()
    async with make.app.billing.db.write() as session:
        wallet = await ledger.wallet_for(session, org.pk)
        rows = [
            {
                "organization_id": org.pk,
                "wallet_id": wallet.id,
                "kind": "ADJUSTMENT",
                "amount_credits": 1,
                "balance_delta_credits": 1,
                "available_delta_credits": 1,
                "balance_after_credits": i + 1,
                "available_after_credits": i + 1,
                "description": f"entry {i}",
                "created_at": datetime(2026, 11, 1, tzinfo=UTC),
            }
            for i in range(30_000)
        ]
        await session.execute(insert(LedgerEntry), rows)

    # when more clients than the database pool holds each read a little and hang up
    url = f"{make.app.base_url}/v1/op/billing.credits.transactions?format=csv"
    for _ in range(60):
        async with http.stream("GET", url, headers={"Authorization": f"Bearer {org.token}"}) as r:
            assert r.status_code == 200
            async for _chunk in r.aiter_raw():
                break

    # then the server still reads the database promptly: no session was left behind
    wallet_now = await asyncio.wait_for(org.api("{ wallet { balanceCredits } }"), timeout=20)
    assert wallet_now == {"wallet": {"balanceCredits": 0}}
    whole = parsed(await csv_export(http, make.app.base_url, org.token))
    assert len(whole) == 1 + 30_000
    assert whole[1][6] == "30000"
