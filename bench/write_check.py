"""Before the write path is measured: the raw routes leave the same rows as GraphQL.

One reserve+capture pair through each, then the rows each left (the reservation, its ledger
entries, the idempotency key) are read back and compared with their ids, timestamps and
references taken out.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from . import servers
from .raw import fingerprint
from .raw_driver import open_driver

RESERVE = (
    "mutation R($i: ReserveCreditsInput!) { reserveCredits(input: $i) { __typename "
    "... on ReservationCreated { reservation { id } } } }"
)
CAPTURE = (
    "mutation C($i: CaptureReservationInput!) { captureReservation(input: $i) { __typename "
    "... on ReservationCaptured { reservation { id status } } } }"
)
RESERVATION = """
SELECT id, status, billing_mode, amount_credits, captured_credits, description,
    settled_at IS NOT NULL, pending_settlement, payment_intent_id
FROM reservations WHERE reference = ?
"""
ENTRIES = """
SELECT kind, amount_credits, balance_delta_credits, available_delta_credits,
    balance_after_credits - available_after_credits, description, reference, wallet_id
FROM ledger_entries WHERE reservation_id = ? ORDER BY id
"""
KEY = """
SELECT operation, request_hash, resource_id, locked_until IS NULL FROM idempotency_keys
WHERE organization_id = ? AND key = ?
"""


def _pair(client: httpx.Client, server: servers.Server, org: str, reference: str) -> None:
    input_ = {"organizationId": org, "amountCredits": 1, "reference": reference}
    input_["idempotencyKey"] = reference
    if server.name == "raw":
        reserved = client.post(f"{server.base_url}/raw/reserve", json=input_).json()
        reservation = reserved["reservation"]["id"]
        client.post(f"{server.base_url}/raw/capture", json={"reservationId": reservation})
        return
    url = f"{server.base_url}/graphql"
    reserved = client.post(url, json={"query": RESERVE, "variables": {"i": input_}}).json()
    reservation = reserved["data"]["reserveCredits"]["reservation"]["id"]
    capture = {"query": CAPTURE, "variables": {"i": {"reservationId": reservation}}}
    client.post(url, json=capture).raise_for_status()


async def _rows(database_url: str, org_pk: int, reference: str) -> dict[str, Any]:
    """What one pair left, with its ids and its reference replaced by placeholders."""
    driver = await open_driver(database_url)
    try:
        async with driver.reading() as q:
            found = await q.fetchrow(RESERVATION, reference)
            assert found is not None, f"no reservation {reference}"
            reservation_id, *reservation = found
            entries = await q.fetch(ENTRIES, reservation_id)
            key = await q.fetchrow(KEY, org_pk, reference)
    finally:
        await driver.close()
    assert key is not None, f"no idempotency key {reference}"
    request = {"amountCredits": 1, "reference": reference, "description": None}

    def plain(values: Any) -> list[Any]:
        return [v.replace(reference, "REF") if isinstance(v, str) else v for v in values]

    return {
        "reservation": plain(reservation),
        "entries": [plain(entry) for entry in entries],
        "key": [key[0], key[1] == fingerprint(request), key[2] == reservation_id, bool(key[3])],
    }


def check_same_writes(
    graphql: servers.Server,
    raw: servers.Server,
    *,
    service_token: str,
    org_global_id: str,
    org_pk: int,
    database_url: str,
) -> None:
    run = uuid.uuid4().hex[:8]
    left: dict[str, dict[str, Any]] = {}
    headers = {"Authorization": f"Bearer {service_token}"}
    with httpx.Client(timeout=30.0, headers=headers) as client:
        for server in (graphql, raw):
            reference = f"check-{server.name}-{run}"
            _pair(client, server, org_global_id, reference)
            left[server.name] = asyncio.run(_rows(database_url, org_pk, reference))
    ours, theirs = left[graphql.name], left[raw.name]
    if ours != theirs or not ours["entries"]:
        raise RuntimeError(f"GraphQL and the raw routes wrote different rows: {ours} {theirs}")
