"""examples/webhook_receiver.py, run as a process: it receives the gateway's events, acts on
each once however often it is delivered, and refuses a request signed with another secret."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import update

from conftest import Factory
from gql_billing.clock import FakeClock
from gql_billing.models import WebhookDelivery
from support.app_server import ServedApp, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"
CREATE = """
mutation Create($url: String!) {
  createWebhookEndpoint(input: {url: $url}) {
    __typename ... on WebhookEndpointCreated { secret endpoint { id } }
  }
}
"""
SEND_TEST = """
mutation Test($id: ID!) {
  sendTestWebhook(input: {id: $id}) { __typename ... on TestWebhookQueued { delivery { eventId } } }
}
"""


def start_example(port: int, secret: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port)],
        env={"WEBHOOK_SECRET": secret, "PATH": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def unsigned_probe(port: int) -> int:
    """The status the receiver answers a request without a signature (once it listens)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            return httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1).status_code
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the example receiver did not start")


async def test_the_example_receiver_acts_once_per_event(
    app: ServedApp, make: Factory, clock: FakeClock
) -> None:
    org = await make.org()
    port = free_port()
    created = (await org.api(CREATE, {"url": f"http://127.0.0.1:{port}/"}))["createWebhookEndpoint"]
    proc = start_example(port, created["secret"])
    try:
        assert unsigned_probe(port) == 400  # refused, and not acted on
        endpoint_id = created["endpoint"]["id"]
        queued = (await org.api(SEND_TEST, {"id": endpoint_id}))["sendTestWebhook"]
        assert await app.billing.webhook_delivery.run_once() == 1

        # a redelivery of the same event (the receiver's answer lost, say) changes nothing
        async with app.billing.db.write() as session:
            await session.execute(
                update(WebhookDelivery).values(status="PENDING", next_attempt_at=clock.now())
            )
        assert await app.billing.webhook_delivery.run_once() == 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["webhook_id"], line["type"]) for line in lines] == [
        (queued["delivery"]["eventId"], "webhook.test")
    ]
