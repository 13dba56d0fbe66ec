"""The baseline: hand-written JSON routes over the same data layer, never in the production app.

Each route does what a REST endpoint of this service would: the same bearer-token check
(`gql_billing.auth.authenticate`), the same `Database` and tables, one read session for the
wallet row and the keyset page (`WHERE organization_id = :org ORDER BY id DESC LIMIT n + 1`),
and a body with the same JSON as the GraphQL answer to the benchmark's documents.

`--stack app` wraps the routes in the production app's HTTP middleware (request id, access
log line and latency metric; CORS), so the ratio against it is what GraphQL itself costs;
`--stack bare` is Starlette and the route alone.

Run: `python -m bench.plain --port 8001 --stack app` (GQL_BILLING_DATABASE_URL as for serve).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select
from sqlmodel import col
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gql_billing.auth import Principal, Scope, authenticate, bearer_token
from gql_billing.collector import settle_after_startup
from gql_billing.db import Database
from gql_billing.graphql.ids import to_global_id
from gql_billing.logs import RequestContext, configure_logging, configure_structlog
from gql_billing.metrics import Metrics
from gql_billing.models import LedgerEntry, Wallet
from gql_billing.settings import Settings

PAGE_SIZE = 20
UNAUTHENTICATED = {"data": None, "errors": [{"message": "Unauthenticated"}]}


def wallet_query(organization_id: int) -> Any:
    return select(col(Wallet.balance_credits), col(Wallet.reserved_credits)).where(
        col(Wallet.organization_id) == organization_id
    )


def page_query(organization_id: int, size: int) -> Any:
    return (
        select(
            col(LedgerEntry.id),
            col(LedgerEntry.kind),
            col(LedgerEntry.amount_credits),
            col(LedgerEntry.balance_after_credits),
            col(LedgerEntry.created_at),
        )
        .where(col(LedgerEntry.organization_id) == organization_id)
        .order_by(col(LedgerEntry.id).desc())
        .limit(size + 1)
    )


class Routes:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _caller(self, request: Request) -> Principal | None:
        token = bearer_token(request.headers.get("authorization"))
        principal = await authenticate(self.db, token)
        if principal is None or principal.organization_id is None:
            return None
        return principal if principal.has(Scope.BILLING_READ) else None

    async def wallet_and_transactions(self, request: Request) -> JSONResponse:
        """`{ wallet { balanceCredits } transactions(first: 20) { edges { node {...} } } }`"""
        principal = await self._caller(request)
        if principal is None:
            return JSONResponse(UNAUTHENTICATED, 401)
        assert principal.organization_id is not None
        async with self.db.read() as session:
            wallet = (await session.execute(wallet_query(principal.organization_id))).one()
            rows = (await session.execute(page_query(principal.organization_id, PAGE_SIZE))).all()
        edges = [
            {
                "node": {
                    "id": to_global_id("Transaction", row.id),
                    "kind": row.kind,
                    "amountCredits": row.amount_credits,
                    "balanceAfterCredits": row.balance_after_credits,
                    "createdAt": row.created_at.isoformat(),
                }
            }
            for row in rows[:PAGE_SIZE]
        ]
        data = {
            "wallet": {"balanceCredits": wallet.balance_credits},
            "transactions": {"edges": edges},
        }
        return JSONResponse({"data": data})

    async def available(self, request: Request) -> JSONResponse:
        """`{ wallet { availableCredits } }`"""
        principal = await self._caller(request)
        if principal is None:
            return JSONResponse(UNAUTHENTICATED, 401)
        assert principal.organization_id is not None
        async with self.db.read() as session:
            wallet = (await session.execute(wallet_query(principal.organization_id))).one()
        available = wallet.balance_credits - wallet.reserved_credits
        return JSONResponse({"data": {"wallet": {"availableCredits": available}}})


def create_plain_app(settings: Settings, *, stack: str) -> Starlette:
    db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    routes = Routes(db)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await db.dispose()

    app = Starlette(
        routes=[
            Route("/plain/transactions", routes.wallet_and_transactions),
            Route("/plain/available", routes.available),
        ],
        lifespan=lifespan,
    )
    if stack == "app":
        # The same middleware, in the same order, as gql_billing.app.create_app.
        configure_structlog()
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            max_age=600,
        )
        app.add_middleware(RequestContext, metrics=Metrics())
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stack", choices=["app", "bare"], default="app")
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_plain_app(settings, stack=args.stack)
    # The same collector settings as `gql-billing serve`.
    settle_after_startup()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
