"""The query cost limit: page sizes multiplied through nesting, aliases counted, fragments
expanded, refused before anything runs with a QUERY_TOO_COMPLEX error naming the cost and the
limit; configurable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.settings import Settings
from support.app_server import serve

ENTRY = (
    "id kind amountCredits balanceDeltaCredits availableDeltaCredits balanceAfterCredits "
    "availableAfterCredits description reference createdAt "
    "reservation { id status amountCredits approval { id status reason } }"
)
# One full page of the ledger with each entry's reservation and approval: 1 + 100 x 24.
PAGE = f"transactions(first: 100) {{ edges {{ cursor node {{ {ENTRY} }} }} "
PAGE += "pageInfo { hasNextPage endCursor } }"
PAGE_COST = 2_401
FULL_PAGE = "{ " + PAGE + " }"
# Thirty aliases of it (within the alias limit of 30): what a flood looks like.
THIRTY_PAGES = "{ " + " ".join(f"p{i}: {PAGE}" for i in range(30)) + " }"
THIRTY_PAGES_COST = 30 * PAGE_COST
# The same, the page size from a variable (it counts as the largest page) inside a fragment.
THIRTY_PAGES_IN_A_FRAGMENT = (
    "query Flood($n: Int) { ...Pages }\n"
    "fragment Pages on Query { "
    + " ".join(f"p{i}: transactions(first: $n) {{ ...Page }}" for i in range(30))
    + " }\n"
    f"fragment Page on TransactionConnection {{ edges {{ cursor node {{ {ENTRY} }} }} "
    "pageInfo { hasNextPage endCursor } }"
)
DEFAULT_MAX_COST = 5_000
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def cost_errors(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (e["message"], e["extensions"]["maximum"])
        for e in body.get("errors", [])
        if e.get("extensions", {}).get("code") == "QUERY_TOO_COMPLEX"
        and e["extensions"].get("limit") == "cost"
    ]


@pytest.fixture
async def org(make: Factory) -> Org:
    return await make.org(credits=23_500)


async def test_a_full_page_with_nested_reservations_and_approvals_is_accepted(org: Org) -> None:
    body = (await org.api.post(FULL_PAGE)).json()

    assert "errors" not in body, body
    [edge] = body["data"]["transactions"]["edges"]
    assert (edge["node"]["kind"], edge["node"]["amountCredits"]) == ("ADJUSTMENT", 23_500)


async def test_thirty_aliased_full_pages_are_refused_naming_the_cost_and_the_limit(
    org: Org,
) -> None:
    response = await org.api.post(THIRTY_PAGES)

    body = response.json()
    assert body["data"] is None
    assert cost_errors(body) == [
        (f"Query cost {THIRTY_PAGES_COST} exceeds the maximum of {DEFAULT_MAX_COST}", 5_000)
    ]


async def test_the_cost_counts_through_fragments_and_variable_page_sizes(org: Org) -> None:
    response = await org.api.post(THIRTY_PAGES_IN_A_FRAGMENT, {"n": 100})

    assert cost_errors(response.json()) == [
        (f"Query cost {THIRTY_PAGES_COST} exceeds the maximum of {DEFAULT_MAX_COST}", 5_000)
    ]


async def test_a_client_asking_for_graphql_response_json_gets_400(
    org: Org, http: httpx.AsyncClient
) -> None:
    headers = org.api.headers({"Accept": GRAPHQL_RESPONSE_JSON})

    response = await http.post(org.api.url, json={"query": THIRTY_PAGES}, headers=headers)

    assert response.status_code == 400
    assert "data" not in response.json()
    assert len(cost_errors(response.json())) == 1


# -- configurable -------------------------------------------------------------------------------


@pytest.fixture
async def lower_limit(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Org]:
    monkeypatch.setenv("GQL_BILLING_MAX_QUERY_COST", "2000")
    from_env = Settings(_env_file=None).max_query_cost  # type: ignore[call-arg]
    async with serve(settings.model_copy(update={"max_query_cost": from_env}), clock) as served:
        yield await Factory(served, http).org(credits=23_500)


@pytest.fixture
async def higher_limit(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Org]:
    async with serve(settings.model_copy(update={"max_query_cost": 100_000}), clock) as served:
        yield await Factory(served, http).org(credits=23_500)


async def test_a_lower_limit_from_the_environment_refuses_a_full_page(lower_limit: Org) -> None:
    body = (await lower_limit.api.post(FULL_PAGE)).json()

    assert cost_errors(body) == [(f"Query cost {PAGE_COST} exceeds the maximum of 2000", 2_000)]


async def test_a_higher_limit_lets_thirty_pages_through(higher_limit: Org) -> None:
    body = (await higher_limit.api.post(THIRTY_PAGES)).json()

    assert "errors" not in body, body
    assert len(body["data"]) == 30
