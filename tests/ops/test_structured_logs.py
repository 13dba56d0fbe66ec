"""Structured logs: one JSON object per line, a request id on every line of a request, and
never a secret, whatever the request carried."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import TEST_SECRET_KEY, TEST_WEBHOOK_SECRET, Factory
from gql_billing.logs import json_formatter
from support.cards import THREE_D_SECURE, save_card
from support.emulator import StripeEmulator
from support.webhook_events import deliver, event_body

TOPUP = """
mutation Topup($input: TopupInput!) {
  topup(input: $input) {
    __typename
    ... on TopupSuccess { topupAttemptId paymentIntentId newBalance }
    ... on AuthenticationRequired { clientSecret paymentIntentId }
  }
}
"""


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Every log line of the process (ours and the libraries') at INFO, as production gets it."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(output: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


async def test_a_full_topup_logs_ids_but_no_secret_token_or_card(
    make: Factory, emulator: StripeEmulator, log_output: io.StringIO, http: httpx.AsyncClient
) -> None:
    org = await make.org()
    pm = await save_card(org.api, emulator)
    response = await org.api.post(
        TOPUP,
        {"input": {"audCents": 10_000, "idempotencyKey": "logged"}},
        headers={"X-Request-Id": "req-topup-1"},
    )
    success = response.json()["data"]["topup"]
    body = event_body("payment_intent.succeeded", success["paymentIntentId"])
    webhook = await deliver(http, make.app.base_url, body, TEST_WEBHOOK_SECRET)
    challenged = await make.org(name="Challenged")
    await save_card(challenged.api, emulator, THREE_D_SECURE)
    challenge = (
        await challenged.api(TOPUP, {"input": {"audCents": 10_000, "idempotencyKey": "3ds"}})
    )["topup"]

    output = log_output.getvalue()
    records = lines(log_output)

    assert success["__typename"] == "TopupSuccess" and webhook.status_code == 200
    assert challenge["__typename"] == "AuthenticationRequired"
    for secret in (
        org.token,
        challenged.token,
        TEST_SECRET_KEY,
        TEST_WEBHOOK_SECRET,
        challenge["clientSecret"],
        pm,
    ):
        assert secret not in output
    assert "_secret_" not in output
    assert "Bearer" not in output
    request = next(
        r for r in records if r["event"] == "request" and r.get("request_id") == "req-topup-1"
    )
    assert request == {
        **request,
        "level": "info",
        "organization_id": org.pk,
        "operation": "Topup",
        "operation_type": "mutation",
        "fields": "topup",
        "outcome": "TopupSuccess",
        "status": 200,
    }
    granted = next(r for r in records if r.get("status") == "SUCCEEDED")
    assert granted["event"] == "topup status"
    assert granted["payment_intent_id"] == success["paymentIntentId"]
    assert granted["request_id"] == "req-topup-1"


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("abc-123", True),
        ("r" * 128, True),
        ("r" * 129, False),
        ("", False),
        ("ключ".encode(), False),
    ],
)
async def test_a_request_id_is_echoed_when_safe_and_generated_otherwise(
    make: Factory, http: httpx.AsyncClient, sent: str | bytes, echoed: bool
) -> None:
    response = await http.get(f"{make.app.base_url}/healthz", headers={"X-Request-Id": sent})

    request_id = response.headers["x-request-id"]
    if echoed:
        assert request_id == sent
    else:
        assert len(request_id) == 32 and int(request_id, 16) >= 0


async def test_every_answer_carries_a_request_id(make: Factory, http: httpx.AsyncClient) -> None:
    unauthenticated = await http.post(make.app.graphql_url, json={"query": "{ wallet { id } }"})
    missing = await http.get(f"{make.app.base_url}/nowhere")

    assert unauthenticated.status_code == 401 and missing.status_code == 404
    ids = {unauthenticated.headers["x-request-id"], missing.headers["x-request-id"]}
    assert len(ids) == 2


async def test_a_client_gone_mid_request_is_logged_as_499_not_500(
    make: Factory, log_output: io.StringIO
) -> None:
    # given a client that sends its headers and part of a declared body, then hangs up
    org = await make.org()
    url = httpx.URL(make.app.graphql_url)
    _, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        (
            f"POST /graphql HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Authorization: Bearer {org.token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 200\r\nX-Request-Id: gone-away\r\n\r\n"
            '{"query": "{ wall'
        ).encode()
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    # then its access line says the client closed the request, and nothing says 500
    for _ in range(100):
        mine = [x for x in lines(log_output) if x.get("request_id") == "gone-away"]
        if any(x.get("event") == "request" for x in mine):
            break
        await asyncio.sleep(0.05)
    access = [x for x in mine if x.get("event") == "request"]
    assert [(x["path"], x["status"]) for x in access] == [("/graphql", 499)]
    assert not any(x.get("status") == 500 for x in lines(log_output))


@pytest.mark.parametrize(
    ("request_id", "operation"),
    [
        ("Bearer gqlb_stolen", "Plain"),
        ("trace-7", "pm_card4242"),
        ("sk_test_abc123", "Wallet"),
    ],
)
async def test_the_access_line_redacts_what_a_client_put_in_its_fields(
    make: Factory, log_output: io.StringIO, request_id: str, operation: str
) -> None:
    # given a request whose id and operation name (both logged) carry secret-looking text
    org = await make.org()
    document = f"query {operation} {{ wallet {{ availableCredits }} }}"
    response = await org.api.post(document, headers={"X-Request-Id": request_id})

    # then the answer is normal, and its access line has the fields with the secrets blanked
    assert response.status_code == 200 and "errors" not in response.json()
    assert response.headers["x-request-id"] == request_id
    for _ in range(100):  # the access line is written once the answer has been sent
        access = [r for r in lines(log_output) if r["event"] == "request"]
        if access:
            break
        await asyncio.sleep(0.05)
    output = log_output.getvalue()
    for secret in ("gqlb_stolen", "pm_card4242", "sk_test_abc123", org.token):
        assert secret not in output
    assert len(access) == 1
    assert access[0] == {
        **access[0],
        "level": "info",
        "logger": "gql_billing.http",
        "method": "POST",
        "path": "/graphql",
        "status": 200,
        "organization_id": org.pk,
        "fields": "wallet",
        "outcome": "ok",
    }
    assert "[redacted]" in access[0]["request_id"] + access[0]["operation"]
    assert isinstance(access[0]["duration_ms"], float) and access[0]["timestamp"].endswith("Z")
