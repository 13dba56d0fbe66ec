"""The raw baseline: hand-written Starlette routes over the database driver, no project code.

What a small hand-written service would do for the same answers: bare Starlette, the driver
itself (aiosqlite or asyncpg, `bench/raw_driver.py`), SQL written by hand against the tables
`gql-billing migrate` makes, orjson. Nothing from `gql_billing` is imported: the token hash
(sha256 of the token, hex), the Relay ids (base64url of `Type:pk`, unpadded) and the
idempotency fingerprint are the same few lines written again here.

- `GET /raw/transactions`: the same JSON as `{ wallet { balanceCredits } transactions(first:
  20) { edges { node { id kind amountCredits balanceAfterCredits createdAt } } } }`: three
  statements (the token by its hash, the wallet row, a keyset page of 21).
- `GET /raw/available`: the same JSON as `{ wallet { availableCredits } }` (token, wallet).
- `POST /raw/reserve` and `POST /raw/capture`: what `reserveCredits` and `captureReservation`
  write for a STANDARD organization paying with credits, each one transaction: the
  idempotency key claimed by insert, the reservation row, the conditional wallet UPDATE,
  the ledger entry (and, on capture, the reservation settled). Other plans, approvals and
  auto top-up are not this baseline's business: such a request is refused (422) and
  changes nothing.

Run: `python -m bench.raw --port 8002` (GQL_BILLING_DATABASE_URL as for `gql-billing serve`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .raw_driver import Driver, Queries, open_driver

PAGE_SIZE = 20
TOKEN_PREFIX = "gqlb_"
RESERVE_OPERATION = "reserveCredits"
KEY_LEASE = timedelta(seconds=60)

TOKEN = "SELECT organization_id, scopes FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL"
WALLET = "SELECT balance_credits, reserved_credits FROM wallets WHERE organization_id = ?"
PAGE = """
SELECT id, kind, amount_credits, balance_after_credits, created_at FROM ledger_entries
WHERE organization_id = ? ORDER BY id DESC LIMIT ?
"""
ORGANIZATION = "SELECT plan, approval_threshold_credits FROM organizations WHERE id = ?"
CLAIM_KEY = """
INSERT INTO idempotency_keys
    (organization_id, operation, key, request_hash, resource_id, locked_until, created_at)
VALUES (?, ?, ?, ?, NULL, ?, ?)
ON CONFLICT (organization_id, operation, key) DO NOTHING
RETURNING id
"""
EXISTING_KEY = """
SELECT request_hash, resource_id FROM idempotency_keys
WHERE organization_id = ? AND operation = ? AND key = ?
"""
NEW_RESERVATION = """
INSERT INTO reservations (organization_id, status, billing_mode, amount_credits,
    captured_credits, reference, description, stripe_key, created_at)
VALUES (?, 'HELD', 'CREDITS', ?, 0, ?, ?, ?, ?)
RETURNING id
"""
RESOLVE_KEY = "UPDATE idempotency_keys SET resource_id = ?, locked_until = NULL WHERE id = ?"
MOVE = """
UPDATE wallets SET balance_credits = balance_credits + ?,
    reserved_credits = reserved_credits + ?, updated_at = ?
WHERE organization_id = ? AND balance_credits + ? - (reserved_credits + ?) >= 0
    AND reserved_credits + ? >= 0
