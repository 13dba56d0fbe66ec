"""Read side over HTTP: viewer, wallet, money, the ledger connection, node, auth and scopes."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from conftest import Factory, Org
from gql_billing import ledger
from gql_billing.auth import revoke_token
from gql_billing.billing.organizations import create_organization, grant_credits
from gql_billing.graphql.ids import to_global_id
from gql_billing.models import Plan
from support.stripe_proxy import FaultProxy

VIEWER = """
{ viewer {
    scopes
    organization { id name plan displayCurrency approvalThresholdCredits }
} }
"""

WALLET = """
{ wallet {
    id balanceCredits reservedCredits availableCredits
    balance { amount currency formatted isEstimate rateAsOf }
    available { amount currency formatted isEstimate rateAsOf }
    autoTopup {
      enabled thresholdCredits topupAmountCredits dailyChargeCapAud chargedTodayAudCents
      disabledReason lastAttempt { id }
    }
    defaultPaymentMethod { id }
    updatedAt
} }
"""

BALANCE_IN = """
query Balance($currency: String) {
  wallet { balance(currency: $currency) {
    amount currency isEstimate rateAsOf
    auLocale: formatted
    usLocale: formatted(locale: "en-US")
  } }
}
"""

PRICE = """
query Price($credits: Credits!, $currency: String) {
  price(credits: $credits, currency: $currency) { amount currency formatted isEstimate rateAsOf }
}
"""

PRICE_WITH_OTHER_FIELDS = """
query Price($currency: String) {
  viewer { scopes }
  wallet { balanceCredits }
  price(credits: 73500, currency: $currency) { amount }
}
"""

TRANSACTIONS = """
query Ledger($first: Int, $after: String, $last: Int, $before: String, $filter: TransactionFilter) {
  transactions(first: $first, after: $after, last: $last, before: $before, filter: $filter) {
    edges { cursor node {
      id kind amountCredits balanceDeltaCredits availableDeltaCredits
      balanceAfterCredits availableAfterCredits description reference createdAt
    } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""

TOPUPS = """
{ topups {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
} }
"""

NODE = """
query Node($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Wallet { balanceCredits }
    ... on Transaction { kind amountCredits description }
    ... on Organization { name }
  }
}
"""

CREATE_SETUP_INTENT = "mutation { createSetupIntent { __typename } }"

# USD per A$1 in money.DEFAULT_RATES_PER_AUD, and when it was set.
USD_RATE = Decimal("0.65322")
RATES_AS_OF = "2026-11-02T00:00:00+00:00"


# -- viewer -------------------------------------------------------------------------------------


async def test_viewer_shows_the_organization_and_the_token_scopes(make: Factory) -> None:
    org = await make.org(name="Orbital Survey", plan=Plan.FREE)

    viewer = (await org.api(VIEWER))["viewer"]

    assert viewer == {
        "scopes": ["BILLING_READ", "BILLING_WRITE"],
        "organization": {
            "id": org.id,
            "name": "Orbital Survey",
            "plan": "FREE",
            "displayCurrency": "AUD",
            "approvalThresholdCredits": None,
        },
    }


async def test_viewer_shows_display_currency_and_approval_threshold(make: Factory) -> None:
    db = make.app.billing.db
    row = await create_organization(
        db,
        name="Geo Enterprise",
        plan=Plan.ENTERPRISE,
        display_currency="usd",
        approval_threshold_credits=500_000,
    )
    assert row.id is not None
    token = await make.token(row.id, "billing:read,billing:approve")

    viewer = (await make.client(token)(VIEWER))["viewer"]

    assert sorted(viewer["scopes"]) == ["BILLING_APPROVE", "BILLING_READ"]
    assert viewer["organization"] == {
        "id": to_global_id("Organization", row.id),
        "name": "Geo Enterprise",
        "plan": "ENTERPRISE",
        "displayCurrency": "USD",
        "approvalThresholdCredits": 500_000,
    }


async def test_service_token_viewer_has_no_organization(make: Factory) -> None:
    token = await make.token(None, "billing:spend")

    viewer = (await make.client(token)(VIEWER))["viewer"]

    assert viewer == {"scopes": ["BILLING_SPEND"], "organization": None}


# -- wallet and money ---------------------------------------------------------------------------


async def test_wallet_after_a_grant_shows_the_figures_in_aud(make: Factory) -> None:
    org = await make.org(credits=23_500)

    wallet = (await org.api(WALLET))["wallet"]

    assert (wallet["balanceCredits"], wallet["reservedCredits"], wallet["availableCredits"]) == (
        23_500,
        0,
        23_500,
    )
    aud = {
        "amount": "235.00",
        "currency": "AUD",
        "formatted": "$235.00",
        "isEstimate": False,
        "rateAsOf": None,
    }
    assert wallet["balance"] == aud
    assert wallet["available"] == aud
    assert wallet["autoTopup"] == {
        "enabled": False,
        "thresholdCredits": 0,
        "topupAmountCredits": 0,
        "dailyChargeCapAud": 0,
        "chargedTodayAudCents": 0,
        "disabledReason": None,
        "lastAttempt": None,
    }
    assert wallet["defaultPaymentMethod"] is None
    assert datetime.fromisoformat(wallet["updatedAt"]).tzinfo is not None


async def test_new_organization_has_an_empty_wallet(make: Factory) -> None:
    org = await make.org()

    wallet = (await org.api(WALLET))["wallet"]

    assert (wallet["balanceCredits"], wallet["availableCredits"]) == (0, 0)
    assert (wallet["balance"]["amount"], wallet["balance"]["formatted"]) == ("0.00", "$0.00")


async def test_balance_in_usd_is_an_estimate_at_the_configured_rate(make: Factory) -> None:
    org = await make.org(credits=73_500)

    balance = (await org.api(BALANCE_IN, {"currency": "USD"}))["wallet"]["balance"]

    expected = (Decimal("735.00") * USD_RATE).quantize(Decimal("0.01"))
    assert str(expected) == "480.12"
    assert (balance["amount"], balance["currency"], balance["isEstimate"]) == (
        "480.12",
        "USD",
        True,
    )
    assert datetime.fromisoformat(balance["rateAsOf"]) == datetime.fromisoformat(RATES_AS_OF)
    # CLDR: a currency code keeps a no-break space from the digits; a symbol does not.
    assert balance["auLocale"] == "USD\u00a0480.12"
    assert balance["usLocale"] == "$480.12"


async def test_currency_code_is_case_insensitive(make: Factory) -> None:
    org = await make.org(credits=73_500)

    balance = (await org.api(BALANCE_IN, {"currency": "usd"}))["wallet"]["balance"]

    assert (balance["amount"], balance["currency"]) == ("480.12", "USD")


async def test_price_in_aud_and_in_usd(make: Factory) -> None:
    org = await make.org()

    aud = (await org.api(PRICE, {"credits": 73_500}))["price"]
    usd = (await org.api(PRICE, {"credits": 73_500, "currency": "USD"}))["price"]

    assert aud == {
        "amount": "735.00",
        "currency": "AUD",
        "formatted": "$735.00",
        "isEstimate": False,
        "rateAsOf": None,
    }
    assert usd == {
        "amount": "480.12",
        "currency": "USD",
        "formatted": "USD\u00a0480.12",
        "isEstimate": True,
        "rateAsOf": usd["rateAsOf"],
    }
    assert datetime.fromisoformat(usd["rateAsOf"]) == datetime.fromisoformat(RATES_AS_OF)


async def test_price_of_a_currency_without_minor_units_has_no_decimals(make: Factory) -> None:
    org = await make.org()

    jpy = (await org.api(PRICE, {"credits": 73_500, "currency": "JPY"}))["price"]

    # 735.00 AUD x 98.41 = 72331.35 JPY, shown in whole yen.
    assert (jpy["amount"], jpy["currency"], jpy["isEstimate"]) == ("72331", "JPY", True)


async def test_unknown_currency_is_a_user_error_and_the_rest_still_resolves(
    make: Factory,
) -> None:
    org = await make.org(credits=23_500)

    response = await org.api.post(PRICE_WITH_OTHER_FIELDS, {"currency": "XYZ"})

    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {
        "viewer": {"scopes": ["BILLING_READ", "BILLING_WRITE"]},
        "wallet": {"balanceCredits": 23_500},
        "price": None,
    }
    [error] = body["errors"]
    assert error["path"] == ["price"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "currency"
    assert "XYZ" in error["message"]


async def test_unknown_locale_is_a_user_error(make: Factory) -> None:
    org = await make.org()
    document = '{ price(credits: 100) { amount formatted(locale: "xx-NOPE") } }'

    response = await org.api.post(document)

    body = response.json()
    assert body["data"] == {"price": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "locale"


# -- the Credits scalar -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "amount"),
    [(9_007_199_254_740_991, "90071992547409.91"), (-9_007_199_254_740_991, "-90071992547409.91")],
)
async def test_credits_up_to_the_largest_safe_integer_are_accepted(
    make: Factory, credits: int, amount: str
) -> None:
    org = await make.org()

    literal = (await org.api(f"{{ price(credits: {credits}) {{ amount }} }}"))["price"]
    variable = (await org.api(PRICE, {"credits": credits}))["price"]

    assert literal == {"amount": amount}
    assert variable["amount"] == amount


@pytest.mark.parametrize("value", ["1.5", "9007199254740992", "-9007199254740992", '"100"'])
async def test_credits_literal_that_is_not_a_safe_integer_is_rejected(
    make: Factory, value: str
) -> None:
    org = await make.org()

    response = await org.api.post(f"{{ price(credits: {value}) {{ amount }} }}")

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert "Credits" in error["message"]


@pytest.mark.parametrize("value", [1.5, 2**53, -(2**53), "100", True])
async def test_credits_variable_that_is_not_a_safe_integer_is_rejected(
    make: Factory, value: Any
) -> None:
    org = await make.org()

    response = await org.api.post(PRICE, {"credits": value})

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert "Credits" in error["message"]


# -- transactions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    kind: str
    amount: int  # signed for ADJUSTMENT
    description: str
    reference: str | None = None


HANDMADE = [
    Seeded("ADJUSTMENT", 50_000, "Opening balance"),
    Seeded("GRANT", 10_000, "Top-up"),
    Seeded("BONUS", 500, "Volume bonus"),
    Seeded("ADJUSTMENT", -1_500, "Correction: duplicate grant"),
    Seeded("RESERVATION", 3_000, "Order 42", "order-42"),
    Seeded("CHARGE", 3_000, "Order 42 delivered", "order-42"),
    Seeded("ADJUSTMENT", 2_000, "Goodwill: outage"),
    Seeded("REFUND", 1_000, "Order 42 partly cancelled", "order-42"),
    Seeded("ADJUSTMENT", -250, "Correction: rounding"),
    Seeded("RESERVATION", 700, "Quote 7", "quote-7"),
    Seeded("RELEASE", 700, "Quote 7 cancelled", "quote-7"),
]
LATER = [
    Seeded("ADJUSTMENT", -100 * n if n % 3 == 0 else 100 * n, f"Goodwill {n}") for n in range(1, 15)
]
SEED = HANDMADE + LATER
NEWEST_FIRST = SEED[::-1]

DELTAS = {  # kind -> (balance delta, available delta) per credit of the movement
    "GRANT": (1, 1),
    "BONUS": (1, 1),
    "REFUND": (1, 1),
    "ADJUSTMENT": (1, 1),
    "RESERVATION": (0, -1),
    "RELEASE": (0, 1),
    "CHARGE": (-1, 0),
}


@dataclass(frozen=True)
class Ledger:
    org: Org
    boundary: datetime  # after HANDMADE, before LATER


async def post(factory: Factory, org: Org, entry: Seeded) -> None:
    db = factory.app.billing.db
    if entry.kind == "ADJUSTMENT":
        await grant_credits(
            db, organization_id=org.pk, amount_credits=entry.amount, reason=entry.description
        )
        return
    movement = getattr(ledger, entry.kind.lower())(entry.amount)
    async with db.write() as session:
        await ledger.post(
            session,
            organization_id=org.pk,
            movement=movement,
            description=entry.description,
            reference=entry.reference,
        )


@pytest.fixture
async def seeded(make: Factory) -> Ledger:
    org = await make.org(name="Ledger Co")
    for entry in HANDMADE:
        await post(make, org, entry)
    boundary = datetime.now(UTC)
    await asyncio.sleep(0.01)
    for entry in LATER:
        await post(make, org, entry)
    return Ledger(org, boundary)


async def page(org: Org, **variables: Any) -> dict[str, Any]:
    return (await org.api(TRANSACTIONS, variables))["transactions"]  # type: ignore[no-any-return]


def descriptions(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["description"] for edge in connection["edges"]]


async def test_ledger_is_newest_first_with_a_default_page_of_20(seeded: Ledger) -> None:
    first = await page(seeded.org)

    assert len(SEED) == 25
    assert descriptions(first) == [e.description for e in NEWEST_FIRST[:20]]
    assert [e["node"]["kind"] for e in first["edges"]] == [e.kind for e in NEWEST_FIRST[:20]]
    info = first["pageInfo"]
    assert (info["hasNextPage"], info["hasPreviousPage"]) == (True, False)
    assert info["startCursor"] == first["edges"][0]["cursor"]
    assert info["endCursor"] == first["edges"][-1]["cursor"]


async def test_each_entry_carries_its_signed_deltas_and_reference(seeded: Ledger) -> None:
    nodes = [e["node"] for e in (await page(seeded.org, first=100))["edges"]]

    expected = []
    for entry in NEWEST_FIRST:
        balance_sign, available_sign = DELTAS[entry.kind]
        expected.append(
            (
                entry.kind,
                abs(entry.amount),
                balance_sign * entry.amount,
                available_sign * entry.amount,
                entry.description,
                entry.reference,
            )
        )
    assert [
        (
            n["kind"],
            n["amountCredits"],
            n["balanceDeltaCredits"],
            n["availableDeltaCredits"],
            n["description"],
            n["reference"],
        )
        for n in nodes
    ] == expected


async def test_running_totals_chain_and_end_at_the_wallet(seeded: Ledger) -> None:
    oldest_first = [e["node"] for e in (await page(seeded.org, first=100))["edges"]][::-1]
    wallet = (await seeded.org.api("{ wallet { balanceCredits availableCredits } }"))["wallet"]

    balance = available = 0
    for node in oldest_first:
        balance += node["balanceDeltaCredits"]
        available += node["availableDeltaCredits"]
        assert (node["balanceAfterCredits"], node["availableAfterCredits"]) == (
            balance,
            available,
        ), node
    assert wallet == {"balanceCredits": balance, "availableCredits": available}
    assert balance == sum(DELTAS[e.kind][0] * e.amount for e in SEED)


async def test_walking_forward_visits_every_entry_once(seeded: Ledger) -> None:
    seen: list[str] = []
    pages = 0
    after = None
    while True:
        current = await page(seeded.org, first=5, after=after)
        pages += 1
        seen.extend(descriptions(current))
        assert current["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not current["pageInfo"]["hasNextPage"]:
            break
        after = current["pageInfo"]["endCursor"]
        assert pages < 10, "pagination does not terminate"

    assert seen == [e.description for e in NEWEST_FIRST]
    assert pages == 5


async def test_walking_backward_visits_every_entry_once(seeded: Ledger) -> None:
    pages: list[list[str]] = []
    before = None
    while True:
        current = await page(seeded.org, last=5, before=before)
        pages.append(descriptions(current))
        if not current["pageInfo"]["hasPreviousPage"]:
            break
        before = current["pageInfo"]["startCursor"]
        assert len(pages) < 10, "pagination does not terminate"

    assert pages[0] == [e.description for e in NEWEST_FIRST[-5:]]
    assert [d for p in reversed(pages) for d in p] == [e.description for e in NEWEST_FIRST]
    assert len(pages) == 5


async def test_ids_and_cursors_are_stable_across_pages(seeded: Ledger) -> None:
    everything = await page(seeded.org, first=25)
    second = await page(seeded.org, first=5, after=everything["edges"][4]["cursor"])

    assert second["edges"] == everything["edges"][5:10]


async def test_filter_by_kinds(seeded: Ledger) -> None:
    result = await page(seeded.org, filter={"kinds": ["GRANT", "BONUS", "REFUND"]})

    assert [(e["node"]["kind"], e["node"]["description"]) for e in result["edges"]] == [
        ("REFUND", "Order 42 partly cancelled"),
        ("BONUS", "Volume bonus"),
        ("GRANT", "Top-up"),
    ]
    assert result["pageInfo"]["hasNextPage"] is False


async def test_filter_by_reference(seeded: Ledger) -> None:
    result = await page(seeded.org, filter={"reference": "order-42"})

    assert [e["node"]["kind"] for e in result["edges"]] == ["REFUND", "CHARGE", "RESERVATION"]
    assert {e["node"]["reference"] for e in result["edges"]} == {"order-42"}


async def test_filter_by_creation_time(seeded: Ledger) -> None:
    after = await page(seeded.org, first=100, filter={"createdAfter": seeded.boundary.isoformat()})
    before = await page(
        seeded.org, first=100, filter={"createdBefore": seeded.boundary.isoformat()}
    )

    assert descriptions(after) == [e.description for e in LATER[::-1]]
    assert descriptions(before) == [e.description for e in HANDMADE[::-1]]


async def test_filters_combine_and_paginate(seeded: Ledger) -> None:
    adjustments = [e.description for e in NEWEST_FIRST if e.kind == "ADJUSTMENT"]
    filter = {"kinds": ["ADJUSTMENT"], "createdBefore": seeded.boundary.isoformat()}

    first = await page(seeded.org, first=2, filter=filter)
    rest = await page(seeded.org, first=100, after=first["pageInfo"]["endCursor"], filter=filter)

    handmade = [d for d in adjustments if d in {e.description for e in HANDMADE}]
    assert descriptions(first) + descriptions(rest) == handmade
    assert first["pageInfo"]["hasNextPage"] is True
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_another_organizations_ledger_is_invisible(seeded: Ledger, make: Factory) -> None:
    other = await make.org(name="Other", credits=100)

    theirs = await page(other, first=100)

    assert [(e["node"]["kind"], e["node"]["description"]) for e in theirs["edges"]] == [
        ("ADJUSTMENT", "seed")
    ]


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 101}, "first"),
        ({"last": 101}, "last"),
        ({"first": -1}, "first"),
        ({"first": 5, "last": 5}, "last"),
        ({"after": "garbage"}, "after"),
        ({"before": "garbage"}, "before"),
        ({"after": to_global_id("Wallet", 1)}, "after"),
    ],
)
async def test_bad_page_arguments_are_user_errors(
    seeded: Ledger, variables: dict[str, Any], field: str
) -> None:
    response = await seeded.org.api.post(TRANSACTIONS, variables)

    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"transactions": None}
    [error] = body["errors"]
    assert error["path"] == ["transactions"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}


