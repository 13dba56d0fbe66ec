"""GET /healthz (the process answers) and GET /readyz (it can do its job: the database
answers and, when Stripe is configured, Stripe answers too)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .db import Database
from .stripe_gateway import PaymentGateway

# Probes run every few seconds and must answer before the orchestrator's own timeout.
CHECK_TIMEOUT_SECONDS = 3.0


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _reachable(check: Callable[[], Awaitable[object]]) -> bool:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception:
        return False
    return True


def readyz(
    db: Database, gateway: PaymentGateway | None
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def select_one() -> None:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))

    async def endpoint(_: Request) -> JSONResponse:
        checks = {"database": await _reachable(select_one)}
        if gateway is not None:
            # One cheap read (GET /v1/balance): the network path, the key, Stripe itself.
            checks["stripe"] = await _reachable(gateway.ping)
        ready = all(checks.values())
        body = {name: "ok" if ok else "unreachable" for name, ok in checks.items()}
        status = {"status": "ok" if ready else "unavailable"}
        return JSONResponse({**status, **body}, 200 if ready else 503)

    return endpoint


def health_routes(db: Database, gateway: PaymentGateway | None) -> list[Route]:
    return [Route("/healthz", healthz), Route("/readyz", readyz(db, gateway))]
