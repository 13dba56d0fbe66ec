"""Root query fields: nullable, each guarded by its scope, scoped to the caller's organization."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import strawberry
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .. import models, reads
from ..auth import Scope as AuthScope
from ..driver import Reader
from ..errors import NotFound
from .common import Money, Node, money
from .context import Info
from .ids import from_global_id
from .pagination import Page, PageArgs, edges_of, paginate, session_fetch
from .permissions import needs
from .scalars import Credits
from .spend_types import Approval, Invoice, Reservation
from .types import (
    Organization,
    PaymentMethod,
    Scope,
    TopupAttempt,
    TopupAttemptConnection,
    TopupAttemptEdge,
    Transaction,
    TransactionConnection,
    TransactionEdge,
    TransactionFilter,
    Viewer,
    Wallet,
)

READ = [needs(AuthScope.BILLING_READ)]


@strawberry.type
class Query:
    @strawberry.field(description="The caller: its organization and the scopes of its token.")
    async def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        org = None
        if principal.organization_id is not None:
            async with info.context.billing.db.read() as session:
                row = await session.get(models.Organization, principal.organization_id)
            org = Organization.from_row(row) if row else None
        scopes = [Scope(s.value) for s in sorted(principal.scopes)]
        return Viewer(organization=org, scopes=scopes)

    @strawberry.field(permission_classes=READ, description="billing:read. The credit wallet.")
    async def wallet(self, info: Info) -> Wallet | None:
        read = partial(wallet_row, organization_id=info.context.organization_id)
        return Wallet.from_row(await info.context.loaders.direct(read))

    @strawberry.field(
        permission_classes=READ, description="billing:read. The ledger, newest first."
    )
    async def transactions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: TransactionFilter | None = None,
    ) -> TransactionConnection | None:
        ledger_filter = reads.LedgerFilter()
        if filter is not None:
            ledger_filter = reads.LedgerFilter(
                kinds=[str(k) for k in filter.kinds] if filter.kinds else None,
                created_after=filter.created_after,
                created_before=filter.created_before,
                reference=filter.reference,
            )
        settings = info.context.billing.settings
        read = partial(
            ledger_page,
            organization_id=info.context.organization_id,
            ledger_filter=ledger_filter,
            args=PageArgs(first, after, last, before),
            default_size=settings.default_page_size,
            max_size=settings.max_page_size,
        )
        page = await info.context.loaders.direct(read)
        edges = edges_of(page, TransactionEdge, Transaction.from_row)
        return TransactionConnection(edges=edges, page_info=page.page_info)

    @strawberry.field(
        permission_classes=READ, description="billing:read. Saved cards, default first."
    )
    async def payment_methods(self, info: Info) -> list[PaymentMethod] | None:
        pm = models.PaymentMethod
        query = (
            select(pm)
            .where(col(pm.organization_id) == info.context.organization_id)
            .order_by(col(pm.is_default).desc(), col(pm.id).asc())
        )
        async with info.context.billing.db.read() as session:
            rows = (await session.execute(query)).scalars().all()
        return [PaymentMethod.from_row(r) for r in rows]

    @strawberry.field(permission_classes=READ, description="billing:read. Top-ups, newest first.")
    async def topups(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> TopupAttemptConnection | None:
        attempt = models.TopupAttempt
        query = select(attempt).where(col(attempt.organization_id) == info.context.organization_id)
        page = await page_of(info, query, col(attempt.id), PageArgs(first, after, last, before))
        edges = edges_of(page, TopupAttemptEdge, TopupAttempt.from_row)
        return TopupAttemptConnection(edges=edges, page_info=page.page_info)

    @strawberry.field(permission_classes=READ, description="billing:read. What credits cost.")
    def price(self, info: Info, credits: Credits, currency: str | None = None) -> Money | None:
        return money(info, credits, currency)

    @strawberry.field(description="Any object of the caller's by its global id; null otherwise.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        return await resolve_node(info, id)


NODE_TABLES: dict[str, Any] = {
    "Reservation": models.Reservation,
    "Approval": models.Approval,
    "Invoice": models.Invoice,
    "Organization": models.Organization,
    "Wallet": models.Wallet,
    "Transaction": models.LedgerEntry,
    "PaymentMethod": models.PaymentMethod,
    "TopupAttempt": models.TopupAttempt,
}
NODE_TYPES: dict[str, Any] = {
    "Reservation": Reservation,
    "Approval": Approval,
    "Invoice": Invoice,
    "Organization": Organization,
    "Wallet": Wallet,
    "Transaction": Transaction,
    "PaymentMethod": PaymentMethod,
    "TopupAttempt": TopupAttempt,
}


def register_node(type_name: str, table: Any, node_type: Any) -> None:
    """A Node type defined in a module that builds on this one (which cannot import it):
    its rows carry `organization_id` and the type a `from_row`."""
    NODE_TABLES[type_name] = table
    NODE_TYPES[type_name] = node_type


async def resolve_node(info: Info, global_id: str) -> Node | None:
    """Another organization's object is indistinguishable from a missing one."""
    parsed = from_global_id(global_id)
    principal = info.context.principal
    if (
        parsed is None
        or principal.organization_id is None
        or not principal.has(AuthScope.BILLING_READ)
    ):
        return None
    type_name, pk = parsed
    table = NODE_TABLES.get(type_name)
    if table is None:
        return None
    async with info.context.billing.db.read() as session:
        row = await session.get(table, pk)
    owner = getattr(row, "id" if type_name == "Organization" else "organization_id", None)
    if row is None or owner != principal.organization_id:
        return None
    node: Node = NODE_TYPES[type_name].from_row(row)
    return node


async def wallet_row(reader: Reader, organization_id: int) -> Any:
    """The organization's wallet as a plain row (one of WALLET_COLUMNS each)."""
    row = await reads.wallet(reader, organization_id)
    if row is None:
        raise NotFound("No wallet for this organization")
    return row


async def ledger_page(
    reader: Reader,
    *,
    organization_id: int,
    ledger_filter: reads.LedgerFilter,
    args: PageArgs,
    default_size: int,
    max_size: int,
) -> Page[Any]:
    query = ledger_filter.query()
    # Unfiltered, the statement is the same object each time: compiled once, not per request.
    reuse = query is reads.TRANSACTIONS_OF_ORGANIZATION

    async def fetch(statement: Select[Any], params: Mapping[str, Any]) -> list[Any]:
        return await reader.fetch(statement, params, reuse=reuse)

    return await paginate(
        fetch,
        query,
        reads.LEDGER.c.id,
        args,
        default_size=default_size,
        max_size=max_size,
        params={"organization_id": organization_id},
        reuse=reuse,
    )


async def page_of(
    info: Info,
    query: Select[Any],
    id_column: Any,
    args: PageArgs,
    *,
    params: Mapping[str, Any] | None = None,
) -> Page[Any]:
    """A keyset page of ORM rows, read in the session this request's sibling fields share."""
    settings = info.context.billing.settings

    async def read(session: AsyncSession) -> Page[Any]:
        return await paginate(
            session_fetch(session),
            query,
            id_column,
            args,
            default_size=settings.default_page_size,
            max_size=settings.max_page_size,
            params=params,
        )

    return await info.context.loaders.read(read)
