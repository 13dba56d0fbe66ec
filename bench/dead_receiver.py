"""API latency with a customer webhook receiver that never answers, against none.

    .venv/bin/python -m bench.dead_receiver [--reads 300] [--topups 40]

One `gql-billing serve` (SQLite, the in-process worker on, so deliveries run beside the
API), the Stripe emulator, one organization with a saved card. Phase "none": sequential
wallet reads and top-ups. Phase "dead receiver": ten endpoints point at a socket that
accepts and never answers, 200 test events are queued, and a balance alert is set; every
top-up then records a `topup.succeeded` for each endpoint, so the worker's delivery slots are
all held by sends waiting out their 10-second timeout while the same reads and top-ups are
measured. Writes bench/dead_receiver.md. A figure to read, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from gql_billing.stripe_emulator import LocalStripe

from . import servers, topups

HERE = Path(__file__).resolve().parent
WALLET = "{ wallet { balanceCredits availableCredits balanceAlert { triggered } } }"
CREATE = """
mutation C($hook: String!) { createWebhookEndpoint(input: {url: $hook}) {
  __typename ... on WebhookEndpointCreated { endpoint { id } } } }
"""
SEND_TEST = "mutation S($id: ID!) { sendTestWebhook(input: {id: $id}) { __typename } }"
SET_ALERT = """
mutation { setBalanceAlert(input: {enabled: true, thresholdCredits: 1000000000}) {
  __typename } }
"""
ENDPOINTS = "{ webhookEndpoints { deliveries(first: 100) { edges { node { status attempts } } } } }"


def dead_receiver() -> tuple[str, socket.socket]:
    """A listening socket whose connections are accepted and never answered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/hooks", listener


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [servers.venv_script("gql-billing"), *args, "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def gql(client: httpx.Client, url: str, token: str, query: str, **variables: Any) -> Any:
    return topups._graphql(client, url, token, query, variables)


def timed(client: httpx.Client, url: str, token: str, reads: int, count: int) -> dict[str, Any]:
    read_ms, topup_ms = [], []
    for _ in range(reads):
        started = time.perf_counter()
        gql(client, url, token, WALLET)
        read_ms.append((time.perf_counter() - started) * 1000)
    for _ in range(count):
        started = time.perf_counter()
        done = gql(client, url, token, topups.TOPUP, key=str(uuid.uuid4()))
        assert done["topup"]["__typename"] == "TopupSuccess", done
        topup_ms.append((time.perf_counter() - started) * 1000)
    return {"reads": _summary(read_ms), "topups": _summary(topup_ms)}


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "n": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--topups", type=int, default=80)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    emulator = LocalStripe()
    emulator.start()
    env = {
        "GQL_BILLING_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        # Development: loopback receivers are allowed (production would refuse them).
        "GQL_BILLING_ENV": "development",
        "GQL_BILLING_RATE_LIMIT_REQUESTS": str(10**9),
        "GQL_BILLING_WORKER_INTERVAL_SECONDS": "0.5",
        "STRIPE_SECRET_KEY": topups.STRIPE_KEY,
        "STRIPE_API_BASE": emulator.base_url,
    }
    full_env = {**os.environ, **env}
    subprocess.run([servers.venv_script("gql-billing"), "migrate"], env=full_env, check=True)
    org = cli(full_env, "org", "create", "--name", "Bench")["id"]
    token = cli(
        full_env, "token", "create", "--org", org, "--scopes", "billing:read,billing:write"
    )["token"]
    server = servers.start(
        "serve",
        lambda port: [servers.venv_script("gql-billing"), "serve", "--port", str(port)],
        env=env,
        workdir=workdir,
        probe=lambda client, base: client.get(f"{base}/healthz").status_code == 200,
    )
    url = f"{server.base_url}/graphql"
    listener = None
    try:
        topups.save_card(url, token, emulator.base_url)
        with httpx.Client(timeout=60.0) as client:
            timed(client, url, token, 30, 3)  # warm-up
            none = timed(client, url, token, args.reads, args.topups)
            receiver_url, listener = dead_receiver()
            ids = [
                gql(client, url, token, CREATE, hook=receiver_url)["createWebhookEndpoint"][
                    "endpoint"
                ]["id"]
                for _ in range(10)
            ]
            for n in range(200):
                gql(client, url, token, SEND_TEST, id=ids[n % 10])
            gql(client, url, token, SET_ALERT)
            time.sleep(2)  # the worker has claimed and is waiting on the dead receiver
            dead = timed(client, url, token, args.reads, args.topups)
            pending = gql(client, url, token, ENDPOINTS)["webhookEndpoints"]
    finally:
        server.stop()
        emulator.stop()
        if listener is not None:
            listener.close()
    attempted = sum(
        1 for e in pending for d in e["deliveries"]["edges"] if d["node"]["attempts"] > 0
    )
    lines = [
        "# API latency with a receiver that never answers",
        "",
        "`python -m bench.dead_receiver` (sequential requests, one `gql-billing serve` on SQLite",
        "with its in-process worker, the Stripe emulator without added latency).",
        "",
        "| phase | wallet read p50 | p99 | top-up p50 | p99 |",
        "|---|---|---|---|---|",
    ]
    for name, figures in (("no endpoint", none), ("10 endpoints, dead receiver", dead)):
        r, t = figures["reads"], figures["topups"]
        cells = [r["p50_ms"], r["p99_ms"], t["p50_ms"], t["p99_ms"]]
        lines.append(f"| {name} | " + " | ".join(f"{c} ms" for c in cells) + " |")
    lines += [
        "",
        f"Reads: {none['reads']['n']} per phase; top-ups: {none['topups']['n']} per phase. "
        f"Deliveries that had already timed out by the end of the dead-receiver phase: "
        f"{attempted} (the worker holds 16 sends at a time, each waiting out its 10 s "
        "timeout; the rest were queued behind them).",
    ]
    (HERE / "dead_receiver.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
