"""Keyset pagination, newest first: `WHERE id < :after ORDER BY id DESC LIMIT :n`, never OFFSET."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from graphql import GraphQLError
from sqlalchemy import Select, bindparam
from sqlalchemy.ext.asyncio import AsyncSession

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


# Page statements of long-lived base queries, by (base, id column, after?, before?, upwards?).
# The base is kept in the value, so its id cannot be reused while the entry exists.
_STATEMENTS: dict[tuple[int, int, bool, bool, bool], tuple[Select[Any], Select[Any]]] = {}


def page_statement(
    query: Select[Any], id_column: Any, *, after: bool, before: bool, upwards: bool, reuse: bool
) -> Select[Any]:
    """`query` with the keyset conditions and the order, the cursors and the limit as bound
    parameters (`after_id`, `before_id`, `page_limit`). With `reuse` (a base query that lives
    as long as the process), built once per shape: SQLAlchemy then finds its compiled form
    by a cache key it computed once, instead of walking a fresh statement per request."""
    key = (id(query), id(id_column), after, before, upwards)
    if reuse and key in _STATEMENTS:
        return _STATEMENTS[key][1]
    statement = query
    if after:
        statement = statement.where(id_column < bindparam("after_id"))
    if before:
        statement = statement.where(id_column > bindparam("before_id"))
    order = id_column.asc() if upwards else id_column.desc()
    statement = statement.order_by(order).limit(bindparam("page_limit"))
    if reuse:
        _STATEMENTS[key] = (query, statement)
    return statement


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    id_column: Any,
    args: PageArgs,
    *,
    default_size: int,
    max_size: int,
    entities: bool = True,
    params: Mapping[str, Any] | None = None,
    reuse: bool = False,
) -> Page[Any]:
    """One page of `query`'s rows: ORM objects, or (`entities=False`, a select of columns)
    plain rows, which skip the ORM's per-object bookkeeping on hot reads. `params` binds the
    query's own parameters; `reuse` says the query object lives as long as the process."""
    first = _size(args.first, "first", max_size)
    last = _size(args.last, "last", max_size)
    after = _cursor(args.after, "after")
    before = _cursor(args.before, "before")
    if first is not None and last is not None:
        raise _bad("Give `first` or `last`, not both", "last")
    bound = dict(params or {})
    if after is not None:
        bound["after_id"] = after
    if before is not None:
        bound["before_id"] = before
    statement = partial(
        page_statement,
        query,
        id_column,
        after=after is not None,
        before=before is not None,
        reuse=reuse,
    )
    if last is not None:
        # The page just newer than `before` (or the oldest page): read upwards, then flip.
        bound["page_limit"] = last + 1
        rows = await _fetch(session, statement(upwards=True), bound, entities)
        has_more = len(rows) > last
        rows = rows[:last][::-1]
        has_next, has_previous = before is not None, has_more
    else:
        size = default_size if first is None else first
        bound["page_limit"] = size + 1
        rows = await _fetch(session, statement(upwards=False), bound, entities)
        has_more = len(rows) > size
        rows = rows[:size]
        has_next, has_previous = has_more, after is not None
    cursors = [to_cursor(row.id) for row in rows]
    info = PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=cursors[0] if cursors else None,
        end_cursor=cursors[-1] if cursors else None,
    )
    return Page(rows=rows, cursors=cursors, page_info=info)


async def _fetch(
    session: AsyncSession, query: Select[Any], params: dict[str, Any], entities: bool
) -> list[Any]:
    result = await session.execute(query, params)
    return list(result.scalars().all() if entities else result.all())
