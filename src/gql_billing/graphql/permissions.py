"""Scope checks on fields: a missing scope is a FORBIDDEN error on that field only."""

from __future__ import annotations

from functools import cache
from typing import Any

from strawberry.permission import BasePermission

from ..auth import Scope


@cache
def needs(scope: Scope) -> type[BasePermission]:
    """The permission class for one scope (one class per scope, built once)."""

    def has_permission(self: BasePermission, source: Any, info: Any, **kwargs: Any) -> bool:
        return bool(info.context.principal.has(scope))

    name = "Needs" + "".join(part.title() for part in scope.value.replace(":", "_").split("_"))
    return type(
        name,
        (BasePermission,),
        {
            "message": f"Forbidden: this token lacks the {scope.value} scope",
            "error_extensions": {"code": "FORBIDDEN", "scope": scope.value},
            "has_permission": has_permission,
        },
    )


# What an organization's own tokens see of its money beyond balances: saved cards, top-ups
# and auto top-up, client secrets. A service token (billing:spend) reaches a wallet only
# through a spend result and sees none of it.
CUSTOMER_DATA_SCOPES = (Scope.BILLING_READ, Scope.BILLING_WRITE)


def sees_customer_data(principal: Any) -> bool:
    return any(principal.has(scope) for scope in CUSTOMER_DATA_SCOPES)


def _has_customer_scope(self: BasePermission, source: Any, info: Any, **kwargs: Any) -> bool:
    return sees_customer_data(info.context.principal)


# Cards, top-ups and secrets need billing:read or billing:write (an organization token).
NeedsCustomerScope: type[BasePermission] = type(
    "NeedsCustomerScope",
    (BasePermission,),
    {
        "message": "Forbidden: cards, top-ups and secrets need billing:read or billing:write",
        "error_extensions": {"code": "FORBIDDEN", "scope": "billing:read"},
        "has_permission": _has_customer_scope,
    },
)
