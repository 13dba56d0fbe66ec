"""create_app: the only place that wires settings, store, Stripe and the HTTP surface."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from .admission import build_admission
from .billing import Billing
from .clock import Clock, SystemClock
from .collector import settle_after_startup
from .db import Database, postgres_dsn
from .graphql import playground
from .graphql.view import build_view
from .health import health_routes
from .live import relay_postgres_notifications
from .logs import RequestContext, configure_logging, configure_structlog
from .metrics import Metrics, metrics_endpoint
from .openapi import openapi_routes
from .rest import problem_response, rest_routes
from .settings import Settings
from .stripe_gateway import CallObserver, PaymentGateway, StripeGateway
from .webhooks import StripeWebhooks
from .worker import Worker, running


def build_gateway(
    settings: Settings, *, observer: CallObserver | None = None
) -> PaymentGateway | None:
    if not settings.stripe_configured:
        return None
    assert settings.stripe_secret_key is not None
    return StripeGateway(
        settings.stripe_secret_key,
        api_base=settings.stripe_api_base,
        timeout_seconds=settings.stripe_timeout_seconds,
        observer=observer,
    )


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """Starlette's 405 (a route or the static files refusing the method) as a problem
    document, with the `Allow` header the route computed (static files send none)."""
    assert isinstance(exc, HTTPException)
    allow = (exc.headers or {}).get("Allow", "GET, HEAD")
    return problem_response(
        405,
        "Method Not Allowed",
        f"{request.url.path} answers {allow}, not {request.method}",
        headers={"Allow": allow},
        allow=allow,
    )


def create_app(
    settings: Settings,
    *,
    gateway: PaymentGateway | None = None,
    clock: Clock | None = None,
) -> Starlette:
    db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    configure_structlog()
    # Per app, not the process-global registry: several apps may share a process (tests).
    metrics = Metrics()
    owns_gateway = gateway is None
    gateway = gateway if gateway is not None else build_gateway(settings, observer=metrics)
    billing = Billing.build(settings, db, gateway, clock or SystemClock(), metrics=metrics)
    # Every door (GraphQL over HTTP and websocket, REST, the Stripe webhook) admits through it.
    admission = build_admission(settings, db, billing.clock)
    graphql = build_view(billing, admission)

    relay: asyncio.Task[None] | None = None
    if db.sqlite:
        db.on_wallets_changed.append(billing.wallet_events.publish)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        nonlocal relay
        if not db.sqlite:
            # PostgreSQL tells every process about every movement (NOTIFY at commit).
            relay = asyncio.create_task(
                relay_postgres_notifications(
                    postgres_dsn(settings.database_url), billing.wallet_events
                )
            )
        try:
            if settings.run_worker:
                async with running(Worker(billing)):
                    yield
            else:
                yield
        finally:
            if owns_gateway and gateway is not None:
                await gateway.close()
            await admission.close()
            if relay is not None:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
            await db.dispose()

    # GraphiQL's scripts and styles, so the playground works offline (development only).
    playground_files: list[BaseRoute] = (
        []
        if settings.production
        else [Mount(playground.MOUNT, StaticFiles(directory=playground.ASSETS_DIR))]
    )
    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *playground_files,
            Route("/webhooks/stripe", StripeWebhooks(billing).handle, methods=["POST"]),
            *rest_routes(billing, admission),
            *openapi_routes(development=not settings.production),
            *health_routes(db, gateway),
            Route("/metrics", metrics_endpoint(metrics, db)),
        ],
        lifespan=lifespan,
        exception_handlers={405: method_not_allowed},
    )
    # Outermost, so preflights never reach auth. An empty allow-list sends no CORS headers.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        max_age=600,
    )
    # Outside CORS too: every answer, a refused preflight or a crash included, carries
    # its X-Request-Id and gets its access line.
    app.add_middleware(RequestContext, metrics=metrics)
    app.state.billing = billing
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (what `gql-billing serve --workers N` runs)."""
    settings = Settings()
    # Each worker process is spawned afresh: it sets its own logging up.
    configure_logging(settings.log_level)
    app = create_app(settings)
    settle_after_startup()
    return app
