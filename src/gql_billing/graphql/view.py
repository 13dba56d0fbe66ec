"""The HTTP view: authenticates every GraphQL request before Strawberry sees it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from ..auth import Principal, authenticate, bearer_token
from ..billing import Billing
from .context import Context

UNAUTHENTICATED_BODY = {
    "data": None,
    "errors": [
        {
            "message": "Missing, invalid or revoked bearer token",
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    ],
}


def wants_playground(request: Request) -> bool:
    """A browser opening /graphql (GraphiQL), not a query over GET."""
    return (
        request.method == "GET"
        and "query" not in request.query_params
        and "text/html" in request.headers.get("accept", "")
    )


class BillingGraphQL(GraphQL[Context, None]):
    def __init__(self, billing: Billing, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.billing = billing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            if not (self.graphql_ide and wants_playground(request)):
                principal = await authenticate(
                    self.billing.db, bearer_token(request.headers.get("authorization"))
                )
                if principal is None:
                    response = JSONResponse(
                        UNAUTHENTICATED_BODY,
                        status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="gql-billing"'},
                    )
                    await response(scope, receive, send)
                    return
                scope.setdefault("state", {})["principal"] = principal
        await super().__call__(scope, receive, send)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        principal: Principal | None = request.scope.get("state", {}).get("principal")
        if principal is None:
            # Only the playground page gets here unauthenticated, and it runs no operation.
            principal = Principal(token_id=0, organization_id=None, scopes=frozenset())
        return Context(
            request=request, response=response, principal=principal, billing=self.billing
        )
