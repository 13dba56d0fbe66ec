"""The Credits scalar: an integer that JSON clients can hold exactly (|v| <= 2^53 - 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NewType

import strawberry

MAX_SAFE_INTEGER = 2**53 - 1


def _parse_credits(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("Credits must be an integer")
    if abs(value) > MAX_SAFE_INTEGER:
        raise ValueError("Credits must be within ±(2^53 - 1)")
    return value


if TYPE_CHECKING:
    # For the type checker a Credits value is a plain int; at run time the NewType is the
    # key that maps it to the GraphQL scalar.
    Credits = int
else:
    Credits = NewType("Credits", int)

CREDITS_SCALAR = strawberry.scalar(
    name="Credits",
    description=(
        "An integer number of credits (one credit is one AUD cent), serialised as a JSON "
        "number. Fractions, strings and values beyond 2^53-1 are rejected."
    ),
    serialize=int,
    parse_value=_parse_credits,
)