RETURNING id, balance_credits, reserved_credits, auto_topup_enabled
"""
ENTRY = """
INSERT INTO ledger_entries (organization_id, wallet_id, kind, amount_credits,
    balance_delta_credits, available_delta_credits, balance_after_credits,
    available_after_credits, description, reference, reservation_id, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
RESERVATION = """
SELECT organization_id, status, billing_mode, amount_credits, captured_credits, reference,
    description
FROM reservations WHERE id = ?
"""
SETTLE = """
UPDATE reservations SET status = 'CAPTURED', captured_credits = ?, settled_at = ?
WHERE id = ?
"""


class Refused(Exception):
    """A request this route answers with an error body (and, inside a write, a rollback)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def global_id(type_name: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")


def pk_of(value: Any, type_name: str) -> int | None:
    if not isinstance(value, str) or not value or len(value) > 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    name, _, pk = raw.partition(":")
    if name != type_name or not (pk.isascii() and pk.isdigit()) or len(pk) > 18:
        return None
    return int(pk)


def fingerprint(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def answer(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def refusal(refused: Refused) -> Response:
    return answer({"error": {"code": refused.code, "message": refused.message}}, refused.status)


UNAUTHENTICATED = Refused(401, "Unauthenticated", "A valid bearer token is required")


async def caller_scopes(q: Queries, request: Request) -> tuple[int | None, set[str]]:
    """The token's organization and scopes; Refused for a missing, unknown or revoked one."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise UNAUTHENTICATED
    row = await q.fetchrow(TOKEN, hash_token(token))
    if row is None:
        raise UNAUTHENTICATED
    return row[0], set(row[1].split(","))


async def reader_org(q: Queries, request: Request) -> int:
    organization_id, scopes = await caller_scopes(q, request)
    if organization_id is None or "billing:read" not in scopes:
        raise UNAUTHENTICATED
    return organization_id


class Routes:
    def __init__(self) -> None:
        self.driver: Driver | None = None

    @property
    def db(self) -> Driver:
        assert self.driver is not None, "the lifespan opens the driver"
        return self.driver

    async def transactions(self, request: Request) -> Response:
        try:
            async with self.db.reading() as q:
                org = await reader_org(q, request)
                wallet = await q.fetchrow(WALLET, org)
                rows = await q.fetch(PAGE, org, PAGE_SIZE + 1)
                edges = [
                    {
                        "node": {
                            "id": global_id("Transaction", row[0]),
                            "kind": row[1],
                            "amountCredits": row[2],
                            "balanceAfterCredits": row[3],
                            "createdAt": q.iso(row[4]),
                        }
                    }
                    for row in rows[:PAGE_SIZE]
                ]
        except Refused as refused:
            return refusal(refused)
        if wallet is None:
            return refusal(Refused(404, "NotFound", "No wallet for this organization"))
        data = {"wallet": {"balanceCredits": wallet[0]}, "transactions": {"edges": edges}}
        return answer({"data": data})

    async def available(self, request: Request) -> Response:
        try:
            async with self.db.reading() as q:
                wallet = await q.fetchrow(WALLET, await reader_org(q, request))
        except Refused as refused:
            return refusal(refused)
        if wallet is None:
            return refusal(Refused(404, "NotFound", "No wallet for this organization"))
        return answer({"data": {"wallet": {"availableCredits": wallet[0] - wallet[1]}}})

    async def reserve(self, request: Request) -> Response:
        try:
            body = await _json_object(request)
            org = pk_of(body.get("organizationId"), "Organization")
            amount = body.get("amountCredits")
            reference = body.get("reference")
            description = body.get("description")
            key = body.get("idempotencyKey")
            if org is None:
                raise Refused(400, "InvalidInput", "organizationId: no such organization")
            if type(amount) is not int or amount <= 0:
                raise Refused(400, "InvalidInput", "amountCredits must be a positive integer")
            if not isinstance(reference, str) or not reference.strip() or len(reference) > 255:
                raise Refused(400, "InvalidInput", "reference must be 1-255 characters")
            if description is not None and (
                not isinstance(description, str) or len(description) > 500
            ):
                raise Refused(400, "InvalidInput", "description must be at most 500 characters")
            if not isinstance(key, str) or not 0 < len(key) <= 255:
                raise Refused(400, "InvalidInput", "idempotencyKey must be 1-255 characters")
            request_hash = fingerprint(
                {"amountCredits": amount, "reference": reference, "description": description}
            )
            async with self.db.writing() as q:
                await _require_spender(q, request)
                reservation_id = await _reserve(
                    q, org, amount, reference, description or "", key, request_hash
                )
        except Refused as refused:
            return refusal(refused)
        reservation = {"id": global_id("Reservation", reservation_id), "status": "HELD"}
        return answer({"reservation": reservation, "billingMode": "CREDITS"})

    async def capture(self, request: Request) -> Response:
        try:
            body = await _json_object(request)
            reservation_id = pk_of(body.get("reservationId"), "Reservation")
            amount = body.get("amountCredits")
            if reservation_id is None:
                raise Refused(404, "NotFound", "No such reservation")
            if amount is not None and type(amount) is not int:
                raise Refused(400, "InvalidInput", "amountCredits must be an integer")
            async with self.db.writing() as q:
                await _require_spender(q, request)
                captured = await _capture(q, reservation_id, amount)
        except Refused as refused:
            return refusal(refused)
        reservation = {
            "id": global_id("Reservation", reservation_id),
            "status": "CAPTURED",
            "capturedCredits": captured,
        }
        return answer({"reservation": reservation, "billingMode": "CREDITS"})


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise Refused(400, "InvalidInput", "the body is not JSON") from exc
    if not isinstance(body, dict):
        raise Refused(400, "InvalidInput", "the body is not a JSON object")
    return body


async def _require_spender(q: Queries, request: Request) -> None:
    _, scopes = await caller_scopes(q, request)
    if "billing:spend" not in scopes:
        raise UNAUTHENTICATED


async def _move(
    q: Queries,
    *,
    org: int,
    kind: str,
    amount: int,
    balance_delta: int,
    available_delta: int,
    description: str,
    reference: str,
    reservation_id: int,
    now: Any,
) -> None:
    """The conditional wallet UPDATE and its ledger entry, as the app's ledger posts them."""
    reserved_delta = balance_delta - available_delta
    wallet = await q.fetchrow(
        MOVE,
        balance_delta,
        reserved_delta,
        now,
        org,
        balance_delta,
        reserved_delta,
        reserved_delta,
    )
    if wallet is None:
        raise Refused(409, "InsufficientCredits", "Not enough available credits")
    wallet_id, balance, reserved, auto_topup = wallet
    if auto_topup:
        raise Refused(422, "Unsupported", "auto top-up wallets are not handled by this route")
    await q.fetchrow(
        ENTRY,
        org,
        wallet_id,
        kind,
        amount,
        balance_delta,
        available_delta,
        balance,
        balance - reserved,
        description,
        reference,
        reservation_id,
        now,
    )
    await q.announce(org)


def _describe(verb: str, reference: str, description: str) -> str:
    text = f"{verb} {reference}"
    return f"{text}: {description}" if description else text


async def _reserve(
    q: Queries,
    org: int,
    amount: int,
    reference: str,
    description: str,
    key: str,
    request_hash: str,
) -> int:
    organization = await q.fetchrow(ORGANIZATION, org)
    if organization is None:
        raise Refused(400, "InvalidInput", "organizationId: no such organization")
    plan, threshold = organization
    if plan != "STANDARD" or (threshold is not None and amount > threshold):
        raise Refused(422, "Unsupported", "only STANDARD plans without approval are handled")
    moment = datetime.now(UTC)
    now = q.stamp(moment)
    claimed = await q.fetchrow(
        CLAIM_KEY, org, RESERVE_OPERATION, key, request_hash, q.stamp(moment + KEY_LEASE), now
    )
    if claimed is None:
        # The key was used before: the same request replays its reservation.
        existing = await q.fetchrow(EXISTING_KEY, org, RESERVE_OPERATION, key)
        assert existing is not None
        if existing[0] != request_hash or existing[1] is None:
            raise Refused(409, "IdempotencyConflict", "key used with different input")
        resource_id: int = existing[1]
        return resource_id
    inserted = await q.fetchrow(
        NEW_RESERVATION, org, amount, reference, description, os.urandom(16).hex(), now
    )
    assert inserted is not None
    reservation_id: int = inserted[0]
    await q.fetchrow(RESOLVE_KEY, reservation_id, claimed[0])
    await _move(
        q,
        org=org,
        kind="RESERVATION",
        amount=amount,
        balance_delta=0,
        available_delta=-amount,
        description=_describe("Reserved", reference, description),
        reference=reference,
        reservation_id=reservation_id,
        now=now,
    )
    return reservation_id


async def _capture(q: Queries, reservation_id: int, amount: int | None) -> int:
    lock = " FOR UPDATE" if q.backend == "postgresql" else ""
    row = await q.fetchrow(RESERVATION + lock, reservation_id)
    if row is None:
        raise Refused(404, "NotFound", "No such reservation")
    org, status, mode, reserved, captured, reference, description = row
    amount = reserved if amount is None else amount
    if amount <= 0 or amount > reserved:
        raise Refused(400, "InvalidInput", f"Capture between 1 and {reserved} credits")
    if status == "CAPTURED" and captured == amount:
        return amount
    if status != "HELD":
        raise Refused(409, "InvalidState", f"Cannot capture a {status} reservation")
    if mode != "CREDITS":
        raise Refused(422, "Unsupported", "only reservations paid with credits are handled")
    now = q.stamp(datetime.now(UTC))
    common = {"org": org, "reference": reference, "reservation_id": reservation_id, "now": now}
    await _move(
        q,
        kind="CHARGE",
        amount=amount,
        balance_delta=-amount,
        available_delta=0,
        description=_describe("Charged", reference, description),
        **common,
    )
    if rest := reserved - amount:
        await _move(
            q,
            kind="RELEASE",
            amount=rest,
            balance_delta=0,
            available_delta=rest,
            description=_describe("Released the rest of", reference, description),
            **common,
        )
    await q.fetchrow(SETTLE, amount, now, reservation_id)
    return amount


def create_raw_app(database_url: str) -> Starlette:
    routes = Routes()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        routes.driver = await open_driver(database_url)
        try:
            yield
        finally:
            await routes.driver.close()

    table: Sequence[Route] = [
        Route("/raw/transactions", routes.transactions),
        Route("/raw/available", routes.available),
        Route("/raw/reserve", routes.reserve, methods=["POST"]),
        Route("/raw/capture", routes.capture, methods=["POST"]),
    ]
    return Starlette(routes=list(table), lifespan=lifespan)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_raw_app(os.environ["GQL_BILLING_DATABASE_URL"])
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
