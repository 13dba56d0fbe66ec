"""The Python client example runs against the served app, as its docstring says."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Factory
from support.cards import save_card
from support.emulator import StripeEmulator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python_client.py"


async def test_python_client_example_tops_up_and_reads_the_wallet(
    make: Factory, emulator: StripeEmulator
) -> None:
    org = await make.org(credits=23_500)
    await save_card(org.api, emulator)
    env = {**os.environ, "GQL_BILLING_URL": make.app.graphql_url, "GQL_BILLING_TOKEN": org.token}
    argv = [sys.executable, str(EXAMPLE), "--topup-aud-cents", "50000", "--idempotency-key", "ex"]

    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    topup_line, wallet_line = done.stdout.strip().splitlines()
    assert json.loads(topup_line)["topup"] == {
        "__typename": "TopupSuccess",
        "creditsGranted": 50_000,
        "bonusCredits": 0,
        "newBalance": 73_500,
    }
    wallet = json.loads(wallet_line)
    assert wallet["wallet"]["balance"]["formatted"] == "$735.00"
    assert wallet["transactions"]["edges"][0]["node"]["kind"] == "GRANT"
