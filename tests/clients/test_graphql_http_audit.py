"""The graphql-http audit suite (GraphQL over HTTP conformance) against the served app."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter
from typing import Any

from conftest import Factory
from support import node_clients
from support.app_server import ServedApp


async def run_audit(app: ServedApp, token: str) -> list[dict[str, Any]]:
    node = node_clients.node()
    env = {**os.environ, "GRAPHQL_URL": app.graphql_url, "GRAPHQL_TOKEN": token}
    done = await asyncio.to_thread(
        subprocess.run,
        [node, "audit.mjs"],
        cwd=node_clients.CLIENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


async def test_every_graphql_over_http_audit_passes(make: Factory) -> None:
    org = await make.org()

    results = await run_audit(make.app, org.token)

    statuses = Counter(r["status"] for r in results)
    print(f"\ngraphql-http audit: {statuses['ok']} of {len(results)} passed ({dict(statuses)})")
    not_ok = [r for r in results if r["status"] != "ok"]
    assert not_ok == [], json.dumps(not_ok, indent=2)
