"""The HTTP view: every GraphQL request is size-checked, authenticated and rate-limited
before Strawberry sees it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from ..auth import Principal, TokenUsage, authenticate, bearer_token
from ..billing import Billing
from ..ratelimit import RateLimiter, build_rate_limiter
from .context import Context
from .schema import SchemaPolicy, build_schema

log = logging.getLogger(__name__)


def error_response(
    status_code: int, message: str, code: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A GraphQL-shaped body, so clients handle transport refusals like any other error."""
    error = {"message": message, "extensions": {"code": code, **extra}}
    return JSONResponse({"data": None, "errors": [error]}, status_code, headers=headers)


def unauthenticated() -> JSONResponse:
    return error_response(
        401,
        "Missing, invalid or revoked bearer token",
        "UNAUTHENTICATED",
        {"WWW-Authenticate": 'Bearer realm="gql-billing"'},
    )


def too_large(limit: int) -> JSONResponse:
    return error_response(413, f"Request body exceeds {limit} bytes", "PAYLOAD_TOO_LARGE")


def rate_limited(retry_after: int) -> JSONResponse:
    return error_response(
        429,
        f"Rate limit exceeded; retry after {retry_after} s",
        "RATE_LIMITED",
        {"Retry-After": str(retry_after)},
        retryAfter=retry_after,
    )


def wants_playground(request: Request) -> bool:
    """A browser opening /graphql (GraphiQL), not a query over GET."""
    return (
        request.method == "GET"
        and "query" not in request.query_params
        and "text/html" in request.headers.get("accept", "")
    )


def declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past `limit` (the rest is never read):
    a chunked upload has no Content-Length to check up front."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands Strawberry the body already read, then the real one."""
    pending = True

    async def receive_again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


class BillingGraphQL(GraphQL[Context, None]):
    def __init__(
        self,
        billing: Billing,
        *,
        rate_limiter: RateLimiter,
        token_usage: TokenUsage,
        max_body_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.billing = billing
        self.rate_limiter = rate_limiter
        self.token_usage = token_usage
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        if self.graphql_ide and wants_playground(request):
            await super().__call__(scope, receive, send)
            return
        try:
            outcome = await self._admit(request, receive)
        except ClientDisconnect:
            return
        if isinstance(outcome, Response):
            await outcome(scope, receive, send)
            return
        principal, body = outcome
        scope.setdefault("state", {})["principal"] = principal
        await super().__call__(scope, replay(body, receive), send)
        await self._record_use(principal)

    async def _admit(
        self, request: Request, receive: Receive
    ) -> tuple[Principal, bytes] | Response:
        """The caller and the body, or the refusal: 413, 401 or 429, in that order of cost."""
        if declared_too_large(request, self.max_body_bytes):
            return too_large(self.max_body_bytes)
        token = bearer_token(request.headers.get("authorization"))
        principal = await authenticate(self.billing.db, token)
        if principal is None:
            return unauthenticated()
        decision = await self.rate_limiter.hit(f"token:{principal.token_id}")
        if not decision.allowed:
            return rate_limited(decision.retry_after_seconds)
        body = await read_body(receive, self.max_body_bytes)
        if body is None:
            return too_large(self.max_body_bytes)
        return principal, body

    async def close(self) -> None:
        await self.rate_limiter.close()

    async def _record_use(self, principal: Principal) -> None:
        # After the response went out: a slow or failed write never delays or fails a request.
        try:
            await self.token_usage.record(principal.token_id)
        except Exception:
            log.warning("could not record the use of token id %s", principal.token_id)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate a websocket at connection_init: the token from its payload
        ({"Authorization": "Bearer ..."}), else from the handshake's Authorization header."""
        params = context.connection_params or {}
        header = params.get("Authorization", params.get("authorization"))
        if not isinstance(header, str):
            header = context.request.headers.get("authorization")
        principal = await authenticate(self.billing.db, bearer_token(header))
        if principal is None:
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
        # A connection counts as one request of the token's budget.
        decision = await self.rate_limiter.hit(f"token:{principal.token_id}")
        if not decision.allowed:
            raise ConnectionRejectionError(
                {"code": "RATE_LIMITED", "retryAfter": decision.retry_after_seconds}
            )
        context.principal = principal
        unset: UnsetType = UNSET
        return unset

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        principal: Principal | None = request.scope.get("state", {}).get("principal")
        if principal is None:
            # The playground page, and a websocket until connection_init authenticates it
            # (on_ws_connect): no scope, so every guarded field answers FORBIDDEN.
            principal = Principal(token_id=0, organization_id=None, scopes=frozenset())
        return Context(
            request=request, response=response, principal=principal, billing=self.billing
        )


def build_view(billing: Billing) -> BillingGraphQL:
    """The /graphql endpoint as the settings say: development or production (SPEC §11)."""
    settings = billing.settings
    return BillingGraphQL(
        billing,
        rate_limiter=build_rate_limiter(settings, billing.clock),
        token_usage=TokenUsage(
            billing.db,
            billing.clock,
            interval=timedelta(seconds=settings.token_usage_interval_seconds),
        ),
        max_body_bytes=settings.max_body_bytes,
        schema=build_schema(policy=SchemaPolicy.from_settings(settings)),
        graphql_ide=None if settings.production else "graphiql",
        # Form and multipart posts are "simple" cross-site requests: JSON only (CSRF).
        multipart_uploads_enabled=False,
        # The legacy graphql-ws protocol is off: Strawberry's advisories found auth gaps there.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )
