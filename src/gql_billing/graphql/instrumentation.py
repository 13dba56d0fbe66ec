"""Observability of GraphQL: metrics and log context per operation, OpenTelemetry if present.

`Instrumentation` is passed to the schema as a class: Strawberry builds one per request, so
the outcomes gathered on `self` belong to that request alone. Only root fields are looked
at, through a field extension on each root field, so the cost stays flat however big the
response is.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import structlog
from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLNonNull,
    GraphQLResolveInfo,
    GraphQLUnionType,
    OperationDefinitionNode,
    OperationType,
)
from strawberry.extensions import FieldExtension, SchemaExtension
from strawberry.types import ExecutionContext, Info
from strawberry.types.base import get_object_definition

from ..logs import scrub
from .context import Context

if TYPE_CHECKING:
    ResolveInfo = GraphQLResolveInfo[Any]  # generic only in graphql-core's stubs
else:
    ResolveInfo = GraphQLResolveInfo
MAX_LOGGED_NAME = 100
# Error codes worth their own outcome label; anything else is "error" (bounded labels).
CODED_OUTCOMES = frozenset({"FORBIDDEN", "UNAUTHENTICATED"})


# The outcomes of the root fields of the operation running in this task (set by
# Instrumentation.on_operation, appended to by RecordOutcome): a per-field middleware would
# do the same but cost a call on every field of every response.
_ROOT_OUTCOMES: ContextVar[list[tuple[str, str]] | None] = ContextVar("root_outcomes", default=None)


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
        _ROOT_OUTCOMES.set(self._outcomes)
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
            _ROOT_OUTCOMES.set(None)
            self._finish(context, time.perf_counter() - started, failure)

    def _finish(self, context: Context, seconds: float, failure: str | None) -> None:
        operation_type = _operation_type(self.execution_context)
        outcomes = self._outcomes or self._without_root_outcome(operation_type, failure)
        context.billing.metrics.graphql_operation(operation_type, outcomes, seconds)
        structlog.contextvars.bind_contextvars(
            operation=_logged_name(self.execution_context),
            operation_type=operation_type,
            fields=",".join(field for field, _ in outcomes),
            outcome=",".join(outcome for _, outcome in outcomes),
        )

    def _without_root_outcome(
        self, operation_type: str, failure: str | None
    ) -> list[tuple[str, str]]:
        """A subscription (its root field is not resolved like a query's), or no root field
        ran: the document was rejected (parse, validation, limits)."""
        if failure is None and not self.execution_context.pre_execution_errors:
            if operation_type == OperationType.SUBSCRIPTION.value:
                return [(_root_field_name(self.execution_context) or "unknown", "subscribed")]
            return [("unknown", "ok")]
        return [("unknown", failure or "invalid")]


class RecordOutcome(FieldExtension):
    """On root query and mutation fields: the field's outcome for Instrumentation."""

    def resolve(self, next_: Callable[..., Any], source: Any, info: Info, **kwargs: Any) -> Any:
        outcomes = _ROOT_OUTCOMES.get()
        if outcomes is None:
            return next_(source, info, **kwargs)
        try:
            result = next_(source, info, **kwargs)
        except Exception as exc:
            outcomes.append((info.field_name, _error_outcome(exc)))
            raise
        outcomes.append((info.field_name, _outcome(info._raw_info, result)))
        return result

    async def resolve_async(
        self, next_: Callable[..., Awaitable[Any]], source: Any, info: Info, **kwargs: Any
    ) -> Any:
        outcomes = _ROOT_OUTCOMES.get()
        if outcomes is None:
            return await next_(source, info, **kwargs)
        try:
            result = await next_(source, info, **kwargs)
        except Exception as exc:
            outcomes.append((info.field_name, _error_outcome(exc)))
            raise
        outcomes.append((info.field_name, _outcome(info._raw_info, result)))
        return result


def record_root_outcomes(*root_types: type) -> None:
    """Add RecordOutcome to every field of these root types (queries and mutations; a
    subscription's outcome is its operation's), outermost (Strawberry runs
    the last extension first), so a permission refusal is counted too. Idempotent: root
    fields are shared by every schema built in the process."""
    for root_type in root_types:
        definition = get_object_definition(root_type, strict=True)
        for field in definition.fields:
            if not any(isinstance(extension, RecordOutcome) for extension in field.extensions):
                field.extensions.append(RecordOutcome())


def _root_field_name(execution_context: ExecutionContext) -> str | None:
    document = execution_context.graphql_document
    if document is None:
        return None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            wanted = execution_context.operation_name
            if wanted is None or (definition.name and definition.name.value == wanted):
                for selection in definition.selection_set.selections:
                    if isinstance(selection, FieldNode):
                        return selection.name.value
    return None


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
