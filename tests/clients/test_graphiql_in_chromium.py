"""GraphiQL in a real browser (headless Chromium driven by playwright-core): the playground
loads offline, takes a token in its Headers editor, runs a wallet query and a top-up, and
renders the answers. Screenshots land in test-artifacts/."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from conftest import Factory
from support import node_clients
from support.cards import save_card
from support.emulator import StripeEmulator

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

WALLET = """query Wallet {
  wallet { balanceCredits balance { formatted } }
}"""

TOPUP = """mutation Topup {
  topup(input: {audCents: 50000, idempotencyKey: "graphiql-topup-1"}) {
    __typename
    ... on TopupSuccess { creditsGranted newBalance }
    ... on Problem { title detail }
  }
}"""


async def run_graphiql(chromium: str, url: str, token: str, *operations: str) -> dict[str, Any]:
    node = node_clients.node()
    env = {
        **os.environ,
        "GRAPHQL_URL": url,
        "GRAPHQL_TOKEN": token,
        "CHROMIUM": chromium,
        "ARTIFACTS": str(ARTIFACTS),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [node, "graphiql.mjs", *operations],
        cwd=node_clients.CLIENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def test_graphiql_runs_a_wallet_query_and_a_topup_in_chromium(
    make: Factory, emulator: StripeEmulator
) -> None:
    chromium = node_clients.require("chromium")
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)

    report = await run_graphiql(chromium, make.app.graphql_url, org.token, WALLET, TOPUP)

    # CodeMirror indents with no-break spaces.
    wallet, topup = (result.replace("\xa0", " ") for result in report["results"])
    assert '"balanceCredits": 23500' in wallet
    assert '"formatted": "$235.00"' in wallet
    assert '"__typename": "TopupSuccess"' in topup
    assert '"creditsGranted": 50000' in topup
    assert '"newBalance": 73500' in topup
    assert "mutation: Mutation" in report["docs"], report["docs"]
    assert report["blocked"] == [], "the playground reached beyond the app"
    assert report["pageErrors"] == []
    sizes = await asyncio.to_thread(lambda: [Path(s).stat().st_size for s in report["screenshots"]])
    assert len(sizes) == 2 and all(sizes)
    assert (await org.api("{ wallet { balanceCredits } }"))["wallet"]["balanceCredits"] == 73_500
