"""Keyset pagination, newest first: `WHERE id < :after ORDER BY id DESC LIMIT :n`, never OFFSET."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from graphql import GraphQLError
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from ..reads import Fetch, Keyset, keyset
from .common import PageInfo
from .ids import from_cursor, to_cursor

RowT = TypeVar("RowT")


@dataclass(frozen=True)
class PageArgs:
    first: int | None
    after: str | None
    last: int | None
    before: str | None


@dataclass(frozen=True)
class Page(Generic[RowT]):
    rows: list[RowT]
    # One per row, in order: the edges' cursors.
    cursors: list[str]
    page_info: PageInfo


EdgeT = TypeVar("EdgeT")


def edges_of(
    page: Page[Any], edge: Callable[..., EdgeT], node: Callable[[Any], object]
) -> list[EdgeT]:
    """The connection's edges: each row as its node, with its cursor."""
    return [
        edge(cursor=cursor, node=node(row))
        for row, cursor in zip(page.rows, page.cursors, strict=True)
    ]


def _bad(detail: str, argument: str) -> GraphQLError:
    return GraphQLError(detail, extensions={"code": "BAD_USER_INPUT", "field": argument})


def _size(value: int | None, argument: str, maximum: int) -> int | None:
    if value is None:
        return None
    if value < 0 or value > maximum:
        raise _bad(f"`{argument}` must be between 0 and {maximum}", argument)
    return value


def _cursor(value: str | None, argument: str) -> int | None:
    if value is None:
        return None
    pk = from_cursor(value)
    if pk is None:
        raise _bad(f"`{argument}` is not a cursor of this connection", argument)
    return pk


async def paginate(
    fetch: Fetch,
    query: Select[Any],
    id_column: Any,
    args: PageArgs,
    *,
    default_size: int,
    max_size: int,
    params: Mapping[str, Any] | None = None,
    reuse: bool = False,
) -> Page[Any]:
    """One page of `query`'s rows, read by `fetch` (a session's, or the driver's: see
    `session_fetch` and reads.py). `params` binds the query's own parameters; `reuse` says
    the query object lives as long as the process."""
    first = _size(args.first, "first", max_size)
    last = _size(args.last, "last", max_size)
    after = _cursor(args.after, "after")
    before = _cursor(args.before, "before")
    if first is not None and last is not None:
        raise _bad("Give `first` or `last`, not both", "last")
    if last is not None:
        # The page just newer than `before` (or the oldest page): read upwards.
        keys = Keyset(last, after_id=after, before_id=before, upwards=True)
    else:
        keys = Keyset(default_size if first is None else first, after_id=after, before_id=before)
    found = await keyset(fetch, query, id_column, keys, params or {}, reuse=reuse)
    rows = found.rows
    if last is not None:
        has_next, has_previous = before is not None, found.has_more
    else:
        has_next, has_previous = found.has_more, after is not None
    cursors = [to_cursor(row.id) for row in rows]
    info = PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=cursors[0] if cursors else None,
        end_cursor=cursors[-1] if cursors else None,
    )
    return Page(rows=rows, cursors=cursors, page_info=info)


def session_fetch(session: AsyncSession, *, entities: bool = True) -> Fetch:
    """A `fetch` over a session: ORM objects, or (`entities=False`) plain rows."""

    async def fetch(query: Select[Any], params: Mapping[str, Any]) -> list[Any]:
        result = await session.execute(query, dict(params))
        return list(result.scalars().all() if entities else result.all())

    return fetch
