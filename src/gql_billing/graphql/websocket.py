"""The websocket door (graphql-transport-ws), admitted message by message.

Strawberry's handler authenticates once, at connection_init (the view's `on_ws_connect`).
Here every later message re-checks the token, every `subscribe` counts against the token's
rate limit like an HTTP request, a message larger than an HTTP body closes the socket, and
the process's revocation watch closes the socket of a token revoked while it sits idle.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from json import JSONDecodeError
from typing import Any

from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    ErrorMessage,
    Message,
)

from ..admission import Admission
from .context import Context

# RFC 6455's "message too big", and graphql-transport-ws's "forbidden".
MESSAGE_TOO_BIG = 1009
FORBIDDEN = 4403


def admission_of(view: Any) -> Admission:
    admission: Admission = view.admission
    return admission


class SizedWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's adapter, refusing a message larger than an HTTP body before decoding it."""

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        admission = admission_of(self.view)
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if admission.message_too_large(text):
                    await self.ws.close(
                        code=MESSAGE_TOO_BIG,
                        reason=f"Message exceeds {admission.max_body_bytes} bytes",
                    )
                    return
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:
            pass


class AdmittedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with the token re-checked and operations counted per message."""

    _unwatch: Callable[[], None] | None = None

    @property
    def admission(self) -> Admission:
        return admission_of(self.view)

    async def handle_message(self, message: Message) -> None:
        if not self.connection_acknowledged:
            await super().handle_message(message)
            return
        principal = self.context.principal
        if not await self.admission.still_live(principal):
            await self.close_revoked()
            return
        operation_id = message.get("id")
        if message.get("type") == "subscribe" and isinstance(operation_id, str):
            refusal = await self.admission.count(principal)
            if refusal is not None:
                # The operation is refused as an HTTP request would be; the socket stays open.
                error = GraphQLError(
                    refusal.detail,
                    extensions={"code": refusal.code, "retryAfter": refusal.retry_after_seconds},
                )
                await self.send_message(
                    ErrorMessage(id=operation_id, type="error", payload=[error.formatted])
                )
                return
            await super().handle_message(message)
            await self.admission.record_use(principal)
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self._unwatch is None:
            self._unwatch = self.admission.revocations.watch(
                self.context.principal.token_id, self.close_revoked
            )

    async def close_revoked(self) -> None:
        """Stop every operation (subscriptions included), then close the socket."""
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        # The client may have gone (or the socket closed) meanwhile: closed either way.
        with contextlib.suppress(Exception):
            await self.websocket.close(code=FORBIDDEN, reason="Token revoked")

    async def shutdown(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        await super().shutdown()
