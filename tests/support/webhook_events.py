"""Stripe webhook deliveries as Stripe sends them: a JSON event signed over the raw body."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import httpx


def signature(body: str, secret: str) -> str:
    timestamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def event_body(event_type: str, object_id: str, event_id: str | None = None) -> str:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": event_type,
            "data": {"object": {"id": object_id, "object": event_type.split(".")[0]}},
        }
    )


async def deliver(http: httpx.AsyncClient, base_url: str, body: str, secret: str) -> httpx.Response:
    return await http.post(
        f"{base_url}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": signature(body, secret), "Content-Type": "application/json"},
    )
