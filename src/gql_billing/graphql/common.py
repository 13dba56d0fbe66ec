"""Building blocks every GraphQL type module uses: Node, Money, PageInfo."""

from __future__ import annotations

import re
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.utils.str_converters import to_camel_case

from .. import errors
from ..money import Money as MoneyValue
from .context import Info


@strawberry.interface(description="An object with a global id, refetchable through `node`.")
class Node:
    id: strawberry.ID


# A snake_case name, and a quoted value echoed back (left as the client sent it).
_SNAKE_NAME = re.compile(r"'[^']*'|\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


def schema_spelling(text: str) -> str:
    """Services name fields in snake_case (`aud_cents`); GraphQL clients know `audCents`."""
    return _SNAKE_NAME.sub(lambda m: m[0] if m[0].startswith("'") else to_camel_case(m[0]), text)


def user_error(exc: errors.InvalidInput) -> GraphQLError:
    """An invalid argument on a query field (no union to carry it): a typed GraphQL error."""
    field = exc.field and schema_spelling(exc.field)
    return GraphQLError(
        schema_spelling(exc.detail), extensions={"code": "BAD_USER_INPUT", "field": field}
    )


@strawberry.type(description="An amount of money; `amount` is a decimal string in major units.")
class Money:
    value: strawberry.Private[MoneyValue]

    @strawberry.field
    def amount(self) -> str:
        return self.value.amount_text

    @strawberry.field
    def currency(self) -> str:
        return self.value.currency

    @strawberry.field
    def is_estimate(self) -> bool:
        return self.value.is_estimate

    @strawberry.field
    def rate_as_of(self) -> datetime | None:
        return self.value.rate_as_of

    @strawberry.field(description='CLDR formatting for the locale (default en-AU), e.g. "$735.00".')
    def formatted(self, locale: str | None = None) -> str:
        try:
            return self.value.formatted(locale)
        except errors.InvalidInput as exc:
            raise user_error(exc) from exc


def money(info: Info, amount_credits: int, currency: str | None) -> Money:
    try:
        return Money(value=info.context.billing.rates.credits_to_money(amount_credits, currency))
    except errors.InvalidInput as exc:
        raise user_error(exc) from exc


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None
