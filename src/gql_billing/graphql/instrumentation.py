"""Observability of GraphQL: metrics and log context per operation, OpenTelemetry if present.

`Instrumentation` is passed to the schema as a class: Strawberry builds one per request, so
the outcomes gathered on `self` belong to that request alone. Only root fields are looked
at (one attribute check for every other field), so the cost stays flat however big the
response is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import structlog
from graphql import (
    GraphQLError,
    GraphQLNonNull,
    GraphQLResolveInfo,
    GraphQLUnionType,
    OperationType,
)
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.base import get_object_definition
from strawberry.utils.await_maybe import AwaitableOrValue

from ..logs import scrub
from .context import Context

if TYPE_CHECKING:
    ResolveInfo = GraphQLResolveInfo[Any]  # generic only in graphql-core's stubs
else:
    ResolveInfo = GraphQLResolveInfo
MAX_LOGGED_NAME = 100
# Error codes worth their own outcome label; anything else is "error" (bounded labels).
CODED_OUTCOMES = frozenset({"FORBIDDEN", "UNAUTHENTICATED"})


class Instrumentation(SchemaExtension):
    def __init__(self, *, execution_context: ExecutionContext | None = None) -> None:
        self._outcomes: list[tuple[str, str]] = []
        if execution_context is not None:
            self.execution_context = execution_context

    def on_operation(self) -> Iterator[None]:
        context: Context = self.execution_context.context
        if context.principal.organization_id is not None:
            structlog.contextvars.bind_contextvars(
                organization_id=context.principal.organization_id
            )
        started = time.perf_counter()
        failure: str | None = None
        try:
            yield
        except GraphQLError:
            # Strawberry raises a syntax error through this hook rather than returning it.
            failure = "invalid"
            raise
        except Exception:
            failure = "error"
            raise
        finally:
            self._finish(context, time.perf_counter() - started, failure)

    def _finish(self, context: Context, seconds: float, failure: str | None) -> None:
        operation_type = _operation_type(self.execution_context)
        outcomes = self._outcomes or [("unknown", failure or self._empty_outcome())]
        context.billing.metrics.graphql_operation(operation_type, outcomes, seconds)
        structlog.contextvars.bind_contextvars(
            operation=_logged_name(self.execution_context),
            operation_type=operation_type,
            fields=",".join(field for field, _ in outcomes),
            outcome=",".join(outcome for _, outcome in outcomes),
        )

    def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: ResolveInfo,
        *args: str,
        **kwargs: Any,
    ) -> AwaitableOrValue[object]:
        if info.path.prev is not None:
            value: object = _next(root, info, *args, **kwargs)
            return value
        if info.operation.operation is OperationType.SUBSCRIPTION:
            # Each event resolves the root field again, for as long as the client listens:
            # count the subscription once, and keep this request's state from growing.
            if not self._outcomes:
                self._outcomes.append((info.field_name, "subscribed"))
            event: object = _next(root, info, *args, **kwargs)
            return event
        try:
            result: object = _next(root, info, *args, **kwargs)
        except Exception as exc:
            self._outcomes.append((info.field_name, _error_outcome(exc)))
            raise
        if isawaitable(result):
            return self._settled(info, result)
        self._outcomes.append((info.field_name, _outcome(info, result)))
        return result

    async def _settled(self, info: ResolveInfo, pending: Any) -> object:
        try:
            result = await pending
        except Exception as exc:
            self._outcomes.append((info.field_name, _error_outcome(exc)))
            raise
        self._outcomes.append((info.field_name, _outcome(info, result)))
        return result

    def _empty_outcome(self) -> str:
        """No root field ran: the document was rejected (parse, validation, limits)."""
        return "invalid" if self.execution_context.pre_execution_errors else "ok"


def _outcome(info: ResolveInfo, result: object) -> str:
    """A union field's member (`TopupSuccess`, `CardDeclined`, ...); "ok" for other fields."""
    return_type = info.return_type
    if isinstance(return_type, GraphQLNonNull):
        return_type = return_type.of_type
    if isinstance(return_type, GraphQLUnionType):
        definition = get_object_definition(result)
        if definition is not None:
            return definition.name
    return "ok"


def _error_outcome(exc: Exception) -> str:
    extensions = getattr(exc, "extensions", None)
    code = extensions.get("code") if isinstance(extensions, dict) else None
    return str(code).lower() if code in CODED_OUTCOMES else "error"


def _operation_type(execution_context: ExecutionContext) -> str:
    try:
        return execution_context.operation_type.value
    except Exception:
        # No parsable document, or no operation of the requested name.
        return "unknown"


def _logged_name(execution_context: ExecutionContext) -> str | None:
    """The client's operation name, as a client chose it: shortened before logging."""
    try:
        name = execution_context.operation_name
    except Exception:
        return None
    return name[:MAX_LOGGED_NAME] if name else None


def tracing_extensions() -> list[type[SchemaExtension]]:
    """Strawberry's OpenTelemetry extension when the `otel` extra is installed, else none."""
    try:
        from strawberry.extensions.tracing.opentelemetry import OpenTelemetryExtension
    except ImportError:
        return []

    class Tracing(OpenTelemetryExtension):
        """Spans per operation and resolver; resolver arguments scrubbed like log lines."""

        def __init__(self, *, execution_context: ExecutionContext | None = None) -> None:
            super().__init__(execution_context=execution_context, arg_filter=_scrub_args)

    return [Tracing]


def _scrub_args(kwargs: dict[str, Any], _info: ResolveInfo) -> dict[str, Any]:
    scrubbed: dict[str, Any] = scrub(kwargs)
    return scrubbed


def observability() -> list[type[SchemaExtension]]:
    """The schema's observability: metrics and log context, and tracing when installed."""
    return [Instrumentation, *tracing_extensions()]
