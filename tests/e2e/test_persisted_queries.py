"""Automatic persisted queries, with the messages Apollo Client's persisted-queries link sends
(@apollo/client/link/persisted-queries over HttpLink: `accept: */*`, the printed document with
`__typename` added, `variables` always present, the document left out until the server asks)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from conftest import Factory, Org
from gql_billing.clock import FakeClock
from gql_billing.settings import Settings
from support.app_server import serve
from support.stripe_proxy import FaultProxy

# Apollo Client prints the document it hashes and sends (graphql-js print, __typename added).
WALLET = "query Wallet {\n  wallet {\n    balanceCredits\n    __typename\n  }\n}"
WALLET_HASH = hashlib.sha256(WALLET.encode()).hexdigest()
BALANCE_IN = (
    "query BalanceIn($currency: String) {\n  wallet {\n    balance(currency: $currency) {\n"
    "      currency\n      __typename\n    }\n    __typename\n  }\n}"
)
TOPUP_NOTHING = "mutation Topup {\n  topup(input: {audCents: 0}) {\n    __typename\n  }\n}"
APOLLO_HEADERS = {"accept": "*/*", "content-type": "application/json"}

NOT_FOUND = {
    "errors": [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
}
NOT_SUPPORTED = {
    "errors": [
        {
            "message": "PersistedQueryNotSupported",
            "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"},
        }
    ]
}


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def hashed(operation: str, document: str, variables: dict[str, Any] | None = None) -> str:
    """The link's first try: the hash only (Apollo's key order, compact JSON)."""
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256(document)}}
    body = {"operationName": operation, "variables": variables or {}, "extensions": extensions}
    return json.dumps(body, separators=(",", ":"))


def with_document(operation: str, document: str, variables: dict[str, Any] | None = None) -> str:
    """The retry after PersistedQueryNotFound: the same message with the document."""
    return hashed(operation, document, variables)[:-1] + f',"query":{json.dumps(document)}}}'


def hashed_get(
    url: str, operation: str, document: str, variables: dict[str, Any] | None = None
) -> str:
    """useGETForHashedQueries: the same fields as query parameters, JSON-encoded."""
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256(document)}}
    params = {
        "operationName": operation,
        "variables": json.dumps(variables or {}, separators=(",", ":")),
        "extensions": json.dumps(extensions, separators=(",", ":")),
    }
    return f"{url}?{urlencode(params)}"


async def send(http: httpx.AsyncClient, org: Org, body: str) -> httpx.Response:
    return await http.post(org.api.url, content=body, headers=org.api.headers(APOLLO_HEADERS))


@pytest.fixture
async def org(make: Factory) -> Org:
    return await make.org(credits=23_500)


async def test_apollo_round_trip_over_post(org: Org, http: httpx.AsyncClient) -> None:
    assert json.loads(hashed("Wallet", WALLET)) == {
        "operationName": "Wallet",
        "variables": {},
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": WALLET_HASH}},
    }

    miss = await send(http, org, hashed("Wallet", WALLET))
    registered = await send(http, org, with_document("Wallet", WALLET))
    hit = await send(http, org, hashed("Wallet", WALLET))

    assert miss.status_code == 200
    assert miss.headers["content-type"] == "application/json"
    assert miss.json() == NOT_FOUND
    expected = {"data": {"wallet": {"balanceCredits": 23_500, "__typename": "Wallet"}}}
    assert (registered.status_code, registered.json()) == (200, expected)
    assert (hit.status_code, hit.json()) == (200, expected)


async def test_a_stored_query_runs_with_its_own_variables(
    org: Org, http: httpx.AsyncClient
) -> None:
    await send(http, org, with_document("BalanceIn", BALANCE_IN, {"currency": "USD"}))

    response = await send(http, org, hashed("BalanceIn", BALANCE_IN, {"currency": "EUR"}))

    assert response.json()["data"]["wallet"]["balance"]["currency"] == "EUR"


async def test_hashed_queries_over_get(org: Org, http: httpx.AsyncClient) -> None:
    url = hashed_get(org.api.url, "BalanceIn", BALANCE_IN, {"currency": "USD"})

    miss = await http.get(url, headers=org.api.headers({"accept": "*/*"}))
    await send(http, org, with_document("BalanceIn", BALANCE_IN, {"currency": "USD"}))
    hit = await http.get(url, headers=org.api.headers({"accept": "*/*"}))

    assert (miss.status_code, miss.json()) == (200, NOT_FOUND)
    assert hit.status_code == 200
    assert hit.json()["data"]["wallet"]["balance"] == {"currency": "USD", "__typename": "Money"}


async def test_a_browser_asking_for_html_with_a_hash_gets_the_query_not_the_playground(
    org: Org, http: httpx.AsyncClient
) -> None:
    await send(http, org, with_document("Wallet", WALLET))
    url = hashed_get(org.api.url, "Wallet", WALLET)

    response = await http.get(url, headers=org.api.headers({"accept": "text/html,*/*"}))

    assert response.json()["data"]["wallet"]["balanceCredits"] == 23_500


async def test_a_stored_mutation_is_still_refused_over_get(
    org: Org, http: httpx.AsyncClient, stripe_proxy: FaultProxy
) -> None:
    posted = await send(http, org, with_document("Topup", TOPUP_NOTHING))
    assert posted.json()["data"]["topup"]["__typename"] == "InvalidInput"

    response = await http.get(
        hashed_get(org.api.url, "Topup", TOPUP_NOTHING), headers=org.api.headers()
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    [error] = response.json()["errors"]
    assert error["message"] == "mutations are not allowed when using GET"
    assert stripe_proxy.requests == []


async def test_a_mutation_document_sent_over_get_is_neither_run_nor_stored(
    org: Org, http: httpx.AsyncClient
) -> None:
    url = (
        hashed_get(org.api.url, "Topup", TOPUP_NOTHING) + "&" + urlencode({"query": TOPUP_NOTHING})
    )

    refused = await http.get(url, headers=org.api.headers())
    afterwards = await send(http, org, hashed("Topup", TOPUP_NOTHING))

    assert refused.status_code == 405
    assert afterwards.json() == NOT_FOUND


async def test_a_hash_that_is_not_the_documents_is_400_and_nothing_is_stored(
    org: Org, http: httpx.AsyncClient
) -> None:
    forged = with_document("Wallet", WALLET).replace(WALLET_HASH, sha256("{ viewer { scopes } }"))

    response = await send(http, org, forged)
    afterwards = await send(http, org, hashed("Wallet", WALLET))

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["message"] == "provided sha does not match query"
    assert afterwards.json() == NOT_FOUND


async def test_a_document_that_fails_validation_is_not_stored(
    org: Org, http: httpx.AsyncClient
) -> None:
    invalid = "query Nope {\n  wallet {\n    noSuchField\n  }\n}"

    response = await send(http, org, with_document("Nope", invalid))
    afterwards = await send(http, org, hashed("Nope", invalid))

    assert response.status_code == 200
    assert response.json()["errors"][0]["message"].startswith("Cannot query field 'noSuchField'")
    assert afterwards.json() == NOT_FOUND


@pytest.mark.parametrize(
    "persisted",
    [{"version": 2, "sha256Hash": WALLET_HASH}, {"version": 1}, "not-an-object"],
    ids=["version-2", "no-hash", "not-an-object"],
)
async def test_a_malformed_persisted_query_is_400(
    org: Org, http: httpx.AsyncClient, persisted: Any
) -> None:
    body = json.dumps({"variables": {}, "extensions": {"persistedQuery": persisted}})

    response = await send(http, org, body)

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_client_accepting_graphql_response_json_gets_a_4xx_miss(
    org: Org, http: httpx.AsyncClient
) -> None:
    # What Apollo Client 4's HttpLink accepts; the link reads the errors of a 4xx answer too.
    accept = "application/graphql-response+json,application/json;q=0.9"
    headers = org.api.headers({**APOLLO_HEADERS, "accept": accept})

    response = await http.post(org.api.url, content=hashed("Wallet", WALLET), headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/graphql-response+json"
    assert response.json() == NOT_FOUND


# -- one organization's documents -----------------------------------------------------------------


async def test_a_hash_runs_only_for_the_organization_that_sent_its_document(
    org: Org, make: Factory, http: httpx.AsyncClient
) -> None:
    # given an organization that stored a document, and another organization
    other = await make.org(credits=1_000, name="Other Imagery")
    await send(http, org, with_document("Wallet", WALLET))

    # when the other organization asks for it by hash (over POST and GET), and for a hash
    # nobody ever stored
    by_post = await send(http, other, hashed("Wallet", WALLET))
    by_get = await http.get(
        hashed_get(other.api.url, "Wallet", WALLET), headers=other.api.headers()
    )
    unknown = await send(http, other, hashed("Never", named("Never")))

    # then the answers are the same: it cannot tell that the document exists
    assert (by_post.status_code, by_post.json()) == (200, NOT_FOUND)
    assert (by_get.status_code, by_get.json()) == (200, NOT_FOUND)
    assert (unknown.status_code, unknown.json()) == (200, NOT_FOUND)

    # while another token of the first organization runs it by hash
    token = await make.token(org.pk, "billing:read")
    colleague = Org(org.pk, org.id, token, make.client(token))
    mine = await send(http, colleague, hashed("Wallet", WALLET))
    assert mine.json()["data"]["wallet"]["balanceCredits"] == 23_500

    # and the other organization, once it sent the document itself, runs it on its own wallet
    await send(http, other, with_document("Wallet", WALLET))
    theirs = await send(http, other, hashed("Wallet", WALLET))
    assert theirs.json()["data"]["wallet"]["balanceCredits"] == 1_000


# -- the store's bound --------------------------------------------------------------------------


@pytest.fixture
async def small_store(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Org]:
    async with serve(settings.model_copy(update={"apq_cache_size": 2}), clock) as served:
        yield await Factory(served, http).org()


def named(name: str) -> str:
    return f"query {name} {{\n  viewer {{\n    scopes\n  }}\n}}"


async def test_the_store_keeps_the_most_recently_used_documents(
    small_store: Org, http: httpx.AsyncClient
) -> None:
    org = small_store
    for name in ("A", "B"):
        await send(http, org, with_document(name, named(name)))
    await send(http, org, hashed("A", named("A")))  # A is now the most recently used
    await send(http, org, with_document("C", named("C")))  # B goes

    answers = {name: (await send(http, org, hashed(name, named(name)))).json() for name in "ABC"}

    assert answers["B"] == NOT_FOUND
    assert (
        answers["A"]
        == answers["C"]
        == {"data": {"viewer": {"scopes": ["BILLING_READ", "BILLING_WRITE"]}}}
    )


@pytest.fixture
async def no_store(
    settings: Settings, clock: FakeClock, http: httpx.AsyncClient
) -> AsyncIterator[Org]:
    async with serve(settings.model_copy(update={"apq_cache_size": 0}), clock) as served:
        yield await Factory(served, http).org()


@pytest.mark.parametrize("message", [hashed, with_document], ids=["hash", "hash-and-document"])
async def test_a_store_of_size_0_tells_clients_persisted_queries_are_not_supported(
    no_store: Org, http: httpx.AsyncClient, message: Any
) -> None:
    response = await send(http, no_store, message("Wallet", WALLET))

    assert (response.status_code, response.json()) == (200, NOT_SUPPORTED)
