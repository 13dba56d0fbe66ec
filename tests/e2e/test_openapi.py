"""The REST reference: /v1/openapi.json is valid OpenAPI 3.1, describes every operation, and
the running API keeps to it (schemathesis against a served `gql-billing serve`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import TEST_SECRET_KEY
from gql_billing.openapi import build_openapi
from gql_billing.rest import OPERATIONS
from gql_billing.settings import Settings
from support import databases
from support.app_server import serve
from support.emulator import StripeEmulator
from support.processes import CLI, gateway_env, servers

EXAMPLES_PER_OPERATION = 25


def good_requests(card_id: str) -> dict[str, dict[str, Any]]:
    """One request per operation that succeeds on the served organization (a saved Visa)."""
    return {
        "billing.credits.balance": {"query": {"currency": "USD", "locale": "en-US"}},
        "billing.credits.transactions": {"query": {"limit": 5, "kind": "GRANT,BONUS"}},
        "payment_methods.create_setup_intent": {"body": {}},
        "payment_methods.attach": {"body": {"payment_method_id": "pm_card_visa"}},
        "payment_methods.set_default": {"body": {"payment_method_id": card_id}},
        "billing.topup": {"body": {"aud_cents": 50_000, "idempotency_key": "conformance-1"}},
        "billing.set_auto_topup": {
            "body": {
                "enabled": True,
                "threshold_credits": 5_000,
                "topup_amount_credits": 20_000,
                "daily_charge_cap_aud": 1_000,
            }
        },
    }


@dataclass
class Served:
    base_url: str
    token: str
    card_id: str


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    template_db: Path,
    postgres: databases.PostgresDatabases | None,
) -> Iterator[Served]:
    """`gql-billing serve` in its own process (schemathesis calls it synchronously), with an
    organization, its token and a saved default card, against its own Stripe emulator."""
    stripe = StripeEmulator()
    stripe.start()
    pg_name = None
    if postgres is None:
        path = tmp_path_factory.mktemp("openapi") / "billing.db"
        shutil.copy(template_db, path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        pg_name, url = asyncio.run(postgres.create())
    env = gateway_env(
        url,
        stripe.base_url,
        TEST_SECRET_KEY,
        GQL_BILLING_RUN_WORKER="false",
        GQL_BILLING_RATE_LIMIT_REQUESTS="100000",
        # servers() pipes stderr without reading it: request lines would fill the pipe.
        GQL_BILLING_LOG_LEVEL="WARNING",
    )
    try:
        org = _cli(env, "org", "create", "--name", "Conformance Pty", "--json")["id"]
        token = _cli(env, "token", "create", "--org", org, "--json")["token"]
        # A loaded machine can take a while to import and migrate.
        with servers(1, env, start_timeout_seconds=180) as [graphql_url]:
            base_url = graphql_url.removesuffix("/graphql")
            attached = httpx.post(
                f"{base_url}/v1/op/payment_methods.attach",
                json={"payment_method_id": "pm_card_visa", "set_as_default": True},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert attached.status_code == 200, attached.text
            yield Served(base_url, token, attached.json()["payment_method"]["id"])
    finally:
        stripe.stop()
        if postgres is not None and pg_name is not None:
            asyncio.run(postgres.drop(pg_name))


def _cli(env: dict[str, str], *args: str) -> dict[str, str]:
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_served_document_is_valid_openapi_3_1_covering_every_operation(
    served: Served,
) -> None:
    document = httpx.get(f"{served.base_url}/v1/openapi.json").json()

    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    assert document == build_openapi()
    assert sorted(document["paths"]) == sorted(f"/v1/op/{name}" for name in OPERATIONS)
    methods = {
        path.removeprefix("/v1/op/"): method.upper()
        for path, item in document["paths"].items()
        for method in item
    }
    assert methods == {name: op.method for name, op in OPERATIONS.items()}
    parameters = {
        p["name"]
        for item in document["paths"].values()
        for op in item.values()
        for p in op.get("parameters", [])
    }
    assert {"limit", "cursor", "kind", "currency", "locale"} <= parameters


def test_an_unknown_operation_lists_the_valid_names(served: Served) -> None:
    response = httpx.get(
        f"{served.base_url}/v1/op/billing.balance",
        headers={"Authorization": f"Bearer {served.token}"},
    )

    assert response.status_code == 404
    body = response.json()
    assert body["operations"] == sorted(OPERATIONS)
    assert "billing.credits.balance" in body["detail"]
    assert "/v1/openapi.json" in body["detail"]


def test_the_api_answers_as_its_reference_says(served: Served) -> None:
    schema = schemathesis.openapi.from_dict(build_openapi())
    statuses: Counter[str] = Counter()
    checks = [
        schemathesis.checks.not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    headers = {"Authorization": f"Bearer {served.token}"}
    operations = [result.ok() for result in schema.get_all_operations()]

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=served.base_url, headers=headers, checks=checks, timeout=30
            )
            statuses[f"{case.operation.label} {response.status_code}"] += 1

        run()

    # Random input rarely makes a valid top-up: each operation also gets one request that
    # succeeds, so every 200 schema is checked against a real answer.
    by_name = {operation.definition.raw["operationId"]: operation for operation in operations}
    good = good_requests(served.card_id)
    for name, request in good.items():
        case = by_name[name].Case(**request)
        response = case.call_and_validate(
            base_url=served.base_url, headers=headers, checks=checks, timeout=30
        )
        assert response.status_code == 200, (name, response.text)
        statuses[f"{case.operation.label} {response.status_code}"] += 1

    calls = sum(statuses.values())
    # The figures behind the reference's claim: how many calls, and what they answered.
    print(f"\nschemathesis: {len(operations)} operations, {calls} calls")
    for key, count in sorted(statuses.items()):
        print(f"  {key}: {count}")
    assert len(operations) == len(OPERATIONS) == len(good)
    assert not [key for key in statuses if key.endswith(tuple(f" {s}" for s in range(500, 600)))]


async def test_the_browsable_reference_is_offline_and_development_only(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    async with serve(settings) as development:
        page = await http.get(f"{development.base_url}/v1/docs")
    production_settings = settings.model_copy(update={"env": "production"})
    async with serve(production_settings) as production:
        hidden = await http.get(f"{production.base_url}/v1/docs")
        document = await http.get(f"{production.base_url}/v1/openapi.json")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'fetch("/v1/openapi.json")' in page.text
    # Nothing fetched from elsewhere: no external scripts, styles or fonts.
    assert "src=" not in page.text and "<link" not in page.text
    assert "http://" not in page.text and "https://" not in page.text
    assert hidden.status_code == 404
    assert document.status_code == 200
