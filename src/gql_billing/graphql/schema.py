"""The schema, built once per process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import strawberry
from graphql import ASTValidationRule, GraphQLError
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.validation import MaxIntrospectionDepthRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.config import BatchingConfig, StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.types import ExecutionResult as StrawberryExecutionResult

from ..settings import Settings
from .execution import execution_for
from .hooks import CachedHooksRunner
from .instrumentation import observability, record_root_outcomes
from .limits import PreparedDocuments, QueryLimits, limits_rule
from .live_api import Subscription
from .mutations import Mutation
from .problems import (
    AuthenticationRequired,
    BillingNotConfigured,
    CardDeclined,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidInput,
    InvalidState,
    NotFound,
    PaymentMethodRequired,
    PaymentProviderUnavailable,
)
from .queries import Query
from .scalars import CREDITS_SCALAR, Credits
from .spend_api import SpendMutation, SpendQuery
from .spend_types import Approval, Invoice, Reservation
from .statements_api import StatementsQuery
from .types import Organization, PaymentMethod, TopupAttempt, Transaction, Wallet
from .webhook_api import WebhookMutation, WebhookQuery

MASKED_MESSAGE = "Internal server error"


def _should_mask(error: GraphQLError) -> bool:
    """Mask genuine faults; keep the errors we raise on purpose (codes, validation)."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    # Input coercion (a bad Credits value, say) is the client's fault and safe to show.
    return not isinstance(original, ValueError | TypeError) or error.path is not None


class MaskFaults(MaskErrors):
    """Genuine server faults reach the client as one generic message, never a trace."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_should_mask, error_message=MASKED_MESSAGE)

    def on_operation(self) -> Iterator[None]:
        """MaskErrors' hook, with its check for a result that carries errors done by the
        result's own class: MaskErrors asks through a runtime-checkable Protocol, whose
        `isinstance` walks the protocol's attributes on every request, errors or not."""
        self._stream_result_processed = False
        yield
        if self._stream_result_processed:
            return
        result = self.execution_context.result
        if isinstance(result, GraphQLExecutionResult | StrawberryExecutionResult):
            if result.errors:
                result.errors = self._process_errors(result.errors)
        elif initial_result := getattr(result, "initial_result", None):
            self._process_result(initial_result)


@dataclass(frozen=True)
class SchemaPolicy:
    """What a deployment allows; the defaults are development's."""

    limits: QueryLimits = field(default_factory=QueryLimits)
    introspection: bool = True
    # "Did you mean ...?" in validation errors maps the schema for whoever cannot introspect.
    suggestions: bool = True
    # 0 turns batched (array) requests off: Strawberry answers them with HTTP 400.
    max_batch_operations: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> SchemaPolicy:
        limits = QueryLimits(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_query_aliases,
            max_tokens=settings.max_query_tokens,
            max_cost=settings.max_query_cost,
            max_page_size=settings.max_page_size,
            default_page_size=settings.default_page_size,
        )
        return cls(
            limits=limits,
            introspection=settings.introspection_enabled,
            suggestions=not settings.production,
            max_batch_operations=settings.max_batch_operations,
        )

    def validation_rules(self) -> tuple[type[ASTValidationRule], ...]:
        rules: list[type[ASTValidationRule]] = [limits_rule(self.limits), MaxIntrospectionDepthRule]
        if not self.introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        return tuple(rules)


class BillingSchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        """The same hooks in the same order, looked up once per extension class."""
        return CachedHooksRunner(execution_context=execution_context, extensions=extensions)

    @staticmethod
    def remove_field_suggestion(error: GraphQLError) -> None:
        """Strawberry trims only "Cannot query field" messages; unknown arguments, types, enum
        values and input fields suggest names too."""
        error.message = error.message.split(" Did you mean", 1)[0]

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log faults only: a client's bad query or missing scope is not the server's error."""
        faults = [e for e in errors if is_fault(e)]
        super().process_errors(faults, execution_context)


def is_fault(error: GraphQLError) -> bool:
    """The server's fault (logged, masked), not the client's."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError) and _should_mask(error)


def build_schema(
    extensions: Sequence[type[SchemaExtension]] = (), *, policy: SchemaPolicy | None = None
) -> BillingSchema:
    policy = policy or SchemaPolicy()
    batching = (
        BatchingConfig(max_operations=policy.max_batch_operations)
        if policy.max_batch_operations > 0
        else None
    )
    # Built here, once: the same rule classes on every request keep the validation cache hitting.
    documents: Callable[[], SchemaExtension] = PreparedDocuments.factory(
        rules=policy.validation_rules(), max_tokens=policy.limits.max_tokens
    )
    query = merge_types("Query", (Query, SpendQuery, StatementsQuery, WebhookQuery))
    mutation = merge_types("Mutation", (Mutation, SpendMutation, WebhookMutation))
    record_root_outcomes(query, mutation)
    schema = BillingSchema(
        query=query,
        mutation=mutation,
        subscription=Subscription,
        types=[
            Reservation,
            Approval,
            Invoice,
            Organization,
            Wallet,
            Transaction,
            PaymentMethod,
            TopupAttempt,
            AuthenticationRequired,
            PaymentMethodRequired,
            CardDeclined,
            InsufficientCredits,
            InvalidInput,
            IdempotencyConflict,
            NotFound,
            InvalidState,
            PaymentProviderUnavailable,
            BillingNotConfigured,
        ],
        config=StrawberryConfig(
            scalar_map={Credits: CREDITS_SCALAR},
            disable_field_suggestions=not policy.suggestions,
            batching_config=batching,
        ),
        # Observability right after masking: its timing covers parsing, limits and execution.
        extensions=[MaskFaults, *observability(), documents, *extensions],
    )
    schema.execution_context_class = execution_for(
        schema._schema, default_resolver=schema.config.default_resolver
    )
    return schema
