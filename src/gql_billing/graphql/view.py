"""The HTTP view: every GraphQL request passes the admission path (admission.py: body size,
token, rate limit, usage) before Strawberry sees it; websockets are admitted per message
(websocket.py).

Responses follow GraphQL over HTTP: a client that asks for `application/graphql-response+json`
gets it, with 4xx for requests that fail before execution (parse and validation errors, bad
variables) and no `data` entry in those; a client that asks for `application/json`, or for
nothing in particular, gets `application/json` with 200 for every GraphQL result. Transport
refusals (bad JSON, a missing query, a mutation over GET...) are GraphQL-shaped JSON either way.
Automatic persisted queries (persisted.py) are resolved here too, before execution.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from ..admission import Admission, Refusal
from ..auth import Principal
from ..billing import Billing
from .context import Context
from .persisted import (
    PersistedQueries,
    PersistedQueryMiss,
    PersistedQueryRefused,
    persisted_owner,
)
from .playground import graphiql_html
from .schema import MASKED_MESSAGE, SchemaPolicy, build_schema, is_fault
from .websocket import AdmittedTransportWS, SizedWebSocketAdapter

JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def response_media_type(accept: str | None) -> str:
    """application/graphql-response+json when the Accept header ranks it at least as high as
    application/json; application/json otherwise, a missing or unrelated Accept included
    (GraphQL over HTTP: legacy clients keep their 200s)."""
    ranks: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        ranks[media] = max(quality, ranks.get(media, 0.0))
    preferred = ranks.get(GRAPHQL_RESPONSE_JSON, 0.0)
    json = max(ranks.get(JSON, 0.0), ranks.get("application/*", 0.0), ranks.get("*/*", 0.0))
    return GRAPHQL_RESPONSE_JSON if preferred > 0 and preferred >= json else JSON


def error_response(
    status_code: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    *,
    media_type: str = JSON,
    **extra: Any,
) -> JSONResponse:
    """A GraphQL-shaped body, so clients handle transport refusals like any other error.
    `data` is null for application/json clients and absent for graphql-response+json ones
    (nothing ran)."""
    error = {"message": message, "extensions": {"code": code, **extra}}
    body: dict[str, Any] = {"errors": [error]}
    if media_type == JSON:
        body = {"data": None, **body}
    return JSONResponse(body, status_code, headers=headers, media_type=media_type)


def refusal_response(refusal: Refusal, media_type: str = JSON) -> JSONResponse:
    """An admission refusal (401, 413, 429) as a GraphQL-shaped body."""
    extra: dict[str, Any] = {}
    if refusal.retry_after_seconds is not None:
        extra["retryAfter"] = refusal.retry_after_seconds
    return error_response(
        refusal.status,
        refusal.detail,
        refusal.code,
        dict(refusal.headers),
        media_type=media_type,
        **extra,
    )


def refused(error: HTTPException, method: str, media_type: str) -> JSONResponse:
    """Strawberry's transport refusals (bad JSON, no query, ...) as GraphQL-shaped JSON. A
    mutation over GET is 405, as GraphQL over HTTP asks."""
    status, headers = error.status_code, None
    cause = error.__cause__
    if (
        method == "GET"
        and isinstance(cause, InvalidOperationTypeError)
        and cause.operation_type == OperationType.MUTATION
    ):
        status, headers = HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "POST"}
    return error_response(
        status, error.reason, HTTPStatus(status).name, headers, media_type=media_type
    )


def request_error_status(result: ExecutionResult) -> int | None:
    """400 for a result that failed before execution (parse, validation, variables: no data
    and no error with a path), 500 if that was the server's fault; None once execution ran."""
    errors = result.errors or []
    if result.data is not None or not errors or any(e.path for e in errors):
        return None
    faulty = any(is_fault(e) or e.message == MASKED_MESSAGE for e in errors)
    return HTTPStatus.INTERNAL_SERVER_ERROR if faulty else HTTPStatus.BAD_REQUEST


