"""Query limits, each at its boundary: depth 10, aliases 30 (fragments expanded),
tokens 2000, body 64 KiB, batching off or bounded, page size 100, fragment cycles."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from strawberry.extensions.validation_cache import DEFAULT_MAXSIZE, _get_validate_cache

from conftest import Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.settings import Settings
from support.app_server import serve


def chain(links: int) -> str:
    """Reservation -> approval -> reservation ... `links` fields deep, ending in `id`."""
    body = "id"
    for link in reversed((["approval", "reservation"] * links)[:links]):
        body = f"{link} {{ {body} }}"
    return body


def nested(depth: int) -> str:
    """reservations > edges > node > the chain > id: `depth` fields from the root."""
    return f"{{ reservations {{ edges {{ node {{ {chain(depth - 4)} }} }} }} }}"


def nested_in_fragments(depth: int) -> str:
    return (
        "{ reservations { ...Page } }\n"
        "fragment Page on ReservationConnection { edges { node { ...Chain } } }\n"
        f"fragment Chain on Reservation {{ {chain(depth - 4)} }}"
    )


def aliased(count: int) -> str:
    return " ".join(f"a{i}: viewer {{ scopes }}" for i in range(count))


def wallet_sums(count: int) -> str:
    return (
        "fragment Sums on Wallet { "
        + " ".join(f"b{i}: balanceCredits" for i in range(count))
        + " }"
    )


DEPTH_10 = nested(10)
DEPTH_11 = nested(11)
DEPTH_11_IN_FRAGMENTS = nested_in_fragments(11)
ALIASES_30 = "{ " + aliased(30) + " }"
ALIASES_31 = "{ " + aliased(31) + " }"
# Strawberry's own alias limiter counted the operation only: 31 aliases behind one spread.
ALIASES_31_IN_A_FRAGMENT = "{ ...Many }\nfragment Many on Query { " + aliased(31) + " }"
# A fragment counts each time it is spread: 1 + 15 is fine, 2 + 2 x 15 is not.
SPREAD_ONCE = "{ one: wallet { ...Sums } }\n" + wallet_sums(15)
SPREAD_TWICE = "{ one: wallet { ...Sums } two: wallet { ...Sums } }\n" + wallet_sums(15)
VIEWER = "{ viewer { scopes } }"  # 6 tokens
# Comments count as tokens (a flood of them costs the lexer as much as names do); padding with
# them keeps validation trivial, where 2000 repeated fields would trip graphql-core's own
# overlapping-fields budget first.
TOKENS_2000 = VIEWER + "\n#" * 1994
TOKENS_2001 = VIEWER + "\n#" * 1995
SELF_SPREAD = "{ ...Loop }\nfragment Loop on Query { viewer { scopes } ...Loop }"
TWO_CYCLE = "{ ...A }\nfragment A on Query { viewer { scopes } ...B }\nfragment B on Query { ...A }"


def fragment_chain(length: int) -> str:
    """`length` fragments, each spreading the next, the last selecting the viewer."""
    links = "\n".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(length))
    return f"{{ ...F0 }}\n{links}\nfragment F{length} on Query {{ viewer {{ scopes }} }}"


LONG_CHAIN = fragment_chain(100)
# About as long as 2000 tokens allow; graphql-core aborts validation past its nesting budget.
LONGEST_CHAIN = fragment_chain(200)
SCOPES = ["BILLING_READ", "BILLING_WRITE"]
KiB = 1024


async def post(org: Org, query: str) -> dict[str, Any]:
    response = await org.api.post(query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def limit_errors(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (e["extensions"]["limit"], e["extensions"]["maximum"])
        for e in body.get("errors", [])
        if e.get("extensions", {}).get("code") == "QUERY_TOO_COMPLEX"
    ]


@pytest.fixture
async def org(make: Factory) -> Org:
    return await make.org()


# -- depth --------------------------------------------------------------------------------------


async def test_depth_of_10_is_allowed(org: Org) -> None:
    body = await post(org, DEPTH_10)

    assert body == {"data": {"reservations": {"edges": []}}}


@pytest.mark.parametrize("query", [DEPTH_11, DEPTH_11_IN_FRAGMENTS], ids=["inline", "fragments"])
async def test_depth_of_11_is_refused_before_execution(org: Org, query: str) -> None:
    body = await post(org, query)

    assert body["data"] is None
    assert limit_errors(body) == [("depth", 10)]
    assert body["errors"][0]["message"] == "Query depth 11 exceeds the maximum of 10"


# -- aliases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [ALIASES_30, SPREAD_ONCE], ids=["inline", "fragment"])
async def test_up_to_30_aliases_are_allowed(org: Org, query: str) -> None:
    body = await post(org, query)

    assert "errors" not in body


@pytest.mark.parametrize(
    "query",
    [ALIASES_31, ALIASES_31_IN_A_FRAGMENT, SPREAD_TWICE],
    ids=["inline", "in-a-fragment", "fragment-spread-twice"],
)
async def test_more_than_30_aliases_are_refused_wherever_they_hide(org: Org, query: str) -> None:
    body = await post(org, query)

    assert body["data"] is None
    assert limit_errors(body) == [("aliases", 30)]


# -- tokens -------------------------------------------------------------------------------------


async def test_a_document_of_2000_tokens_is_allowed(org: Org) -> None:
    body = await post(org, TOKENS_2000)

    assert body == {"data": {"viewer": {"scopes": SCOPES}}}


async def test_a_document_of_2001_tokens_is_refused_while_parsing(org: Org) -> None:
    body = await post(org, TOKENS_2001)

    assert body["data"] is None
    [error] = body["errors"]
    assert "more than 2000 tokens" in error["message"]


# -- body size ----------------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid request of exactly `size` bytes: the padding rides in an unused variable."""
    empty = json.dumps({"query": VIEWER, "variables": {"pad": ""}}).encode()
    body = json.dumps({"query": VIEWER, "variables": {"pad": "x" * (size - len(empty))}}).encode()
    assert len(body) == size
    return body


