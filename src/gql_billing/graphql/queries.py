"""Root query fields: nullable, each guarded by its scope, scoped to the caller's organization."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from functools import partial
from typing import Any

import strawberry
from sqlalchemy import Row, Select, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from .. import models
from ..auth import Scope as AuthScope
from ..errors import NotFound
from .common import Money, Node, money
from .context import Info
from .ids import from_global_id
from .pagination import Page, PageArgs, edges_of, paginate
from .permissions import needs
from .scalars import Credits
from .spend_types import Approval, Invoice, Reservation
from .types import (
    TRANSACTION_COLUMNS,
    WALLET_COLUMNS,
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

# The hot reads, built once with bound parameters (Core columns: no ORM steps per row).
LEDGER: Table = models.LedgerEntry.__table__  # type: ignore[attr-defined]
WALLETS: Table = models.Wallet.__table__  # type: ignore[attr-defined]
TRANSACTIONS_OF_ORGANIZATION = select(*TRANSACTION_COLUMNS).where(
    LEDGER.c.organization_id == bindparam("organization_id")
)
WALLET_OF_ORGANIZATION = select(*WALLET_COLUMNS).where(
    WALLETS.c.organization_id == bindparam("organization_id")
)


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
        return Wallet.from_row(await info.context.loaders.read(read))

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
        entries = LEDGER.c
        query = TRANSACTIONS_OF_ORGANIZATION
        if filter is not None:
            if filter.kinds:
                query = query.where(entries.kind.in_([str(k) for k in filter.kinds]))
            if filter.created_after is not None:
                query = query.where(entries.created_at > filter.created_after.astimezone(UTC))
            if filter.created_before is not None:
                query = query.where(entries.created_at < filter.created_before.astimezone(UTC))
            if filter.reference is not None:
                query = query.where(entries.reference == filter.reference)
        args = PageArgs(first, after, last, before)
        page = await page_of(
            info,
            query,
            entries.id,
            args,
            entities=False,
            params={"organization_id": info.context.organization_id},
            # Unfiltered, the statement is the same object each time: its page statements
            # are built and keyed for SQLAlchemy's compiled cache once, not per request.
            reuse=query is TRANSACTIONS_OF_ORGANIZATION,
        )
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


async def wallet_row(session: AsyncSession, organization_id: int) -> Row[Any]:
    """The organization's wallet as a plain row (one of WALLET_COLUMNS each)."""
    params = {"organization_id": organization_id}
    row = (await session.execute(WALLET_OF_ORGANIZATION, params)).one_or_none()
    if row is None:
        raise NotFound("No wallet for this organization")
    return row


async def page_of(
    info: Info,
    query: Select[Any],
    id_column: Any,
    args: PageArgs,
    *,
    entities: bool = True,
    params: Mapping[str, Any] | None = None,
    reuse: bool = False,
) -> Page[Any]:
    """A keyset page, read in the session this request's sibling fields share."""
    settings = info.context.billing.settings
    read = partial(
        paginate,
        query=query,
        id_column=id_column,
        args=args,
        default_size=settings.default_page_size,
        max_size=settings.max_page_size,
        entities=entities,
        params=params or {},
        reuse=reuse,
    )
    return await info.context.loaders.read(read)