def wants_playground(method: str, params: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """A browser opening /graphql (GraphiQL), not a query (or a persisted one) over GET."""
    return (
        method == "GET"
        and "query" not in params
        and "extensions" not in params
        and "text/html" in headers.get("accept", "")
    )


STREAMING_MEDIA = ("text/event-stream", "multipart/mixed")


def single_json_post(request: Request, body: bytes) -> GraphQLRequestData | None:
    """The request as one well-formed GraphQL operation in a JSON POST, not asking for a
    streamed answer; None for anything else (Strawberry's own parsing then handles it, and
    its refusals)."""
    if request.method != "POST":
        return None
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != JSON:
        return None
    accept = request.headers.get("accept", "").lower()
    if any(media in accept for media in STREAMING_MEDIA):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    query, variables = data.get("query"), data.get("variables")
    operation_name, extensions = data.get("operationName"), data.get("extensions")
    if (
        not isinstance(query, str)
        or not isinstance(variables, dict | None)
        or not isinstance(operation_name, str | None)
        or not isinstance(extensions, dict | None)
    ):
        return None
    return GraphQLRequestData(
        query=query,
        variables=variables,
        operation_name=operation_name,
        extensions=extensions,
        protocol="http",
    )


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
    websocket_adapter_class = SizedWebSocketAdapter
    graphql_transport_ws_handler_class = AdmittedTransportWS

    def __init__(
        self,
        billing: Billing,
        *,
        admission: Admission,
        persisted_queries: PersistedQueries,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.billing = billing
        self.admission = admission
        self.persisted_queries = persisted_queries

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        if self.graphql_ide and self.should_render_graphql_ide(request):
            await super().__call__(scope, receive, send)
            return
        media_type = response_media_type(request.headers.get("accept"))
        try:
            # Scopes are checked per field; the body's media type by Strawberry's parsing.
            admitted = await self.admission.admit(request)
        except ClientDisconnect:
            return
        if isinstance(admitted, Refusal):
            await refusal_response(admitted, media_type)(scope, receive, send)
            return
        principal, body = admitted.principal, admitted.body
        scope.setdefault("state", {})["principal"] = principal
        request = Request(scope, replay(body, receive))
        response = await self._respond(request, media_type, single_json_post(request, body))
        await response(scope, receive, send)
        await self.admission.record_use(principal)

    async def _respond(
        self, request: Request, media_type: str, single: GraphQLRequestData | None
    ) -> Response:
        """Strawberry's answer; for a single JSON POST (`single`), by the shorter way."""
        try:
            if single is not None:
                response = await self._run_single(request, single)
            else:
                response = await self.run(request)
        except HTTPException as error:
            return refused(error, request.method, media_type)
        except PersistedQueryRefused as error:
            return error_response(400, error.message, "BAD_REQUEST", media_type=media_type)
        if media_type == GRAPHQL_RESPONSE_JSON and response.media_type == JSON:
            response.headers["content-type"] = GRAPHQL_RESPONSE_JSON
        return response

    async def _run_single(self, request: Request, request_data: GraphQLRequestData) -> Response:
        """What Strawberry's `run` does for a single JSON POST over plain HTTP, minus the
        steps that cannot apply to one (websockets, the IDE, form and query-string parsing,
        streaming): the same hooks, so the answer is the same."""
        adapter = self.request_adapter_class(request)
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        result = await self.execute_operation(
            request, adapter, request_data, context, None, sub_response
        )
        # Only a streaming Accept header or incremental delivery (neither here) gives more.
        assert isinstance(result, ExecutionResult)
        response_data = await self.process_result(request, result)
        return self.create_response(response_data=response_data, sub_response=sub_response)

    # -- Strawberry's hooks ---------------------------------------------------------------------

    def encode_json(self, data: object) -> bytes:
        """orjson: a page of transactions encodes about ten times faster than with json."""
        try:
            return orjson.dumps(data)
        except TypeError:
            # An integer beyond 64 bits; the standard encoder writes any size.
            return json.dumps(data, separators=(",", ":")).encode()

    def should_render_graphql_ide(self, request: BaseRequestProtocol | Request) -> bool:
        return wants_playground(request.method, request.query_params, request.headers)

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(graphiql_html())

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        parsed = await super().parse_http_body(request)
        for data in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(data.operation_name, str | None):
                raise HTTPException(
                    400,
                    "The GraphQL operation's `operationName` must be a string or null, "
                    "if provided.",
                )
        return parsed

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        result = await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        # One operation that failed before execution: 4xx for graphql-response+json clients.
        # (A batch keeps its 200: its operations may have failed differently.)
        if isinstance(result, ExecutionResult) and self._graphql_response_json(request):
            status = request_error_status(result)
            if status is not None:
                sub_response.status_code = status
        return result

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        owner = persisted_owner(context.principal)
        resolved = self.persisted_queries.resolve(
            owner, request_data.query, request_data.extensions
        )
        if resolved.miss is not None:
            return resolved.miss
        result = await super().execute_single(
            request,
            request_adapter,
            sub_response,
            context,
            root_value,
            dataclasses.replace(request_data, query=resolved.query),
        )
        # Stored once it parsed and validated: the store never holds a document that fails.
        if resolved.sha256 and resolved.query and request_error_status(result) is None:
            self.persisted_queries.store(owner, resolved.sha256, resolved.query)
        return result

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if isinstance(result, PersistedQueryMiss):
            # Apollo's message exactly: {"errors": [...]}, nothing ran.
            return {"errors": [error.formatted for error in result.errors or []]}
        response = await super().process_result(request, result)
        if self._graphql_response_json(request) and request_error_status(result) is not None:
            # GraphQL over HTTP: no data entry when execution never started.
            response.pop("data", None)
        return response

    @staticmethod
    def _graphql_response_json(request: Request) -> bool:
        return response_media_type(request.headers.get("accept")) == GRAPHQL_RESPONSE_JSON

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate a websocket at connection_init: the token from its payload
        ({"Authorization": "Bearer ..."}), else from the handshake's Authorization header."""
        params = context.connection_params or {}
        header = params.get("Authorization", params.get("authorization"))
        if not isinstance(header, str):
            header = context.request.headers.get("authorization")
        principal = await self.admission.caller(header)
        if principal is None:
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
        # A connection counts as one request of the token's budget; so does each operation.
        refusal = await self.admission.count(principal)
        if refusal is not None:
            raise ConnectionRejectionError(
                {"code": refusal.code, "retryAfter": refusal.retry_after_seconds}
            )
        context.principal = principal
        await self.admission.record_use(principal)
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


def build_view(billing: Billing, admission: Admission) -> BillingGraphQL:
    """The /graphql endpoint as the settings say: development or production."""
    settings = billing.settings
    return BillingGraphQL(
        billing,
        admission=admission,
        persisted_queries=PersistedQueries(settings.apq_cache_size),
        schema=build_schema(policy=SchemaPolicy.from_settings(settings)),
        graphql_ide=None if settings.production else "graphiql",
        # Form and multipart posts are "simple" cross-site requests: JSON only (CSRF).
        multipart_uploads_enabled=False,
        # The legacy graphql-ws protocol is off: Strawberry's advisories found auth gaps there.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )
