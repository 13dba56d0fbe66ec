"""A receiver of the gateway's customer webhooks, with the `standardwebhooks` package.

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py [--port 8080]

Verifies every request's signature with the endpoint's secret (the one
`createWebhookEndpoint` showed once), answers 2xx quickly, and acts on each event once:
deliveries are at-least-once, so a retry carries the same `webhook-id` and is skipped here.
Each event it acts on is printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        # In production, a table with a unique key on the id (the check and the work in
        # one transaction); a set is enough for an example.
        self.seen: set[str] = set()

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        """The HTTP status to answer with."""
        try:
            event: dict[str, Any] = self.webhook.verify(body, headers)
        except WebhookVerificationError:
            return 400  # not from the gateway (or too old): never act on it
        webhook_id = headers["webhook-id"]
        if webhook_id in self.seen:
            return 200  # a retry of one already handled
        self.seen.add(webhook_id)
        self.act(webhook_id, event)
        return 200

    def act(self, webhook_id: str, event: dict[str, Any]) -> None:
        # Real work goes here: page someone on wallet.balance_low, book a top-up in the
        # finance system on topup.succeeded, ask for 3-D Secure on topup.requires_action...
        line = {"webhook_id": webhook_id, "type": event["type"], "data": event["data"]}
        print(json.dumps(line), flush=True)


def serve(receiver: Receiver, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.send_response(receiver.handle(body, headers))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", file=sys.stderr)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    serve(Receiver(os.environ["WEBHOOK_SECRET"]), args.port)


if __name__ == "__main__":
    main()
