"""A real webhook receiver on a loopback port (a thread running http.server), scripted to
answer each request with the next status of a list, or to hang."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> dict[str, Any]:
        """The payload, if the signature is good for `secret` (raises otherwise)."""
        payload: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return payload


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)
    # This many requests (the first ones) get no answer until the receiver closes.
    hang_first: int = 0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    got_one: threading.Event = field(default_factory=threading.Event)

    def of_type(self, event_type: str, secret: str) -> list[dict[str, Any]]:
        with self.lock:
            items = list(self.received)
        payloads = [r.verify(secret) for r in items]
        return [p for p in payloads if p["type"] == event_type]

    def ids(self) -> list[str]:
        with self.lock:
            return [r.webhook_id for r in self.received]


@contextmanager
def receiver(statuses: list[int] | None = None, *, hang_first: int = 0) -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            me = state["r"]
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with me.lock:
                me.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                status = me.statuses.pop(0) if me.statuses else 200
                hang = len(me.received) <= me.hang_first
            me.got_one.set()
            if hang:
                me.release.wait(60)
                return
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    # A listen queue for the worker's concurrent sends (the default of 5 drops connections
    # when two workers send 16 each, and a dropped connection is a failed attempt).
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 128})
    server = server_class(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    state["r"] = Receiver(f"http://127.0.0.1:{port}/hooks", list(statuses or []), hang_first)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        state["r"].release.set()
        server.shutdown()
        server.server_close()
