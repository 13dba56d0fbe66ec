"""The operator's `gql-billing` commands, run as a user would, against a served app."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from gql_billing.graphql.ids import pk_of
from gql_billing.settings import Settings
from support.app_server import serve

CLI = str(Path(sys.executable).with_name("gql-billing"))
WALLET = "{ viewer { organization { id name plan } scopes } wallet { balanceCredits } }"


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GQL_BILLING_DATABASE_URL": settings.database_url}
    return await asyncio.to_thread(
        subprocess.run, [CLI, *args], env=env, capture_output=True, text=True, timeout=60
    )


async def cli_json(settings: Settings, *args: str) -> dict[str, Any]:
    done = await cli(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


async def query(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await http.post(
        url, json={"query": WALLET}, headers={"Authorization": f"Bearer {token}"}
    )


async def test_org_token_and_credits_from_the_command_line(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    org_id = (await cli_json(settings, "org", "create", "--name", "Geo Pty", "--plan", "free"))[
        "id"
    ]
    token = (
        await cli_json(
            settings, "token", "create", "--org", org_id, "--scopes", "billing:read,billing:write"
        )
    )["token"]
    granted = await cli_json(
        settings, "credits", "grant", "--org", org_id, "--credits", "23500", "--reason", "welcome"
    )

    async with serve(settings) as app:
        body = (await query(http, app.graphql_url, token)).json()

    assert pk_of(org_id, "Organization") is not None
    assert granted == {"balanceCredits": 23_500, "availableCredits": 23_500}
    assert body["data"] == {
        "viewer": {
            "organization": {"id": org_id, "name": "Geo Pty", "plan": "FREE"},
            "scopes": ["BILLING_READ", "BILLING_WRITE"],
        },
        "wallet": {"balanceCredits": 23_500},
    }


async def test_revoked_token_is_unauthenticated(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    org_id = (await cli_json(settings, "org", "create", "--name", "Revoker"))["id"]
    issued = await cli_json(settings, "token", "create", "--org", org_id)

    async with serve(settings) as app:
        before = await query(http, app.graphql_url, issued["token"])
        revoked = await cli(settings, "token", "revoke", issued["prefix"])
        after = await query(http, app.graphql_url, issued["token"])

    assert before.status_code == 200
    assert revoked.returncode == 0, revoked.stderr
    assert after.status_code == 401
    assert after.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_organization_tokens_cannot_hold_billing_spend(settings: Settings) -> None:
    org_id = (await cli_json(settings, "org", "create", "--name", "Greedy"))["id"]

    refused = await cli(settings, "token", "create", "--org", org_id, "--scopes", "billing:spend")
    service = await cli_json(settings, "token", "create", "--service", "--name", "orders")

    assert refused.returncode != 0
    assert "billing:spend" in refused.stderr
    assert service["token"].startswith("gqlb_")


async def test_a_debit_adjustment_never_goes_below_zero(settings: Settings) -> None:
    org_id = (await cli_json(settings, "org", "create", "--name", "Small"))["id"]
    await cli_json(
        settings, "credits", "grant", "--org", org_id, "--credits", "100", "--reason", "x"
    )

    overdraw = await cli(
        settings, "credits", "grant", "--org", org_id, "--credits", "-101", "--reason", "fix"
    )
    exact = await cli_json(
        settings, "credits", "grant", "--org", org_id, "--credits", "-100", "--reason", "fix"
    )

    assert overdraw.returncode != 0
    assert "available" in overdraw.stderr
    assert exact == {"balanceCredits": 0, "availableCredits": 0}