async def test_page_of_100_is_allowed(seeded: Ledger) -> None:
    result = await page(seeded.org, first=100)

    assert len(result["edges"]) == 25
    assert result["pageInfo"]["hasNextPage"] is False


async def test_topups_of_a_new_organization_is_an_empty_connection(make: Factory) -> None:
    org = await make.org()

    topups = (await org.api(TOPUPS))["topups"]

    assert topups == {
        "edges": [],
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        },
    }


# -- node ---------------------------------------------------------------------------------------


async def ids_of(org: Org) -> dict[str, str]:
    data = await org.api(
        "{ viewer { organization { id } } wallet { id }"
        " transactions(first: 1) { edges { node { id } } } }"
    )
    return {
        "Organization": data["viewer"]["organization"]["id"],
        "Wallet": data["wallet"]["id"],
        "Transaction": data["transactions"]["edges"][0]["node"]["id"],
    }


async def test_node_refetches_wallet_transaction_and_organization(make: Factory) -> None:
    org = await make.org(credits=23_500, name="Node Co")
    ids = await ids_of(org)

    nodes = {
        kind: (await org.api(NODE, {"id": global_id}))["node"] for kind, global_id in ids.items()
    }

    assert ids["Organization"] == org.id
    assert nodes["Organization"] == {
        "__typename": "Organization",
        "id": org.id,
        "name": "Node Co",
    }
    assert nodes["Wallet"] == {
        "__typename": "Wallet",
        "id": ids["Wallet"],
        "balanceCredits": 23_500,
    }
    assert nodes["Transaction"] == {
        "__typename": "Transaction",
        "id": ids["Transaction"],
        "kind": "ADJUSTMENT",
        "amountCredits": 23_500,
        "description": "seed",
    }


