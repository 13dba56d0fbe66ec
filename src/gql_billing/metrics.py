"""Prometheus metrics of one app (GET /metrics).

Each app owns a `CollectorRegistry` rather than using the process-global one: a test process
(or an embedding service) builds several apps, and the global registry refuses a second
metric of the same name. Label values are bounded on purpose: GraphQL operations are counted
by root field (the schema's names), not by the client-chosen operation name, and webhook
results by category, not by the human-readable detail that carries ids.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response

from .db import Database

log = structlog.stdlib.get_logger("gql_billing.metrics")

# A Stripe call may legitimately take seconds (3-D Secure lookups, retries at Stripe); the
# gateway's own timeout is 20 s by default, so the buckets reach past it.
STRIPE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
QUEUE_STATUSES = ("QUEUED", "PROCESSING")
# The index on (status, trigger) answers this without touching the rows' other columns.
QUEUE_DEPTH_SQL = """
SELECT status, count(*) FROM topup_attempts
WHERE trigger = 'AUTO' AND status IN ('QUEUED', 'PROCESSING')
GROUP BY status
"""


class Metrics:
    """Every metric the gateway exports, with one small method per thing that happens."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.graphql_requests = Counter(
            "gql_billing_graphql_requests",
            "GraphQL root fields executed, by operation (root field) and outcome (the union "
            "member's __typename, ok, forbidden, error, or invalid for a rejected document)",
            ["operation_type", "operation", "outcome"],
            registry=r,
        )
        self.graphql_duration = Histogram(
            "gql_billing_graphql_request_duration_seconds",
            "GraphQL request latency (parse, validate, execute), by the first root field",
            ["operation_type", "operation"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gql_billing_http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.stripe_duration = Histogram(
            "gql_billing_stripe_request_duration_seconds",
            "Stripe API call latency by call",
            ["call"],
            buckets=STRIPE_BUCKETS,
            registry=r,
        )
        self.stripe_errors = Counter(
            "gql_billing_stripe_errors",
            "Stripe API calls that raised, by call and error class",
            ["call", "error"],
            registry=r,
        )
        self.topups = Counter(
            "gql_billing_topups",
            "Top-up attempts reaching a status (SUCCEEDED, FAILED, REQUIRES_ACTION) by trigger",
            ["trigger", "status"],
            registry=r,
        )
        self.auto_topup_queue_depth = Gauge(
            "gql_billing_auto_topup_queue_depth",
            "Auto top-ups waiting for or being charged by a worker (counted at scrape time)",
            ["status"],
            registry=r,
        )
        self.webhook_events = Counter(
            "gql_billing_webhook_events",
            "Stripe webhook deliveries by event type and result",
            ["type", "result"],
            registry=r,
        )
        self.worker_ticks = Counter(
            "gql_billing_worker_ticks",
            "Background worker passes by result (ok, error)",
            ["result"],
            registry=r,
        )

    def graphql_operation(
        self, operation_type: str, outcomes: Sequence[tuple[str, str]], seconds: float
    ) -> None:
        for field, outcome in outcomes:
            self.graphql_requests.labels(operation_type, field, outcome).inc()
        first = outcomes[0][0] if outcomes else "unknown"
        self.graphql_duration.labels(operation_type, first).observe(seconds)

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_duration.labels(route, method, str(status)).observe(seconds)

    def stripe_call(self, call: str, seconds: float, error: str | None) -> None:
        self.stripe_duration.labels(call).observe(seconds)
        if error is not None:
            self.stripe_errors.labels(call, error).inc()

    def topup_status(self, trigger: str, status: str) -> None:
        self.topups.labels(trigger, status).inc()

    def webhook_event(self, event_type: str, result: str) -> None:
        self.webhook_events.labels(event_type, result).inc()

    def worker_tick(self, *, failed: bool) -> None:
        self.worker_ticks.labels("error" if failed else "ok").inc()

    async def refresh(self, db: Database) -> None:
        """Scrape-time gauges: one cheap COUNT; NaN when the database does not answer."""
        try:
            async with db.read() as session:
                result = await session.execute(text(QUEUE_DEPTH_SQL))
                rows = {str(status): float(count) for status, count in result.all()}
        except Exception:
            # /readyz reports the database; the scrape itself must still succeed.
            log.warning("auto top-up queue depth unavailable", exc_info=True)
            rows = dict.fromkeys(QUEUE_STATUSES, math.nan)
        for status in QUEUE_STATUSES:
            self.auto_topup_queue_depth.labels(status).set(rows.get(status, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_endpoint(metrics: Metrics, db: Database) -> Callable[[Request], Awaitable[Response]]:
    """GET /metrics in Prometheus' text format."""

    async def endpoint(_: Request) -> Response:
        await metrics.refresh(db)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return endpoint
