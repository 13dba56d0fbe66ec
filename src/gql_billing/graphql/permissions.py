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
