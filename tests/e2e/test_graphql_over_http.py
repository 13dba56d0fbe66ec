"""GraphQL over HTTP beyond the graphql-http audit (tests/clients): content negotiation,
refusals as GraphQL-shaped JSON, and the playground's files served by the app itself."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import urljoin

import httpx
import pytest
from starlette.requests import Request

from conftest import Factory, Org
from gql_billing.graphql import view

GRAPHQL_RESPONSE = "application/graphql-response+json"
VALID = "{ viewer { scopes } }"
INVALID = "{ viewer { nope } }"


@pytest.fixture
async def org(make: Factory) -> Org:
    return await make.org()


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        # Apollo Client 4's HttpLink:
        (f"{GRAPHQL_RESPONSE},application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        (f"{GRAPHQL_RESPONSE};q=0", "application/json"),
        ("text/plain", "application/json"),
    ],
)
async def test_the_response_type_follows_the_accept_header(
    org: Org, accept: str | None, media_type: str
) -> None:
    headers = {"Accept": accept} if accept else {}

    valid = await org.api.post(VALID, headers=headers)
    invalid = await org.api.post(INVALID, headers=headers)

    assert valid.status_code == 200
    assert valid.headers["content-type"] == media_type
    assert invalid.headers["content-type"] == media_type
    if media_type == GRAPHQL_RESPONSE:
        # Validation failed: nothing ran, so a 400 and no data entry.
        assert invalid.status_code == 400
        assert "data" not in invalid.json()
    else:
        assert invalid.status_code == 200
        assert invalid.json()["data"] is None
    assert invalid.json()["errors"][0]["message"].startswith("Cannot query field 'nope'")


async def test_errors_once_execution_ran_keep_200_for_graphql_response_json(
    make: Factory,
) -> None:
    spender = make.client(await make.token(None, "billing:spend"))

    response = await spender.post(
        "{ viewer { scopes } wallet { balanceCredits } }", headers={"Accept": GRAPHQL_RESPONSE}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["data"]["wallet"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


@pytest.mark.parametrize("accept", [None, GRAPHQL_RESPONSE])
async def test_a_body_that_is_not_json_is_a_graphql_shaped_400(
    org: Org, http: httpx.AsyncClient, accept: str | None
) -> None:
    headers = org.api.headers(
        {"Content-Type": "application/json", **({"Accept": accept} if accept else {})}
    )

    response = await http.post(org.api.url, content=b'{"query": ', headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == (accept or "application/json")
    [error] = response.json()["errors"]
    assert error == {
        "message": "Unable to parse request body as JSON",
        "extensions": {"code": "BAD_REQUEST"},
    }


@pytest.mark.parametrize("operation_name", [{"obj": "ect"}, 0, False, ["array"]])
async def test_an_operation_name_that_is_not_a_string_is_400(
    org: Org, http: httpx.AsyncClient, operation_name: object
) -> None:
    body = {"query": VALID, "operationName": operation_name}

    response = await http.post(org.api.url, json=body, headers=org.api.headers())

    assert response.status_code == 400
    assert "operationName" in response.json()["errors"][0]["message"]


async def test_a_mutation_over_get_is_405(org: Org, http: httpx.AsyncClient) -> None:
    response = await http.get(
        org.api.url,
        params={"query": "mutation { createSetupIntent { __typename } }"},
        headers=org.api.headers({"Accept": GRAPHQL_RESPONSE}),
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json() == {
        "errors": [
            {
                "message": "mutations are not allowed when using GET",
                "extensions": {"code": "METHOD_NOT_ALLOWED"},
            }
        ]
    }


async def test_a_refused_token_follows_the_accept_header(
    make: Factory, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        make.app.graphql_url, json={"query": VALID}, headers={"Accept": GRAPHQL_RESPONSE}
    )

    assert response.status_code == 401
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in response.json()


# -- the playground -----------------------------------------------------------------------------


async def test_the_playground_loads_every_file_from_the_app(
    make: Factory, http: httpx.AsyncClient
) -> None:
    page = await http.get(make.app.graphql_url, headers={"Accept": "text/html"})
    files = re.findall(r'(?:src|href)="([^"]+)"\s+integrity="([^"]+)"', page.text)

    assert len(files) == 7  # React, ReactDOM, js-cookie, GraphiQL and its explorer: JS and CSS
    assert "https://" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))
    for path, integrity in files:
        response = await http.get(urljoin(make.app.graphql_url, path))
        assert response.status_code == 200, path
        digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
        assert f"sha384-{digest}" == integrity, path


@pytest.mark.parametrize("accept", [None, "application/json", GRAPHQL_RESPONSE])
@pytest.mark.parametrize(
    "query",
    [
        "{ wallet { availableCredits } transactions(first: 3) { edges { cursor } } }",
        INVALID,
        "{ transactions(first: -1) { edges { cursor } } }",
        "mutation { topup(input: {amountCredits: 1}) { __typename } }",
        "{ wallet { balanceCredits } ",
    ],
)
async def test_a_json_post_answers_as_the_general_path_does(
    org: Org,
    make: Factory,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    accept: str | None,
    query: str,
) -> None:
    # A plain JSON POST takes a shorter way to execution; switched off, the same request
    # takes Strawberry's whole request handling. Same status, type and body either way.
    headers = {"Authorization": f"Bearer {org.token}"}
    if accept:
        headers["Accept"] = accept
    url = make.app.graphql_url
    direct = await http.post(url, json={"query": query}, headers=headers)
    monkeypatch.setattr(view, "single_json_post", lambda *_: None)
    general = await http.post(url, json={"query": query}, headers=headers)
    assert (direct.status_code, direct.headers["content-type"]) == (
        general.status_code,
        general.headers["content-type"],
    )
    assert direct.json() == general.json()
    assert direct.status_code in (200, 400)


def test_only_a_single_json_operation_takes_the_short_way() -> None:
    def post(body: bytes, content_type: str = "application/json", **headers: str) -> object:
        scope = {
            "type": "http",
            "method": headers.pop("method", "POST"),
            "headers": [
                (b"content-type", content_type.encode()),
                *((k.encode(), v.encode()) for k, v in headers.items()),
            ],
        }
        return view.single_json_post(Request(scope), body)

    assert post(b'{"query": "{ viewer { scopes } }", "variables": null}') is not None
    assert post(b'{"query": "{ a }"}', "application/json; charset=utf-8") is not None
    assert post(b'{"query": "{ a }"}', method="GET") is None
    assert post(b'{"query": "{ a }"}', "application/graphql") is None
    assert post(b'[{"query": "{ a }"}]') is None  # a batch
    assert post(b'{"query": "{ a }"') is None  # not JSON
    assert post(b'{"extensions": {"persistedQuery": {}}}') is None  # no query text
    assert post(b'{"query": "{ a }", "variables": [1]}') is None
    assert post(b'{"query": "{ a }", "operationName": 5}') is None
    assert post(b'{"query": "{ a }"}', accept="text/event-stream") is None
    assert post(b'{"query": "{ a }"}', accept="multipart/mixed") is None
