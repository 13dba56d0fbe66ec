"""The typed per-request context: the caller, the services, and this request's loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from ..auth import Principal
from ..billing import Billing
from .loaders import Loaders


@dataclass
class Context:
    request: Request | WebSocket
    response: Any
    principal: Principal
    billing: Billing
    loaders: Loaders = field(init=False)
    # graphql-transport-ws: the client's connection_init payload (where its token is).
    connection_params: dict[str, object] | None = None

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.billing.db)

    @property
    def organization_id(self) -> int:
        """The caller's organization; only organization-token fields call this."""
        if self.principal.organization_id is None:
            raise GraphQLError(
                "This field needs an organization token", extensions={"code": "FORBIDDEN"}
            )
        return self.principal.organization_id


Info = StrawberryInfo[Context, None]
