"""create_app: the only place that wires settings, store, Stripe and the HTTP surface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .billing import Billing
from .clock import Clock, SystemClock
from .db import Database
from .graphql.schema import build_schema
from .graphql.view import BillingGraphQL
from .settings import Settings
from .stripe_gateway import PaymentGateway, StripeGateway
from .webhooks import StripeWebhooks
from .worker import Worker, running


def build_gateway(settings: Settings) -> PaymentGateway | None:
    if not settings.stripe_configured:
        return None
    assert settings.stripe_secret_key is not None
    return StripeGateway(
        settings.stripe_secret_key,
        api_base=settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
    )


def create_app(
    settings: Settings,
    *,
    gateway: PaymentGateway | None = None,
    clock: Clock | None = None,
) -> Starlette:
    db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    owns_gateway = gateway is None
    gateway = gateway if gateway is not None else build_gateway(settings)
    billing = Billing.build(settings, db, gateway, clock or SystemClock())
    graphql = BillingGraphQL(
        billing,
        schema=build_schema(),
        graphql_ide="graphiql" if settings.env == "development" else None,
        multipart_uploads_enabled=False,
    )

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        try:
            async with db.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            if settings.run_worker:
                async with running(Worker(billing)):
                    yield
            else:
                yield
        finally:
            if owns_gateway and gateway is not None:
                await gateway.close()
            await db.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/webhooks/stripe", StripeWebhooks(billing).handle, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.billing = billing
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (what `gql-billing serve --workers N` runs)."""
    return create_app(Settings())
