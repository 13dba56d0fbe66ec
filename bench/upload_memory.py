"""Peak memory of the server while a huge body arrives at each door.

`python -m bench.upload_memory [--megabytes 300]` starts `gql-billing serve` afresh for each
door (so each peak is that door's alone), warms it up with one small request, then streams
one chunked upload of `--megabytes` to the door and reports the server's peak resident memory
(VmHWM) before and after, and what the client got back. The websocket door gets one message
of that size. Figures to read, not a pass/fail. `--source other/src` measures another tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from . import servers

CHUNK = b"x" * (64 * 1024)
VIEWER = {"query": "{ viewer { scopes } }"}


@dataclass(frozen=True)
class Door:
    name: str
    upload: Callable[[str, str, int], str]


def chunks(total_bytes: int) -> Iterator[bytes]:
    for _ in range(total_bytes // len(CHUNK)):
        yield CHUNK


def post(path: str) -> Callable[[str, str, int], str]:
    def upload(base_url: str, token: str, total_bytes: int) -> str:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if path == "/webhooks/stripe":
            headers = {"Stripe-Signature": "t=1,v1=forged", "Content-Type": "application/json"}
        try:
            with httpx.Client(timeout=120) as client:
                response = client.post(
                    base_url + path, headers=headers, content=chunks(total_bytes)
                )
        except httpx.TransportError as error:
            return f"connection closed ({type(error).__name__})"
        return f"HTTP {response.status_code}"

    return upload


def websocket(base_url: str, token: str, total_bytes: int) -> str:
    async def send() -> str:
        url = base_url.replace("http://", "ws://", 1) + "/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"], max_size=None) as ws:  # type: ignore[list-item]
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            await ws.send(json.dumps(init))
            await ws.recv()
            padding = "#" * total_bytes
            query = {"query": "{ viewer { scopes } }\n" + padding}
            try:
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
                await asyncio.wait_for(ws.recv(), timeout=60)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                return f"websocket closed ({code})"
            except WebSocketException as error:
                return f"websocket error ({type(error).__name__})"
            return "message answered"

    return asyncio.run(send())


DOORS = [
    Door("POST /graphql", post("/graphql")),
    Door("POST /v1/op/billing.topup", post("/v1/op/billing.topup")),
    Door("POST /webhooks/stripe", post("/webhooks/stripe")),
    Door("websocket /graphql (one message)", websocket),
]


def cli(env: dict[str, str], workdir: Path, *args: str) -> str:
    done = subprocess.run(
        [servers.venv_script("gql-billing"), *args],
        env={**os.environ, **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument(
        "--source", type=Path, help="serve the app of another source tree (its `src`) instead"
    )
    args = parser.parse_args()
    total_bytes = args.megabytes * 1024 * 1024
    workdir = Path(tempfile.mkdtemp(prefix="upload-memory-"))
    env = {
        "GQL_BILLING_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        "GQL_BILLING_ENV": "production",
        "GQL_BILLING_RUN_WORKER": "false",
        # Configured so the webhook reads its body; nothing here reaches Stripe.
        "STRIPE_SECRET_KEY": "sk_test_upload_memory",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "STRIPE_WEBHOOK_SECRET": "whsec_upload_memory",
    }
    if args.source is not None:
        env["PYTHONPATH"] = str(args.source.resolve())
    cli(env, workdir, "migrate")
    org = json.loads(cli(env, workdir, "org", "create", "--name", "Uploads", "--json"))
    token = json.loads(cli(env, workdir, "token", "create", "--org", str(org["id"]), "--json"))[
        "token"
    ]

    def probe(client: httpx.Client, base_url: str) -> bool:
        answer = client.post(
            f"{base_url}/graphql", json=VIEWER, headers={"Authorization": f"Bearer {token}"}
        )
        return answer.status_code == 200

    print(f"{args.megabytes} MB to each door; peak RSS of a fresh `gql-billing serve` (VmHWM)")
    print(f"{'door':34} {'before MB':>10} {'peak MB':>9} {'seconds':>8}  answer")
    for door in DOORS:
        server = servers.start(
            "upload-memory",
            lambda port: [servers.venv_script("gql-billing"), "serve", "--port", str(port)],
            env=env,
            workdir=workdir,
            probe=probe,
        )
        try:
            before = server.peak_rss_mb()
            started = time.perf_counter()
            answer = door.upload(server.base_url, token, total_bytes)
            seconds = time.perf_counter() - started
            # The server may still be dropping the tail of the upload: let it finish.
            time.sleep(1.0)
            peak = server.peak_rss_mb()
            up = probe(httpx.Client(timeout=10), server.base_url)
        finally:
            server.stop()
        status = answer if up else f"{answer}; SERVER DOWN"
        print(f"{door.name:34} {before:10.1f} {peak:9.1f} {seconds:8.1f}  {status}")


if __name__ == "__main__":
    main()