def post_bytes(org: Org, body: bytes | AsyncIterator[bytes]) -> dict[str, Any]:
    headers = org.api.headers({"Content-Type": "application/json"})
    return {"url": org.api.url, "content": body, "headers": headers}


async def test_a_body_of_64_kib_is_allowed(org: Org, http: httpx.AsyncClient) -> None:
    response = await http.post(**post_bytes(org, padded(64 * KiB)))

    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"scopes": ["BILLING_READ", "BILLING_WRITE"]}}}


async def test_a_body_over_64_kib_is_413_from_its_length(org: Org, http: httpx.AsyncClient) -> None:
    response = await http.post(**post_bytes(org, padded(65 * KiB)))

    assert response.status_code == 413
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_chunked_body_over_64_kib_is_413_while_reading(
    org: Org, http: httpx.AsyncClient
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = padded(65 * KiB)
        for start in range(0, len(body), 8 * KiB):
            yield body[start : start + 8 * KiB]

    request = post_bytes(org, chunks())
    response = await http.post(**request)

    assert "content-length" not in {k.lower() for k in request["headers"]}
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


# -- batching -----------------------------------------------------------------------------------


async def test_a_batched_request_is_refused(org: Org, http: httpx.AsyncClient) -> None:
    batch = [{"query": VIEWER}, {"query": VIEWER}]

    response = await http.post(org.api.url, json=batch, headers=org.api.headers())

    assert response.status_code == 400
    assert "batching is not enabled" in response.text.lower()


@pytest.fixture
async def batching(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Org]:
    bounded = settings.model_copy(update={"max_batch_operations": 2})
    async with serve(bounded, clock) as served:
        yield await Factory(served, http).org()


@pytest.mark.parametrize(("size", "status"), [(2, 200), (3, 400)])
async def test_batching_when_turned_on_is_bounded(
    batching: Org, http: httpx.AsyncClient, size: int, status: int
) -> None:
    batch = [{"query": VIEWER}] * size

    response = await http.post(batching.api.url, json=batch, headers=batching.api.headers())

    assert response.status_code == status
    if status == 200:
        assert [r["data"] for r in response.json()] == [{"viewer": {"scopes": SCOPES}}] * size


# -- page size ----------------------------------------------------------------------------------

CONNECTIONS = ["transactions", "topups", "reservations", "approvals", "invoices"]


@pytest.mark.parametrize("connection", CONNECTIONS)
@pytest.mark.parametrize("argument", ["first", "last"])
async def test_a_page_holds_at_most_100(org: Org, connection: str, argument: str) -> None:
    query = (
        f"query Page($n: Int) {{ {connection}({argument}: $n) {{ pageInfo {{ hasNextPage }} }} }}"
    )

    allowed = (await org.api.post(query, {"n": 100})).json()
    refused = (await org.api.post(query, {"n": 101})).json()

    assert "errors" not in allowed
    assert refused["data"] == {connection: None}
    assert refused["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": argument}


# -- fragment cycles ----------------------------------------------------------------------------


@pytest.mark.parametrize("query", [SELF_SPREAD, TWO_CYCLE], ids=["self", "two"])
async def test_a_fragment_cycle_is_a_validation_error_not_a_crash(org: Org, query: str) -> None:
    body = await post(org, query)

    assert body["data"] is None
    assert any("Cannot spread fragment" in e["message"] for e in body["errors"]), body


async def test_a_long_fragment_chain_is_measured_not_refused(org: Org) -> None:
    body = await post(org, LONG_CHAIN)

    assert body == {"data": {"viewer": {"scopes": SCOPES}}}


async def test_a_too_long_fragment_chain_is_a_validation_error_not_a_crash(org: Org) -> None:
    body = await post(org, LONGEST_CHAIN)

    assert body == {"data": None, "errors": [{"message": "Validation aborted."}]}


# -- the validation cache -----------------------------------------------------------------------


async def test_limits_keep_the_validation_cache_hitting(org: Org) -> None:
    # The served app runs in this process, so Strawberry's module-level cache is visible here.
    query = f"query Cached{uuid.uuid4().hex} {{ viewer {{ scopes }} }}"
    cache = _get_validate_cache(DEFAULT_MAXSIZE)

    await post(org, query)
    before = cache.cache_info()
    body = await post(org, query)
    after = cache.cache_info()

    assert body == {"data": {"viewer": {"scopes": SCOPES}}}
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)
