"""Customer webhooks and the balance alert on GraphQL: endpoint types, the
`webhookEndpoints` query and the mutations that manage them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from sqlalchemy import select
from sqlmodel import col

from .. import errors, models
from ..auth import Scope as AuthScope
from ..customer_webhooks import alerts
from ..customer_webhooks.endpoints import EndpointChange
from ..customer_webhooks.outbox import EventType, parse_types
from . import problems as p
from .common import Node, PageInfo
from .context import Info
from .ids import pk_of, to_global_id
from .pagination import PageArgs, edges_of
from .permissions import needs
from .queries import page_of, register_node
from .scalars import Credits
from .types import Wallet

READ = [needs(AuthScope.BILLING_READ)]
WRITE = [needs(AuthScope.BILLING_WRITE)]

WebhookEventType = strawberry.enum(
    EventType,
    name="WebhookEventType",
    description="Wire names, in the payload's `type`: wallet.balance_low, topup.succeeded, ...",
)
WebhookDeliveryStatus = strawberry.enum(models.DeliveryStatus, name="WebhookDeliveryStatus")


@strawberry.type
class WebhookDelivery(Node):
    event_id: str = strawberry.field(
        description="The event's id, the same on every retry and in the `webhook-id` header: "
        "receivers de-duplicate on it."
    )
    event_type: WebhookEventType  # type: ignore[valid-type]
    status: WebhookDeliveryStatus  # type: ignore[valid-type]
    attempts: int
    last_response_status: int | None = strawberry.field(
        description="The HTTP status of the last attempt; null if it got no answer."
    )
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row: models.WebhookDelivery) -> WebhookDelivery:
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("WebhookDelivery", row.id)),
            event_id=row.event_id,
            event_type=EventType(row.event_type),
            status=models.DeliveryStatus(row.status),
            attempts=row.attempts,
            last_response_status=row.last_response_status,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
        )


@strawberry.type
class WebhookDeliveryEdge:
    cursor: str
    node: WebhookDelivery


@strawberry.type
class WebhookDeliveryConnection:
    edges: list[WebhookDeliveryEdge]
    page_info: PageInfo


@strawberry.type
class WebhookEndpoint(Node):
    url: str
    description: str
    event_types: list[WebhookEventType] = strawberry.field(  # type: ignore[valid-type]
        description="The events sent here; empty means all."
    )
    enabled: bool
    disabled_reason: str | None = strawberry.field(
        description="Why the platform switched the endpoint off (it kept failing); null while on."
    )
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: models.WebhookEndpoint) -> WebhookEndpoint:
        assert row.id is not None
        return cls(
            id=strawberry.ID(to_global_id("WebhookEndpoint", row.id)),
            url=row.url,
            description=row.description,
            event_types=sorted(parse_types(row.event_types)),
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            created_at=row.created_at,
            pk=row.id,
        )

    @strawberry.field(description="Newest first.")
    async def deliveries(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> WebhookDeliveryConnection:
        delivery = models.WebhookDelivery
        query = select(delivery).where(col(delivery.endpoint_id) == self.pk)
        page = await page_of(info, query, col(delivery.id), PageArgs(first, after, None, None))
        edges = edges_of(page, WebhookDeliveryEdge, WebhookDelivery.from_row)
        return WebhookDeliveryConnection(edges=edges, page_info=page.page_info)


register_node("WebhookEndpoint", models.WebhookEndpoint, WebhookEndpoint)
register_node("WebhookDelivery", models.WebhookDelivery, WebhookDelivery)


@strawberry.input
class SetBalanceAlertInput:
    enabled: bool
    threshold_credits: Credits | None = strawberry.field(
        default=None, description="Required when enabling; at least 0."
    )


@strawberry.type
class BalanceAlertUpdated:
    wallet: Wallet


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="https://... (http and private addresses only outside production)."
    )
    description: str | None = None
    event_types: list[WebhookEventType] | None = None  # type: ignore[valid-type]


@strawberry.type
class WebhookEndpointCreated:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(description="whsec_... — shown only here.")


@strawberry.input
class UpdateWebhookEndpointInput:
    id: strawberry.ID
    url: str | None = None
    description: str | None = None
    event_types: list[WebhookEventType] | None = None  # type: ignore[valid-type]
    enabled: bool | None = None


@strawberry.type
class WebhookEndpointUpdated:
    endpoint: WebhookEndpoint


@strawberry.input
class DeleteWebhookEndpointInput:
    id: strawberry.ID


@strawberry.type
class WebhookEndpointDeleted:
    id: strawberry.ID


@strawberry.input
class WebhookEndpointRef:
    id: strawberry.ID


@strawberry.type
class WebhookSecretRotated:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(description="The new whsec_... secret — shown only here.")


@strawberry.type
class TestWebhookQueued:
    delivery: WebhookDelivery


SetBalanceAlertResult = Annotated[
    BalanceAlertUpdated | p.InvalidInput, strawberry.union("SetBalanceAlertResult")
]
CreateWebhookEndpointResult = Annotated[
    WebhookEndpointCreated | p.InvalidInput, strawberry.union("CreateWebhookEndpointResult")
]
UpdateWebhookEndpointResult = Annotated[
    WebhookEndpointUpdated | p.InvalidInput | p.NotFound,
    strawberry.union("UpdateWebhookEndpointResult"),
]
DeleteWebhookEndpointResult = Annotated[
    WebhookEndpointDeleted | p.NotFound, strawberry.union("DeleteWebhookEndpointResult")
]
RotateWebhookEndpointSecretResult = Annotated[
    WebhookSecretRotated | p.NotFound, strawberry.union("RotateWebhookEndpointSecretResult")
]
SendTestWebhookResult = Annotated[
    TestWebhookQueued | p.NotFound, strawberry.union("SendTestWebhookResult")
]


def _endpoint_pk(global_id: str) -> int:
    pk = pk_of(global_id, "WebhookEndpoint")
    if pk is None:
        raise errors.NotFound("No such webhook endpoint")
    return pk


@strawberry.type
class WebhookQuery:
    @strawberry.field(
        permission_classes=READ,
        description="billing:read. The organization's own endpoints that receive signed "
        "billing events.",
    )
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint] | None:
        rows = await info.context.billing.webhook_endpoints.list(info.context.organization_id)
        return [WebhookEndpoint.from_row(row) for row in rows]


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. Tell the organization's webhook endpoints when the "
        "available balance falls below a floor (once per crossing; re-armed when it is back "
        "at or above the floor).",
    )
    @p.problems_as_members
    async def set_balance_alert(
        self, info: Info, input: SetBalanceAlertInput
    ) -> SetBalanceAlertResult:
        billing = info.context.billing
        row = await alerts.set_alert(
            billing.db,
            info.context.organization_id,
            enabled=input.enabled,
            threshold_credits=input.threshold_credits,
            now=billing.clock.now(),
        )
        return BalanceAlertUpdated(wallet=Wallet.from_row(row))

    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. Register an endpoint of the customer's own to receive "
        "signed billing events (Standard Webhooks). The signing secret is returned here and "
        "never again.",
    )
    @p.problems_as_members
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> CreateWebhookEndpointResult:
        row, secret = await info.context.billing.webhook_endpoints.create(
            info.context.organization_id,
            input.url,
            input.description,
            [EventType(t) for t in input.event_types or []],
        )
        return WebhookEndpointCreated(endpoint=WebhookEndpoint.from_row(row), secret=secret)

    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. Change an endpoint's URL, description, event types, or "
        "switch it on or off.",
    )
    @p.problems_as_members
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> UpdateWebhookEndpointResult:
        change = EndpointChange(
            url=input.url,
            description=input.description,
            event_types=None
            if input.event_types is None
            else [EventType(t) for t in input.event_types],
            enabled=input.enabled,
        )
        row = await info.context.billing.webhook_endpoints.update(
            info.context.organization_id, _endpoint_pk(input.id), change
        )
        return WebhookEndpointUpdated(endpoint=WebhookEndpoint.from_row(row))

    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. Remove an endpoint; its pending deliveries are dropped.",
    )
    @p.problems_as_members
    async def delete_webhook_endpoint(
        self, info: Info, input: DeleteWebhookEndpointInput
    ) -> DeleteWebhookEndpointResult:
        await info.context.billing.webhook_endpoints.delete(
            info.context.organization_id, _endpoint_pk(input.id)
        )
        return WebhookEndpointDeleted(id=input.id)

    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. A new signing secret; the old one keeps signing alongside "
        "for 24 hours.",
    )
    @p.problems_as_members
    async def rotate_webhook_endpoint_secret(
        self, info: Info, input: WebhookEndpointRef
    ) -> RotateWebhookEndpointSecretResult:
        row, secret = await info.context.billing.webhook_endpoints.rotate(
            info.context.organization_id, _endpoint_pk(input.id)
        )
        return WebhookSecretRotated(endpoint=WebhookEndpoint.from_row(row), secret=secret)

    @strawberry.mutation(
        permission_classes=WRITE,
        description="billing:write. Queue a `webhook.test` event to one endpoint.",
    )
    @p.problems_as_members
    async def send_test_webhook(
        self, info: Info, input: WebhookEndpointRef
    ) -> SendTestWebhookResult:
        row = await info.context.billing.webhook_endpoints.send_test(
            info.context.organization_id, _endpoint_pk(input.id)
        )
        return TestWebhookQueued(delivery=WebhookDelivery.from_row(row))