@pytest.mark.parametrize("kind", ["Organization", "Wallet", "Transaction"])
async def test_node_of_another_organization_is_null(make: Factory, kind: str) -> None:
    owner = await make.org(credits=100, name="Owner")
    other = await make.org(credits=100, name="Other")
    ids = await ids_of(owner)

    response = await other.api.post(NODE, {"id": ids[kind]})

    assert response.json() == {"data": {"node": None}}


@pytest.mark.parametrize(
    "global_id",
    [
        "garbage",
        "",
        "!!!",
        to_global_id("Wallet", 999_999),
        to_global_id("Reservation", 1),
        to_global_id("ApiToken", 1),
        to_global_id("Wallet", 1).rstrip("=") + "x",
    ],
)
async def test_node_of_a_garbage_id_is_null(make: Factory, global_id: str) -> None:
    org = await make.org(credits=100)

    response = await org.api.post(NODE, {"id": global_id})

    assert response.json() == {"data": {"node": None}}


def encoded(raw: str) -> str:
    """An opaque id or cursor as the server encodes them (base64url, no padding)."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_node_of_an_id_with_a_non_ascii_digit_is_null(make: Factory) -> None:
    org = await make.org(credits=100)

    response = await org.api.post(NODE, {"id": encoded("Wallet:²")})

    assert response.json() == {"data": {"node": None}}


async def test_cursor_with_a_non_ascii_digit_is_a_user_error(make: Factory) -> None:
    org = await make.org(credits=100)

    response = await org.api.post(TRANSACTIONS, {"after": encoded("cursor:²")})

    body = response.json()
    assert body["data"] == {"transactions": None}
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}


# -- authentication -----------------------------------------------------------------------------


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_no_token_is_401(make: Factory, http: httpx.AsyncClient) -> None:
    response = await http.post(make.app.graphql_url, json={"query": "{ viewer { scopes } }"})

    assert_unauthenticated(response)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer gqlb_notARealTokenAtAllxxxxxxxxxxxxxxxxxxxxxxxxx",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "gqlb_without_a_scheme",
    ],
)
async def test_an_invalid_token_is_401(
    make: Factory, http: httpx.AsyncClient, authorization: str
) -> None:
    response = await http.post(
        make.app.graphql_url,
        json={"query": "{ viewer { scopes } }"},
        headers={"Authorization": authorization},
    )

    assert_unauthenticated(response)


async def test_a_revoked_token_is_401(make: Factory) -> None:
    org = await make.org()
    assert (await org.api.post("{ viewer { scopes } }")).status_code == 200

    await revoke_token(make.app.billing.db, org.token[:13])
    response = await org.api.post("{ viewer { scopes } }")

    assert_unauthenticated(response)


async def test_revoking_one_token_keeps_the_others(make: Factory) -> None:
    org = await make.org()
    second = make.client(await make.token(org.pk, "billing:read"))

    await revoke_token(make.app.billing.db, org.token[:13])

    assert (await second("{ viewer { scopes } }"))["viewer"]["scopes"] == ["BILLING_READ"]


# -- authorization ------------------------------------------------------------------------------


async def test_read_only_token_cannot_create_a_setup_intent(
    make: Factory, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()
    reader = make.client(await make.token(org.pk, "billing:read"))

    response = await reader.post(CREATE_SETUP_INTENT)

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["createSetupIntent"]
    assert stripe_proxy.requests == []


async def test_missing_read_scope_blanks_only_that_field(make: Factory) -> None:
    org = await make.org(credits=23_500)
    writer = make.client(await make.token(org.pk, "billing:write"))

    response = await writer.post("{ viewer { scopes } wallet { balanceCredits } }")

    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"viewer": {"scopes": ["BILLING_WRITE"]}, "wallet": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["wallet"]


async def test_service_token_has_no_wallet(make: Factory) -> None:
    service = make.client(await make.token(None, "billing:spend"))

    response = await service.post("{ viewer { scopes } wallet { balanceCredits } }")

    body = response.json()
    assert body["data"] == {"viewer": {"scopes": ["BILLING_SPEND"]}, "wallet": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


# -- GET and the playground ---------------------------------------------------------------------


async def test_query_over_get_with_a_token(make: Factory, http: httpx.AsyncClient) -> None:
    org = await make.org()

    response = await http.get(
        make.app.graphql_url,
        params={"query": "{ viewer { scopes } }"},
        headers=org.api.headers(),
    )

    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"scopes": ["BILLING_READ", "BILLING_WRITE"]}}}


async def test_query_over_get_without_a_token_is_401(
    make: Factory, http: httpx.AsyncClient
) -> None:
    response = await http.get(
        make.app.graphql_url,
        params={"query": "{ viewer { scopes } }"},
        headers={"Accept": "text/html"},
    )

    assert_unauthenticated(response)


async def test_browser_gets_the_graphiql_playground(make: Factory, http: httpx.AsyncClient) -> None:
    response = await http.get(make.app.graphql_url, headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_mutation_over_get_is_refused(
    make: Factory, http: httpx.AsyncClient, stripe_proxy: FaultProxy
) -> None:
    org = await make.org()

    response = await http.get(
        make.app.graphql_url, params={"query": CREATE_SETUP_INTENT}, headers=org.api.headers()
    )

    assert 400 <= response.status_code < 500
    assert stripe_proxy.requests == []
